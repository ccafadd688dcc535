"""The LM-pretrained tiny target (`target.pretrain_steps`): cached by a hash of its settings and the shipped text,
seeded like the generator, its loss falling while it pretrains, loaded untied by the trainer, and a config with it
trains a GRPO step."""

import json
import math
import statistics

import pytest

import dpg.training.models as M
from dpg.training import assembly, trainer
from dpg.config.schema import ConfigError, load_config
from dpg.run.checkpoints import LOG_FILE, read_log
from dpg.training.models import is_tied, load_model, pretrained_tiny_model

FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2",
        "grpo.max_completion_length=8", "inner_sft.microbatch_size=2", "inner_sft.max_length=16",
        "logging.progress=false", "prompts.limit=16"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pretraining_the_target_lowers_its_loss_and_is_cached_by_its_settings(tmp_path, monkeypatch):
    path = pretrained_tiny_model(tmp_path, role="target", steps=40, seed=3)
    assert path.name.startswith("tiny-target-bpe-")
    losses = json.loads((path / "pretrain_losses.json").read_text())["losses"]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert statistics.mean(losses[-5:]) < losses[0] - 1.0  # the 32-dim target: 6.25 -> 4.54 in 40 steps
    model = load_model(str(path), role="target")
    assert not is_tied(model) and model.config.n_embd == M.TINY_DEFAULTS["target"]["n_embd"]

    def fail(*args, **kwargs):
        raise AssertionError("pretrained again although the cache holds the model")

    monkeypatch.setattr(M, "pretrain_lm", fail)
    assert pretrained_tiny_model(tmp_path, role="target", steps=40, seed=3) == path  # hit: same settings
    for other in (dict(steps=41, seed=3), dict(steps=40, seed=4), dict(steps=40, seed=3, lr=1e-3)):
        with pytest.raises(AssertionError, match="pretrained again"):  # miss: every setting is part of the key
            pretrained_tiny_model(tmp_path, role="target", **other)
    with pytest.raises(AssertionError, match="pretrained again"):  # the generator's entry is another one
        pretrained_tiny_model(tmp_path, role="generator", steps=40, seed=3)


def test_the_key_covers_the_shipped_text(tmp_path, monkeypatch):
    first = pretrained_tiny_model(tmp_path, role="target", steps=2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(M.CORPUS_PATH.read_text() + "One more line about the river Wend.\n")
    monkeypatch.setattr(M, "CORPUS_PATH", corpus)
    assert pretrained_tiny_model(tmp_path, role="target", steps=2) != first


def test_a_config_with_a_pretrained_target_trains_a_grpo_step(tmp_path, monkeypatch):
    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, [*FAST, "target.pretrain_steps=5", "grpo.steps=1", f"output_dir={tmp_path / 'run'}",
                             "seed=7"])
    target, _ = assembly.load_target(cfg)
    # seeded like the random-init target (seed + 1), cached under DPG_CACHE, untied for the head objectives
    cached = pretrained_tiny_model(tmp_path / "cache", role="target", steps=5, seed=8)
    assert not is_tied(target)
    assert all((p == q).all() for p, q in zip(target.parameters(), load_model(str(cached), role="target").parameters()))
    trainer.train(cfg)
    rows = read_log(tmp_path / "run" / LOG_FILE)
    assert [r["step"] for r in rows] == [1] and math.isfinite(rows[0]["phi"])


@pytest.mark.parametrize("overrides, message", [
    (["target.pretrain_steps=-1"], r"target.pretrain_steps: must be >= 0 \(LM pretraining steps, 0 = none\), got -1"),
    (["target.pretrain_steps=5", "target.name_or_path=gpt2"], "target.pretrain_steps: only the embedded tiny targets"),
    (["target.pretrain_steps=5", "target.tokenizer=gpt2"], "target.tokenizer: a pretrained tiny target uses a tiny"),
])
def test_target_pretrain_steps_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
