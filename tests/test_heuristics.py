"""Heuristic rewards of the language study (dpg/training/heuristics.py): hand-computed values, the shipped language data, the
MiniLM encoder, config errors, and the path through DPGReward and `dpg.training.trainer.train`."""

import math
import random

import pytest
import torch

from dpg.training import heuristics as H
from dpg.config.schema import ConfigError, load_config
from dpg.training.rewards import to_target_examples
from dpg.training.batch_reward import DPGReward
from dpg.training.assembly import build_engine
from dpg.run.checkpoints import read_log
from dpg.training.trainer import train as dpg_train

ES = str(H.LANGUAGES_DIR / "es.txt")
# Sentences written for this test, in none of the shipped files: one meaning, five languages.
CLEAR = {
    "en": "The cat is sleeping on the sofa while it rains outside.",
    "es": "El gato duerme en el sofá mientras llueve fuera.",
    "fr": "Le chat dort sur le canapé pendant qu'il pleut dehors.",
    "de": "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "it": "Il gatto dorme sul divano mentre fuori piove.",
}


# -- levenshtein ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b, d", [
    ("kitten", "sitting", 3), ("sitting", "kitten", 3), ("flaw", "lawn", 2), ("", "", 0), ("", "abc", 3),
    ("abc", "", 3), ("same", "same", 0), ("café", "cafe", 1), ("naïve", "naive", 1), ("🙂", "🙃", 1),
    ("日本語", "日本", 1), ([1, 2, 3], [1, 3], 1), ([], [7, 7], 2),
])
def test_levenshtein_hand_values(a, b, d):
    assert H.levenshtein(a, b) == d
    assert H.levenshtein_rewards([a], [b]).item() == -d  # the rapidfuzz path agrees


def test_levenshtein_reward_is_minus_the_mean_over_references_and_uses_nfc():
    r = H.levenshtein_rewards(["kitten", ""], ["sitting", "kitten", "mitten"])
    assert r.dtype == torch.float64
    assert r.tolist() == [-(3 + 0 + 1) / 3, -(7 + 6 + 6) / 3]
    decomposed, composed = "e\u0301", "\u00e9"  # "é" as e + combining accent, and as one code point
    assert H.levenshtein(decomposed, composed) == 2
    assert H.levenshtein_rewards([decomposed], [composed]).item() == 0


def test_fast_levenshtein_matches_the_definition_on_random_strings():
    rng = random.Random(0)
    alphabet = "abcé🙂 ñß"
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(30)]
    fast = -H.levenshtein_rewards(strings, strings[:7]) * 7
    slow = torch.tensor([sum(H.levenshtein(s, v) for v in strings[:7]) for s in strings], dtype=torch.float64)
    assert torch.allclose(fast, slow, rtol=0, atol=1e-9)


# -- langid --------------------------------------------------------------------------------------------------------


def test_char_ngrams_pad_casefold_and_collapse_whitespace():
    assert H.char_ngrams("Ab", 1, 2) == {" ": 2, "a": 1, "b": 1, " a": 1, "ab": 1, "b ": 1}
    assert H.char_ngrams("A \n\t b", 1, 1) == H.char_ngrams("a b", 1, 1)
    assert H.char_ngrams("  \n ") == {}


def test_naive_bayes_probability_by_hand():
    # x: " aab " → ' ':2 a:2 b:1 (N=5); y: " abb " → ' ':2 a:1 b:2 (N=5); V = {' ', a, b}; add-one:
    # p(·|x) = (3/8, 3/8, 2/8), p(·|y) = (3/8, 2/8, 3/8). Text "a" → " a " → ' ':2 a:1.
    clf = H.NaiveBayesLangID.train({"x": ["aab"], "y": ["abb"]}, n_min=1, n_max=1, alpha=1.0)
    expected_ll = [3 * math.log(3 / 8), 2 * math.log(3 / 8) + math.log(2 / 8)]
    ll, n = clf.log_likelihoods(["a"])
    assert ll[0].tolist() == pytest.approx(expected_ll, rel=1e-12) and n.tolist() == [3]
    p = clf.probabilities(["a"])[0]
    assert p.tolist() == pytest.approx([3 / 5, 2 / 5], rel=1e-12)  # (3/8) / (3/8 + 2/8)
    per_ngram = clf.probabilities(["a"], per_ngram=True)[0, 0].item()
    assert per_ngram == pytest.approx(1 / (1 + (2 / 3) ** (1 / 3)), rel=1e-12)  # softmax of ll / 3
    assert clf.probabilities(["a c"])[0].tolist() == pytest.approx([3 / 5, 2 / 5])  # unseen "c" is ignored
    assert clf.probabilities(["zzz"])[0].tolist() == [0.5, 0.5]  # no known n-gram but ' ': uniform either way
    assert clf.probabilities([""])[0].tolist() == [0.5, 0.5]  # no evidence: the prior
    assert clf.predict(["aaaa", "bbbb"]) == ["x", "y"]


