"""The objectives package: golden values, gradients, orientation, loading, errors, and agreement with the engine."""

import copy
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import qrcode
import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers import models as tk_models
from torch.func import jvp
from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

from dpg import objectives
from dpg.config.names import OBJECTIVES
from conftest import random_examples, tiny_gpt2
from dpg.objectives.text import encode

REPO = Path(__file__).resolve().parents[1]
# The paper's QR bitmap, shipped with the paper configs (a byte-identical copy of shared/reference's): the tests
# must not depend on files outside the repository.
REFERENCE_QR = Path(__file__).resolve().parents[1] / "configs/paper/qr_code_21x21.npy"
CHARS = " abcdefghijklmnopqrstuvwxyz0123456789-."
SIXSEVEN = [[1, 1, 1, 1, -1, -1, -1],  # typed from the reference README, −1 = dark
            [-1, -1, -1, 1, 1, 1, -1],
            [-1, 1, 1, 1, 1, 1, -1],
            [-1, -1, -1, 1, 1, 1, -1],
            [-1, 1, -1, 1, 1, 1, -1],
            [-1, -1, -1, 1, 1, 1, 1]]


def char_tokenizer(bos=None):
    """One token per character: ids 0 <eos>, 1 <unk>, 2 ' ', 3 'a' … ; bos="token" adds a <bos> (id 41) the
    tokenizer does not insert itself, bos="auto" one it prepends to every text."""
    vocab = {"<eos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    if bos:
        vocab["<bos>"] = len(vocab)
    t = Tokenizer(tk_models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    t.decoder = decoders.Fuse()
    if bos == "auto":
        t.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 41)])
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", unk_token="<unk>",
                                   bos_token="<bos>" if bos else None)


def ids(text):
    return [CHARS.index(c) + 2 for c in text]


