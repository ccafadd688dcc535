"""End to end on the embedded tiny default: `dpg train`, resume, tokenizers, estimators, the other subcommands."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from dpg.cli import main
from dpg.run.checkpoints import read_log

FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2", "grpo.max_completion_length=8",
        "inner_sft.microbatch_size=2", "inner_sft.max_length=16", "inner_sft.lr=1e-2", "logging.progress=false",
        "prompts.limit=16"]


def train(out, *extra):
    assert main(["train", "configs/quickstart.yaml", f"output_dir={out}", *FAST, *extra]) == 0
    return read_log(out / "log.jsonl")


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_train_writes_log_checkpoints_and_a_loadable_generator(tmp_path):
    rows = train(tmp_path / "run", "grpo.steps=3", "checkpoint.save_every=2")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["sft_runs"] == 1 and len(r["samples"]) == 4
        assert set(r["seconds"]) == {"generation", "reward", "policy_update", "total"}
        assert r["reward"]["std"] > 0 and r["advantage_scaling"]["eps_floor"] > 0
        assert all(v >= 0 for v in r["seconds"].values())
    assert (tmp_path / "run/checkpoint-2/trainer_state.json").is_file()
    generator = AutoModelForCausalLM.from_pretrained(tmp_path / "run/final")
    assert generator.num_parameters() > 0
    assert (tmp_path / "run/final/tokenizer.json").is_file()
    assert main(["plot", str(tmp_path / "run")]) == 0 and (tmp_path / "run/curves.png").stat().st_size > 10_000


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    rows = train(full, "grpo.steps=4", "checkpoint.save_every=2")
    crashed = tmp_path / "crashed"  # what a kill after step 3 leaves: checkpoint-2, a log up to 3, no final
    shutil.copytree(full, crashed)
    shutil.rmtree(crashed / "checkpoint-4")
    shutil.rmtree(crashed / "final")
    (crashed / "checkpoint-4").mkdir()  # a half-written checkpoint (no trainer_state.json) must be ignored
    lines = (crashed / "log.jsonl").read_text().splitlines()
    (crashed / "log.jsonl").write_text("\n".join(lines[:3]) + '\n{"step": 4, "ph')  # torn last line
    assert main(["train", "--resume", str(crashed)]) == 0
    resumed = read_log(crashed / "log.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["phi"] for r in resumed] == [r["phi"] for r in rows]
    assert [r["samples"] for r in resumed] == [r["samples"] for r in rows]
    a, b = weights(full / "final"), weights(crashed / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_run(tmp_path):
    a = train(tmp_path / "a", "grpo.steps=2")
    b = train(tmp_path / "b", "grpo.steps=2")
    assert [r["reward"] for r in a] == [r["reward"] for r in b]
    wa, wb = weights(tmp_path / "a/final"), weights(tmp_path / "b/final")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_generator_and_target_with_different_tokenizers(tmp_path):
    rows = train(tmp_path / "run", "grpo.steps=1", "target.name_or_path=tiny-char")
    assert len(rows) == 1 and rows[0]["reward"]["std"] > 0


def test_log_says_how_many_inner_steps_ran_on_kept_graphs(tmp_path):
    rows = train(tmp_path / "default", "grpo.steps=1")  # graph_budget_mb: auto keeps every step's graph but step 0's
    assert rows[0]["inner_steps"] == {"total": 2, "from_kept_graphs": 1}  # 4 completions in microbatches of 2
    rows = train(tmp_path / "none", "grpo.steps=1", "inner_sft.graph_budget_mb=0")
    assert rows[0]["inner_steps"] == {"total": 2, "from_kept_graphs": 0}


def test_naive_estimator_with_inverse_groups(tmp_path):
    rows = train(tmp_path / "run", "grpo.steps=1", "reward.estimator=naive", "reward.batching=inverse_groups",
                 "reward.advantages=batch", "grpo.num_generations=2")
    assert rows[0]["sft_runs"] == 2


def test_weight_pattern_run_saves_pictures(tmp_path):
    rows = train(tmp_path / "run", "grpo.steps=2", "objective={name: weight_pattern, pattern: '67'}",
                 "logging.heatmap_every=2")
    assert "pixel_accuracy" in rows[0]["proxies"]
    assert (tmp_path / "run/pictures/step00002.png").is_file()


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    train(tmp_path / "run", "grpo.steps=1")
    assert main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path / 'run'}", *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_bad_override_is_a_named_error(capsys):
    assert main(["train", "configs/quickstart.yaml", "grpo.stepz=1"]) == 2
    assert "unknown key grpo.stepz" in capsys.readouterr().err


def test_generate_evaluate_and_check(tmp_path, capsys):
    cfg = ["configs/quickstart.yaml", *FAST]
    assert main(["generate", *cfg, "-n", "6", "--out", str(tmp_path / "d.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(set(r) == {"prompt", "completion"} for r in rows)
    assert main(["evaluate", *cfg, "--data", str(tmp_path / "d.jsonl"), "--generator", "initial", "-n", "6",
                 "--out", str(tmp_path / "e.json")]) == 0
    results = json.loads((tmp_path / "e.json").read_text())["sources"]
    assert [r["examples"] for r in results] == [[6], [6]]
    # Same sampler, same seed, same generator: the file and the fresh sample are one dataset, so one Φ.
    assert results[0]["phi"]["mean"] == pytest.approx(results[1]["phi"]["mean"], rel=1e-9)
    capsys.readouterr()
    assert main(["check", *cfg, "inner_sft.optimizer=sgd", "inner_sft.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "max relative error" in out and "OK" in out