def test_shipped_languages_and_classifier_on_unseen_sentences():
    assert set(H.languages()) >= {"en", "es", "fr", "de", "it"}
    for code in ("en", "es", "fr", "de", "it"):
        assert len(H.language_texts(code)) >= 300
    clf = H.shipped_classifier()
    codes = list(CLEAR)
    assert clf.predict([CLEAR[c] for c in codes]) == codes
    for per_ngram in (True, False):
        p_es = H.langid_rewards([CLEAR[c] for c in codes], clf, "es", per_ngram)
        assert p_es.argmax().item() == codes.index("es")
        assert all(0 <= v <= 1 for v in p_es.tolist())
    exact = clf.probabilities([CLEAR["es"]])[0]
    assert exact[clf.languages.index("es")] > 0.99 and exact.sum().item() == pytest.approx(1.0)
    assert H.detect_language(H.language_texts("es")[:20], clf) == "es"
    with pytest.raises(ValueError, match="language: 'xx' is not one the classifier knows"):
        H.langid_rewards(["hola"], clf, "xx")


# -- embedding -----------------------------------------------------------------------------------------------------


def test_mean_pool_on_a_hand_made_tensor():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                           [[5.0, 6.0], [7.0, 8.0], [9.0, 10.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert H.mean_pool(hidden, mask).tolist() == [[2.0, 3.0], [7.0, 8.0]]


def test_minilm_embedding_reward():
    enc = H.load_encoder(None)  # the all-MiniLM-L6-v2 of the `heuristics` extra, loaded offline from the package
    e = enc.encode(["a", CLEAR["en"]])
    assert e.shape == (2, 384) and e.dtype == torch.float64
    assert e.norm(dim=1).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    same = H.embedding_rewards([CLEAR["es"]], enc, H.reference_centroid(enc, [CLEAR["es"]]))
    assert same.item() == pytest.approx(1.0, abs=1e-6)
    centroid = H.reference_centroid(enc, H.language_texts("es")[:6])
    r = H.embedding_rewards([CLEAR["es"], CLEAR["en"]], enc, centroid)
    assert r[0] > r[1]  # the Spanish sentence is closer to the Spanish references


# -- scorer, config, reward path ------------------------------------------------------------------------------------


def test_scorer_refuses_bad_rewards():
    with pytest.raises(FloatingPointError, match=r"langid: non-finite rewards for completions \[1\]"):
        H.Scorer("langid", lambda t: torch.tensor([0.5, math.nan], dtype=torch.float64))(["a", "b"])
    with pytest.raises(RuntimeError, match="expected 2 float64 rewards, got \\(1,\\)"):
        H.Scorer("x", lambda t: torch.zeros(1, dtype=torch.float64))(["a", "b"])


@pytest.mark.parametrize("overrides, message", [
    (["reward.estimator=levenshtein"], r"reward.reference_texts: estimator 'levenshtein' compares .* got objective "
                                       r"'l2_norm'"),
    (["reward.estimator=langid"], r"reward.language: estimator 'langid' detects the target language"),
    (["reward.estimator=langid", "reward.language=xx"], r"reward.language: unknown language 'xx'; shipped: \["),
    (["reward.language=es"], r"reward.language: only used by estimator langid, but reward.estimator is 'metagrad'"),
    (["reward.estimator=embedding", "reward.reference_texts=/no/refs.txt"],
     r"reward.reference_texts: file or directory not found: /no/refs.txt"),
    (["reward.estimator=embedding", f"reward.reference_texts={ES}", "reward.embedding_model=/no/model"],
     r"reward.embedding_model: not a model directory"),
    (["reward.levenshtein_unit=target_tokens"], r"reward.levenshtein_unit: only used by estimator levenshtein"),
    (["reward.langid_per_ngram=false", "reward.estimator=levenshtein", f"reward.reference_texts={ES}"],
     r"reward.langid_per_ngram: only used by estimator langid, but reward.estimator is 'levenshtein'"),
    (["reward.estimator=edit"], r"reward.estimator: invalid value 'edit'; choose one of \[.*'langid'\]"),
])
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


TINY = ["objective.name=text_loss", f"objective.path={ES}", "objective.max_texts=4", "objective.max_length=16",
        "inner_sft.microbatch_size=4", "inner_sft.max_length=16", "grpo.prompts_per_step=2",
        "grpo.num_generations=2", "grpo.micro_batch_size=2"]
# A shipped Spanish line that is not among the references and its English translation, then the CLEAR pair.
COMPLETIONS = [H.language_texts("es")[12], H.language_texts("en")[12], CLEAR["es"], CLEAR["en"]]


@pytest.mark.parametrize("estimator, extra", [
    ("langid", []), ("langid", ["reward.language=fr", "reward.langid_per_ngram=false"]),
    ("levenshtein", []), ("levenshtein", ["reward.levenshtein_unit=target_tokens"]), ("embedding", []),
])
def test_dpg_reward_scores_heuristics_from_text_and_logs_phi(estimator, extra):
    cfg = load_config(None, [*TINY, f"reward.estimator={estimator}", *extra])
    engine, _, tok = build_engine(cfg)
    reward = DPGReward(engine, tok, cfg)
    out = reward.score(["p1", "p1", "p2", "p2"], COMPLETIONS, step=1)
    refs = H.language_texts("es")[:4]  # the objective's texts are the default references
    if estimator == "langid":
        language = "fr" if extra else "es"  # detected from the objective's texts when reward.language is null
        assert reward.heuristic.detail["language"] == language
        want = H.langid_rewards(COMPLETIONS, H.shipped_classifier(), language, per_ngram=not extra)
    elif extra:
        ids = lambda ts: [tok(t, add_special_tokens=False)["input_ids"] for t in ts]  # noqa: E731
        want = H.levenshtein_rewards(ids(COMPLETIONS), ids(refs))
    elif estimator == "levenshtein":
        want = H.levenshtein_rewards(COMPLETIONS, refs)
    else:
        enc = H.load_encoder(None)
        want = H.embedding_rewards(COMPLETIONS, enc, H.reference_centroid(enc, refs))
    assert torch.allclose(out["rewards"], want, rtol=1e-12, atol=1e-12)
    if not (estimator == "langid" and extra):  # the Spanish line beats its English translation
        assert out["rewards"][0] > out["rewards"][1]
    if estimator != "levenshtein":  # not for character edits: the shorter text is closer to long references
        assert out["rewards"][2] > out["rewards"][3]
    examples, _ = to_target_examples(COMPLETIONS, tok, cfg.inner_sft.max_length)
    assert out["runs"] == 1 and out["value"] == engine.evaluate(examples).value  # Φ of the batch, one SFT


def test_heuristic_reward_failure_raises_with_context():
    cfg = load_config(None, [*TINY, "reward.estimator=langid"])
    engine, _, tok = build_engine(cfg)
    reward = DPGReward(engine, tok, cfg)
    reward.heuristic = H.Scorer("langid", lambda t: torch.full((len(t),), math.inf, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"reward computation failed at GRPO step 3 .* estimator langid\): "
                                           r"langid: non-finite rewards"):
        reward.score(["p", "p", "q", "q"], COMPLETIONS, step=3)


def test_two_step_training_run_with_langid(tmp_path):
    cfg = load_config(None, [*TINY, "reward.estimator=langid", "generator.pretrain_steps=0", "grpo.steps=2",
                             "grpo.max_completion_length=8", "logging.progress=false", "prompts.limit=8",
                             f"output_dir={tmp_path / 'run'}"])
    dpg_train(cfg)
    rows = read_log(tmp_path / "run" / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert math.isfinite(r["phi"]) and r["sft_runs"] == 1
        assert 0 <= r["reward"]["min"] <= r["reward"]["max"] <= 1  # probabilities of Spanish
        for s in r["samples"]:  # each logged reward is the langid probability of that completion's text
            assert s["reward"] == pytest.approx(
                H.langid_rewards([s["completion"]], H.shipped_classifier(), "es").item(), rel=1e-6)