def params_of(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def reference_loss(model, items):
    """(mean NLL, argmax accuracy) over the given positions, one unpadded sequence at a time, in numpy."""
    nll, hits, n = 0.0, 0, 0
    for seq, positions in items:
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0].numpy()
        m = logits.max(-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
        for t in positions:
            nll -= logp[t - 1, seq[t]]
            hits += int(logits[t - 1].argmax() == seq[t])
            n += 1
    return nll / n, hits / n


def with_weight(model, name, tensor):
    """params = the model's weights, with `name` replaced by `tensor` (the model's own weight stays W₀)."""
    return {**params_of(model), name: tensor}


# ----------------------------------------------------------------------------------------------------------------------
# l2_norm


def test_l2_norm_golden():
    model = tiny_gpt2()  # head [64, 16]
    obj = objectives.get("l2_norm")
    params = with_weight(model, "lm_head.weight", torch.full((64, 16), 0.5, dtype=torch.float64))
    assert obj(model, params).item() == pytest.approx(-16.0, abs=1e-12)  # 0.5 · sqrt(1024)
    assert obj.proxies(model, params) == {"norm": pytest.approx(16.0, abs=1e-12)}
    ln = torch.zeros(16, dtype=torch.float64)
    ln[:2] = torch.tensor([3.0, 4.0])
    obj = objectives.get("l2_norm", weight="transformer.h.0.ln_1.weight", model=model)
    assert obj(model, with_weight(model, "transformer.h.0.ln_1.weight", ln)).item() == pytest.approx(-5.0, abs=1e-12)


def test_l2_norm_default_is_the_head_found_by_identity():
    model = tiny_gpt2()
    params = params_of(model)
    expected = -np.linalg.norm(model.lm_head.weight.detach().numpy())
    assert objectives.get("l2_norm")(model, params).item() == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# weight_pattern


def test_builtin_67_is_the_reference_matrix():
    assert objectives.load_pattern("67").tolist() == SIXSEVEN


def test_weight_pattern_golden_on_the_head():
    model = tiny_gpt2()  # head [vocab 64, hidden 16]
    s = np.array(SIXSEVEN)
    obj = objectives.get("weight_pattern", pattern="67", row=3, col=10)
    w0 = model.lm_head.weight.detach()
    assert obj(model, params_of(model)).item() == pytest.approx(-math.log(2), abs=1e-12)  # Δ = 0
    assert obj.proxies(model, params_of(model))["pixel_accuracy"] == 0.0  # Δ = 0 counts as wrong

    d = torch.zeros(64, 16, dtype=torch.float64)
    d[10:17, 3:9] = torch.tensor(0.05 * s.T)  # hidden dims 3..8 × token ids 10..16; softplus(∓1) per pixel
    d[10, 3] *= -1  # S[0, 0] wrong
    d[12, 5] *= -1  # S[2, 2] wrong
    params = with_weight(model, "lm_head.weight", w0 + d)
    expected = -(40 * math.log(1 + math.exp(-1)) + 2 * math.log(1 + math.e)) / 42
    assert obj(model, params).item() == pytest.approx(expected, abs=1e-12)
    prox = obj.proxies(model, params)
    assert prox["pixel_accuracy"] == pytest.approx(40 / 42, abs=1e-15)
    assert prox["pattern_loss"] == pytest.approx(-expected, abs=1e-12)
    assert obj.resolve(model) == ("lm_head.weight", "hidden_by_vocab")


def test_weight_pattern_golden_on_another_weight_as_stored():
    model = tiny_gpt2()
    name = "transformer.h.0.mlp.c_fc.weight"  # GPT-2 Conv1D: [16, 64]
    s = np.array(SIXSEVEN)
    obj = objectives.get("weight_pattern", weight=name, row=2, col=5, strength=10, model=model)
    assert obj.resolve(model) == (name, "as_stored")
    d = torch.zeros(16, 64, dtype=torch.float64)
    d[2:8, 5:12] = torch.tensor(0.3 * s)
    params = with_weight(model, name, model.get_parameter(name).detach() + d)
    assert obj(model, params).item() == pytest.approx(-math.log(1 + math.exp(-3)), abs=1e-12)
    assert obj.proxies(model, params)["pixel_accuracy"] == 1.0


def test_orientation_against_the_paper_qr():
    """Δ in the paper's [hidden, vocab] layout equals the reference QR → accuracy 1, and only token ids 0..20 ×
    hidden dims 0..20 of lm_head.weight [vocab, hidden] are touched."""
    ref = np.load(REFERENCE_QR)
    assert ref.shape == (21, 21) and not (ref == ref.T).all()  # asymmetric: a transposition would show
    model = tiny_gpt2(n_embd=24, n_head=2)
    obj = objectives.get("weight_pattern", pattern=str(REFERENCE_QR), model=model)
    w0 = model.lm_head.weight.detach()
    delta_paper = np.zeros((24, 64))  # [hidden, vocab]
    delta_paper[:21, :21] = 0.01 * ref
    head = (w0 + torch.tensor(delta_paper.T)).requires_grad_()
    params = with_weight(model, "lm_head.weight", head)
    assert obj.proxies(model, params)["pixel_accuracy"] == 1.0
    phi = obj(model, params)
    assert phi.item() == pytest.approx(-math.log(1 + math.exp(-0.2)), abs=1e-12)
    (g,) = torch.autograd.grad(phi, head)
    assert (g[:21, :21] != 0).all() and (g[21:] == 0).all() and (g[:, 21:] == 0).all()
    assert (torch.sign(g[:21, :21]).numpy() == ref.T).all()  # raising Φ moves lm_head.weight[b, a] toward S[a, b]
    stored = objectives.get("weight_pattern", pattern=str(REFERENCE_QR), layout="as_stored")
    assert stored.proxies(model, params)["pixel_accuracy"] < 0.9


def test_qr_from_text_matches_qrcode():
    s = objectives.qr_pattern("hello world")
    qr = qrcode.QRCode(version=1, error_correction=qrcode.constants.ERROR_CORRECT_M, border=0)
    qr.add_data("hello world")
    qr.make(fit=False)
    assert s.shape == (21, 21)
    assert (s == np.where(np.array(qr.get_matrix()), -1, 1)).all()
    assert (s[0, :7] == -1).all() and (s[1, 1:6] == 1).all()  # finder pattern: dark ring → −1
    pat = objectives.get("weight_pattern", pattern="qr", text="hello", error_correction="H")
    assert (pat.target == objectives.qr_pattern("hello", "H")).all()
    assert not (pat.target == objectives.qr_pattern("hello")).all()  # the level changes the code


def test_qr_default_level_reproduces_the_paper_qr_but_one_ec_module():
    ref = np.load(REFERENCE_QR)
    diff = np.argwhere(objectives.qr_pattern("bit.ly/3Ka4jDS") != ref)
    assert diff.tolist() == [[0, 10]]  # a module of error-correction codeword 17: both decode to the same text


def test_patterns_from_files_and_arrays(tmp_path):
    s = np.array(SIXSEVEN)
    np.save(tmp_path / "p.npy", s.astype(np.float64))
    assert (objectives.load_pattern(str(tmp_path / "p.npy")) == s).all()
    gray = np.array([[0, 127, 128, 255], [255, 200, 60, 0]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "p.png")
    assert objectives.load_pattern(tmp_path / "p.png").tolist() == [[-1, -1, 1, 1], [1, 1, -1, -1]]
    rgb = np.stack([gray] * 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert objectives.load_pattern(str(tmp_path / "rgb.png")).tolist() == [[-1, -1, 1, 1], [1, 1, -1, -1]]
    assert objectives.load_pattern([[1, -1]]).tolist() == [[1, -1]]
    assert objectives.load_pattern(torch.tensor([[1.0], [-1.0]])).tolist() == [[1], [-1]]


@pytest.mark.parametrize("pattern, kwargs, needle", [
    ([[1, 0]], {}, "values must be"),
    ([[1, 2]], {}, "values must be"),
    ([[True, False]], {}, "dtype bool"),
    ([1, -1], {}, "2-D"),
    ([[1, -1], [1]], {}, "rectangular"),
    ("68", {}, "'68'"),
    ("missing.npy", {}, "does not exist"),
    ("67", {"text": "x"}, "text"),
    ("qr", {}, "text"),
    ("qr", {"text": "x" * 40}, "text"),
    ("qr", {"text": "x", "error_correction": "Z"}, "error_correction"),
    ("67", {"strength": 0}, "strength"),
    ("67", {"row": -1}, "row"),
    ("67", {"layout": "vocab_by_hidden"}, "layout"),
])
def test_pattern_errors(pattern, kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        objectives.get("weight_pattern", pattern=pattern, **kwargs)


def test_patch_outside_the_weight_names_row_col_and_shape():
    model = tiny_gpt2()  # head [64, 16]: 16 hidden dims
    with pytest.raises(ValueError, match=r"row=11, col=0.*\(64, 16\)"):
        objectives.get("weight_pattern", row=11, model=model)
    obj = objectives.get("weight_pattern", col=58)  # token ids 58..64: one past the vocabulary, found at first call
    with pytest.raises(ValueError, match=r"row=0, col=58.*\(64, 16\)"):
        obj(model, params_of(model))


def test_missing_weight_is_named():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match=r"'lm_hed.weight'.*did you mean \['lm_head.weight'"):
        objectives.get("weight_pattern", weight="lm_hed.weight", model=model)
    with pytest.raises(ValueError, match="'lm_hed.weight'"):
        objectives.get("l2_norm", weight="lm_hed.weight")(model, params_of(model))
    params = params_of(model)
    del params["lm_head.weight"]
    with pytest.raises(ValueError, match="params: no entry 'lm_head.weight'"):
        objectives.get("l2_norm")(model, params)


def tied_gpt2():
    cfg = GPT2Config(vocab_size=64, n_layer=1, n_embd=16, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0,
                     tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").double().eval()


def test_tied_head_is_refused():
    model = tied_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    with pytest.raises(ValueError, match="untie_lm_head: true"):
        objectives.get("weight_pattern", model=model)
    obj = objectives.get("weight_pattern")  # no model at construction: the check runs at the first call
    with pytest.raises(ValueError, match="untie_lm_head: true"):
        obj(model, params_of(model))
    for name in ("transformer.wte.weight", "lm_head.weight"):  # the tied head is listed once, as the embedding
        with pytest.raises(ValueError, match="untie_lm_head: true"):
            objectives.get("weight_pattern", weight=name, model=model)
    norm = objectives.get("l2_norm", weight="lm_head.weight")(model, params_of(model)).item()
    assert norm == pytest.approx(-model.transformer.wte.weight.norm().item(), rel=1e-12)
    untied = tiny_gpt2()  # an untied input embedding may be chosen explicitly: the user asked for it
    assert objectives.get("weight_pattern", weight="transformer.wte.weight", model=untied).resolve(untied) == (
        "transformer.wte.weight", "as_stored")


def test_save_pattern_png(tmp_path):
    model = tiny_gpt2()
    obj = objectives.get("weight_pattern")
    params = with_weight(model, "lm_head.weight", model.lm_head.weight.detach() + 0.01)
    out = objectives.save_pattern_png(obj, model, params, tmp_path / "figs" / "step_1.png", title="step 1")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > img.size[1] > 100
    objectives.save_pattern_png(obj, model, params, out)  # overwriting works
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["step_1.png"]  # no temp file left behind
    maps = obj.maps(model, params)
    assert (maps["target"] == np.array(SIXSEVEN)).all() and (maps["decoded"] == 1).all()
    assert np.allclose(maps["loss"], np.log1p(np.exp(-20 * 0.01 * np.array(SIXSEVEN))))
    with pytest.raises(ValueError, match="weight_pattern"):
        objectives.save_pattern_png(objectives.get("l2_norm"), model, params, tmp_path / "x.png")


# ----------------------------------------------------------------------------------------------------------------------
# text_loss and target_string


def test_text_loss_full_mode_golden():
    model = tiny_gpt2()
    texts = ["ab cd", "hello there", "xyz"]
    obj = objectives.get("text_loss", texts=texts, tokenizer=char_tokenizer(), batch_size=2)  # pads batch 1
    loss, acc = reference_loss(model, [(ids(t), range(1, len(t))) for t in texts])
    assert obj(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)
    assert obj.proxies(model, params_of(model)) == {"loss": pytest.approx(loss, rel=1e-12), "token_accuracy": acc}


def test_text_loss_zero_head_scores_log_vocab():
    model = tiny_gpt2()
    params = with_weight(model, "lm_head.weight", torch.zeros(64, 16, dtype=torch.float64))
    obj = objectives.get("text_loss", texts=["the cat sat", "a dog"], mode="last_word", tokenizer=char_tokenizer())
    assert obj(model, params).item() == pytest.approx(-math.log(64), abs=1e-12)  # uniform logits
    assert obj.proxies(model, params)["token_accuracy"] == 0.0  # argmax of ties is id 0, never a target here


def test_text_loss_last_word_and_pairs_score_only_the_completion():
    model = tiny_gpt2()
    tok = char_tokenizer()
    obj = objectives.get("text_loss", texts=["the cat sat", "one  two three "], mode="last_word", tokenizer=tok)
    # "the cat| sat" scores positions 7..10; "one  two| three" (trailing space dropped) scores 8..13
    loss, _ = reference_loss(model, [(ids("the cat sat"), range(7, 11)), (ids("one  two three"), range(8, 14))])
    assert obj(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)

    pairs = [("ab", "c d"), ("", "xy")]  # empty prompt: scored after EOS (id 0), as this tokenizer has no BOS
    obj = objectives.get("text_loss", texts=pairs, tokenizer=tok)
    assert obj.mode == "completion"
    loss, _ = reference_loss(model, [(ids("abc d"), range(2, 5)), ([0] + ids("xy"), range(1, 3))])
    assert obj(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)


def test_empty_prompt_uses_bos_then_eos_and_never_doubles_bos():
    assert encode(char_tokenizer(), "", "ab", None, "t") == ([0, 3, 4], [False, True, True])
    assert encode(char_tokenizer(bos="token"), "", "ab", None, "t") == ([41, 3, 4], [False, True, True])
    assert encode(char_tokenizer(bos="auto"), "", "ab", None, "t") == ([41, 3, 4], [False, True, True])
    assert encode(char_tokenizer(bos="auto"), "a", "b", None, "t") == ([41, 3, 4], [False, False, True])


def test_completion_tokens_follow_the_joint_tokenisation():
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the cat sat on the mat"] * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    seq, scored = encode(tok, "the cat", " sat", None, "t")
    assert tok.decode([t for t, s in zip(seq, scored) if s]) == " sat"
    assert seq == tok("the cat sat")["input_ids"]  # the tokens of running text, not of two separate strings


def test_max_length_truncation():
    tok = char_tokenizer()
    model = tiny_gpt2()
    full = objectives.get("text_loss", texts=["abcdefgh"], tokenizer=tok, max_length=4)
    loss, _ = reference_loss(model, [(ids("abcd"), range(1, 4))])  # keeps the beginning
    assert full(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)
    last = objectives.get("text_loss", texts=["abcdef gh"], mode="last_word", tokenizer=tok, max_length=5)
    loss, _ = reference_loss(model, [(ids("ef gh"), range(2, 5))])  # drops the oldest context
    assert last(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)
    with pytest.raises(ValueError, match="max_length=3 leaves no context"):
        objectives.get("text_loss", texts=["abcdef gh"], mode="last_word", tokenizer=tok, max_length=3)


def test_texts_from_files_and_datasets(tmp_path):
    import datasets
    tok = char_tokenizer()
    model = tiny_gpt2()
    params = params_of(model)
    texts = ["ab cd", "hello there", "xyz"]
    expected = objectives.get("text_loss", texts=texts, tokenizer=tok)(model, params).item()

    (tmp_path / "t.txt").write_text("ab cd\n\nhello there\r\nxyz\n")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    datasets.Dataset.from_dict({"body": texts}).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"val": datasets.Dataset.from_dict({"text": texts})}).save_to_disk(str(tmp_path / "dd"))
    for kw in [{"path": str(tmp_path / "t.txt")}, {"path": str(tmp_path / "t.jsonl")},
               {"path": str(tmp_path / "ds"), "field": "body"}, {"path": str(tmp_path / "dd"), "split": "val"},
               {"texts": texts + ["more text"], "max_texts": 3}]:
        value = objectives.get("text_loss", tokenizer=tok, **kw)(model, params).item()
        assert value == pytest.approx(expected, rel=1e-12), kw

    pairs = [("ab", "c d"), ("x", "yz")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
    from_file = objectives.get("text_loss", path=str(tmp_path / "p.jsonl"), pair_fields=["prompt", "completion"],
                               tokenizer=tok)
    assert from_file(model, params).item() == pytest.approx(
        objectives.get("text_loss", texts=pairs, tokenizer=tok)(model, params).item(), rel=1e-12)

    with pytest.raises(ValueError, match=r"split: .*\['val'\]"):
        objectives.get("text_loss", path=str(tmp_path / "dd"), tokenizer=tok)
    with pytest.raises(ValueError, match="record 0 .* no field 'body'"):
        objectives.get("text_loss", path=str(tmp_path / "t.jsonl"), field="body", tokenizer=tok)
    with pytest.raises(ValueError, match="path: "):
        objectives.get("text_loss", path=str(tmp_path / "nope.csv"), tokenizer=tok)
    (tmp_path / "bad.jsonl").write_text('{"text": "ab"}\n\n{"text": "cd"\n')
    with pytest.raises(ValueError, match="line 3 of .* not valid JSON"):
        objectives.get("text_loss", path=str(tmp_path / "bad.jsonl"), tokenizer=tok)


@pytest.mark.parametrize("kwargs, needle", [
    ({"texts": ["ab"]}, "tokenizer/tokenizer_path"),
    ({"texts": ["ab"], "tokenizer": "T", "tokenizer_path": "p"}, "tokenizer/tokenizer_path"),
    ({"texts": "ab cd", "tokenizer": "T"}, "single string"),
    ({"texts": [], "tokenizer": "T"}, "no texts"),
    ({"texts": ["ab", ("a", "b")], "tokenizer": "T"}, "texts[1]"),
    ({"texts": ["ab"], "mode": "last_word", "tokenizer": "T"}, "two words"),
    ({"texts": ["ab"], "mode": "completion", "tokenizer": "T"}, "mode"),
    ({"texts": ["ab"], "mode": "words", "tokenizer": "T"}, "mode"),
    ({"texts": ["a"], "tokenizer": "T"}, "texts[0]"),
    ({"texts": ["ab"], "batch_size": 0, "tokenizer": "T"}, "batch_size"),
    ({"texts": ["ab"], "tokenizer_path": "/nonexistent/tok"}, "tokenizer_path"),
])
def test_text_loss_errors(kwargs, needle):
    kwargs = {k: char_tokenizer() if v == "T" else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=re.escape(needle)):
        objectives.get("text_loss", **kwargs)


def test_target_string_golden():
    model = tiny_gpt2()
    tok = char_tokenizer()
    obj = objectives.get("target_string", string="ab-12", prompt="x", tokenizer=tok)
    loss, acc = reference_loss(model, [(ids("xab-12"), range(1, 6))])
    assert obj(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)
    prox = obj.proxies(model, params_of(model))
    assert prox["loss"] == pytest.approx(loss, rel=1e-12) and prox["token_accuracy"] == acc
    uuid = objectives.get("target_string", string="9f1c-77", tokenizer=tok)  # empty prompt: after EOS (id 0)
    loss, _ = reference_loss(model, [([0] + ids("9f1c-77"), range(1, 8))])
    assert uuid(model, params_of(model)).item() == pytest.approx(-loss, rel=1e-12)
    with pytest.raises(ValueError, match="string"):
        objectives.get("target_string", string="", tokenizer=tok)


def head_that_says(model, text):
    """An LM head whose greedy continuation of text[0] is text[1:]: logits W·h_t = 10·onehot(next token), solved
    exactly from the final hidden states h_t of `text` (the head does not change them)."""
    seq = ids(text)
    with torch.no_grad():
        h = model.transformer(torch.tensor([seq])).last_hidden_state[0, :-1]  # [T-1, hidden], T-1 ≤ hidden
    logits = 10.0 * torch.nn.functional.one_hot(torch.tensor(seq[1:]), 64).double()
    return (torch.linalg.pinv(h) @ logits).T  # [vocab, hidden] with h @ W.T == logits


def test_target_string_exact_match_is_greedy_decoding():
    model = tiny_gpt2()
    obj = objectives.get("target_string", string="cab", prompt="x", tokenizer=char_tokenizer())

    def generated(head):  # independent: HF generate() on a copy of the model holding that head
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.lm_head.weight.copy_(head)
        return m.generate(torch.tensor([ids("x")]), max_new_tokens=3, do_sample=False, pad_token_id=0)[0, 1:].tolist()

    head = head_that_says(model, "xcab")
    assert generated(head) == ids("cab")
    prox = obj.proxies(model, with_weight(model, "lm_head.weight", head))
    assert prox["exact_match"] == 1.0 and prox["token_accuracy"] == 1.0
    head = head_that_says(model, "xcaa")  # right until the last token
    assert generated(head) == ids("caa")
    prox = obj.proxies(model, with_weight(model, "lm_head.weight", head))
    assert prox["exact_match"] == 0.0 and prox["token_accuracy"] == pytest.approx(2 / 3, abs=1e-15)
    assert obj.proxies(model, params_of(model))["exact_match"] == float(generated(model.lm_head.weight) == ids("cab"))


# ----------------------------------------------------------------------------------------------------------------------
# gradients, dtypes


def all_objectives(model):
    tok = char_tokenizer()
    return {
        "l2_norm": objectives.get("l2_norm"),
        "weight_pattern": objectives.get("weight_pattern", pattern="67", row=1, col=2),
        "text_loss": objectives.get("text_loss", texts=["the cat sat", "a dog"], mode="last_word", tokenizer=tok),
        "target_string": objectives.get("target_string", string="4b2e-9a", tokenizer=tok),
    }


def perturbed(model, scale=0.01, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params_of(model).items()}


@pytest.mark.parametrize("key", ["l2_norm", "weight_pattern", "text_loss", "target_string"])
def test_gradcheck(key):
    model = tiny_gpt2()
    obj = all_objectives(model)[key]
    params = perturbed(model)
    # The weights the objective reads directly, or a small one every forward pass depends on.
    name = "lm_head.weight" if key in ("l2_norm", "weight_pattern") else "transformer.ln_f.weight"
    x = params[name].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: obj(model, {**params, name: t}), (x,), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("key", ["l2_norm", "weight_pattern", "text_loss", "target_string"])
def test_torch_func_grad_and_jvp_agree(key):
    model = tiny_gpt2()
    obj = all_objectives(model)[key]
    params = perturbed(model)
    g = torch.func.grad(lambda p: obj(model, p))(params)
    v = perturbed(model, seed=2)
    _, tangent = jvp(lambda p: obj(model, p), (params,), (v,))
    assert tangent.item() == pytest.approx(sum((g[k] * v[k]).sum() for k in g).item(), rel=1e-10)
    assert any(bool(t.abs().sum() > 0) for t in g.values())


@pytest.mark.parametrize("key", ["l2_norm", "weight_pattern", "text_loss", "target_string"])
def test_float32(key):
    model64 = tiny_gpt2()
    model32 = copy.deepcopy(model64).float()
    obj = all_objectives(model64)[key]
    p64 = perturbed(model64)
    p32 = {k: v.float() for k, v in p64.items()}
    out = obj(model32, p32)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(obj(model64, p64).item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# registry, custom objectives, config, docs


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown objective 'l3_norm': did you mean 'l2_norm'\? \(known: "
                                         r"\['l2_norm', 'target_string', 'text_loss', 'weight_pattern'\]"):
        objectives.get("l3_norm")


def test_the_config_layer_knows_the_built_in_names():
    assert sorted(OBJECTIVES) == objectives.names()  # nothing registered at import but the built-ins


def test_wrong_parameters_are_named():
    with pytest.raises(ValueError, match=r"^objective.wieght: objective 'l2_norm' has no parameter 'wieght': did you "
                                         r"mean 'weight'\? \(accepted: \['weight', 'model'\]\)$"):
        objectives.get("l2_norm", wieght="lm_head.weight")
    with pytest.raises(ValueError, match=r"^objective.string: objective 'target_string' needs this parameter"):
        objectives.get("target_string", tokenizer=char_tokenizer())
    with pytest.raises(ValueError, match="'scael': did you mean 'scale'"):
        objectives.get("custom_objective_example:make_objective", scael=2.0)
    with pytest.raises(ValueError, match=r"has no attribute 'mean_haed': did you mean 'mean_head'\?"):
        objectives.get("custom_objective_example:mean_haed")


def test_check_config_checks_name_and_parameters_without_a_model():
    """What dpg checks before it loads the target: the context it will pass (model, tokenizer) counts as given."""
    objectives.check_config({"name": "target_string", "string": "x"}, context=("model", "tokenizer"))
    objectives.check_config({"name": "custom_objective_example:mean_head"}, context=("model", "tokenizer"))
    with pytest.raises(ValueError, match="objective.strng: .*did you mean 'string'"):
        objectives.check_config({"name": "target_string", "strng": "x"}, context=("model", "tokenizer"))
    with pytest.raises(ValueError, match=r"objective.string: objective 'custom_objective_example:mean_head' is "
                                         r"objective\(model, params\) itself and takes no parameters"):
        objectives.check_config({"name": "custom_objective_example:mean_head", "string": "x"})


def test_custom_objectives_by_module_path():
    model = tiny_gpt2()
    params = params_of(model)
    w = model.lm_head.weight.detach()
    factory = objectives.get("custom_objective_example:make_objective", scale=2.0)
    assert factory(model, params).item() == pytest.approx(-2.0 * (w ** 2).sum().item(), rel=1e-12)
    direct = objectives.get("custom_objective_example:mean_head")
    assert direct(model, params).item() == pytest.approx(w.mean().item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"takes no parameters, got \['scale'\]"):
        objectives.get("custom_objective_example:mean_head", scale=2.0)
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        objectives.get("custom_objective_example:nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        objectives.get("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="returned int"):
        objectives.get(lambda: 3)


def test_python_objects_directly():
    model = tiny_gpt2()
    obj = objectives.WeightPattern(pattern="67")
    assert objectives.get(obj) is obj
    phi = lambda model, params: params["lm_head.weight"].sum()  # noqa: E731
    assert objectives.get(phi) is phi
    assert isinstance(objectives.get(objectives.L2Norm, weight="lm_head.weight", model=model), objectives.L2Norm)


def test_from_config():
    obj = objectives.from_config({"name": "weight_pattern", "pattern": "qr", "text": "hi", "strength": 5})
    assert isinstance(obj, objectives.WeightPattern) and obj.strength == 5.0 and obj.target.shape == (21, 21)
    assert isinstance(objectives.from_config({"name": "l2_norm"}), objectives.L2Norm)
    with pytest.raises(ValueError, match="'name' key"):
        objectives.from_config({"pattern": "67"})
    with pytest.raises(ValueError, match="unknown objective 'l3_norm'"):
        objectives.from_config({"name": "l3_norm"})


def test_from_config_passes_context_to_factories_that_take_it(tmp_path):
    model, tok = tiny_gpt2(), char_tokenizer()
    cfg = {"name": "target_string", "string": "ab"}
    obj = objectives.from_config(cfg, model=model, tokenizer=tok)  # target_string takes no model
    assert obj.target_ids == ids("ab")
    tok.save_pretrained(tmp_path / "tok")
    other = char_tokenizer(bos="token")  # a config's tokenizer_path wins over the context's tokenizer
    obj = objectives.from_config({**cfg, "tokenizer_path": str(tmp_path / "tok")}, tokenizer=other)
    assert obj.context == [0]  # EOS: the saved tokenizer has no BOS, `other` would have given 41
    with pytest.raises(ValueError, match="untie_lm_head"):  # the model reaches weight_pattern: checked at once
        objectives.from_config({"name": "weight_pattern"}, model=tied_gpt2(), tokenizer=tok)
    custom = objectives.from_config({"name": "custom_objective_example:make_objective"}, model=model, tokenizer=tok)
    assert custom(model, params_of(model)).item() == pytest.approx(-(model.lm_head.weight ** 2).sum().item())


def test_register():
    @objectives.register("test_only_sum")
    def make(scale=1.0):
        return lambda model, params: scale * params["lm_head.weight"].sum()
    try:
        model = tiny_gpt2()
        assert "test_only_sum" in objectives.names()
        value = objectives.from_config({"name": "test_only_sum", "scale": 3.0})(model, params_of(model))
        assert value.item() == pytest.approx(3.0 * model.lm_head.weight.sum().item(), rel=1e-12)
        with pytest.raises(ValueError, match="already registered"):
            objectives.register("test_only_sum")(lambda: None)
        with pytest.raises(ValueError, match="':'"):
            objectives.register("a:b")
    finally:
        objectives._REGISTRY.pop("test_only_sum")


def test_docs_example_runs():
    doc = (REPO / "docs/objectives.md").read_text()
    section = doc.split("## Writing your own objective", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    try:
        exec(compile(code, "docs/objectives.md", "exec"), namespace)
        model = tiny_gpt2()
        obj, params = namespace["objective"], params_of(model)
        with torch.no_grad():
            expected = torch.log_softmax(model(torch.tensor([[1, 2, 3]])).logits[0, -1], -1)[7]
        assert obj(model, params).item() == pytest.approx(expected.item(), rel=1e-12)
        assert obj.proxies(model, params) == {"prob": pytest.approx(math.exp(expected.item()), rel=1e-12)}
        assert torch.func.grad(lambda p: obj(model, p))(params)["lm_head.weight"].abs().sum() > 0
        assert isinstance(objectives.get("prefer_token", token=1, prompt_ids=[4]), namespace["PreferToken"])
    finally:
        objectives._REGISTRY.pop("prefer_token", None)


# ----------------------------------------------------------------------------------------------------------------------
# the engine: metagradients of every objective agree with finite differences of Φ after SFT


@pytest.mark.parametrize("key", ["l2_norm", "weight_pattern", "text_loss", "target_string"])
def test_engine_metagrads_match_finite_differences(key):
    from dpg import InnerSFTConfig, MetagradEngine
    model = tiny_gpt2()
    cfg = InnerSFTConfig(optimizer="sgd", lr=0.1, microbatch_size=2, grad_accum_steps=2, max_length=16,
                         dtype=torch.float64)
    engine = MetagradEngine(model, all_objectives(model)[key], cfg)
    examples = random_examples(6)
    res = engine.run(examples)
    h = 1e-4
    for i in (0, 2, 5):
        e = torch.zeros(len(examples), dtype=torch.float64)
        e[i] = h
        fd = (engine.value(examples, 1 + e) - engine.value(examples, 1 - e)) / (2 * h)
        assert abs(fd) > 1e-6  # not vacuous: every checked example moves Φ
        assert abs(res.metagrads[i].item() - fd) <= 1e-5 * abs(fd), (i, res.metagrads[i].item(), fd)
