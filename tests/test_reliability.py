"""Failure semantics, degenerate generations, a real SIGKILL mid-run, and a fuzz of the reward path."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from safetensors.torch import load_file

from dpg import InnerSFTConfig, MetagradEngine
from dpg.cli import main
from dpg.config.schema import DPGConfig, GRPOSection, load_config
from dpg.training.models import build_tokenizer
from dpg.engine.sft import make_schedule
from dpg.training.batch_reward import DPGReward
from dpg.training.assembly import load_generator
from dpg.run.checkpoints import read_log
from test_trainer import FAST

REPO = Path(__file__).resolve().parents[1]


def test_skip_step_leaves_the_generator_untouched_and_logs_the_failure(tmp_path):
    args = ["train", "configs/quickstart.yaml", *FAST, "grpo.steps=2", "reward.on_error=skip_step",
            "objective={name: 'flaky_objective:nan_after_sft'}"]
    assert main([*args, f"output_dir={tmp_path / 'run'}"]) == 0
    rows = read_log(tmp_path / "run/log.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all("objective value Φ after inner SFT is nan" in r["reward_failed"] for r in rows)
    assert all("phi" not in r for r in rows)  # nothing stands in for the missing value
    final = load_file(tmp_path / "run/final/model.safetensors")
    initial = load_generator(load_config("configs/quickstart.yaml", FAST))[0].state_dict()
    assert final and all(torch.equal(final[k], initial[k]) for k in final)  # no update, no momentum, no decay


def test_raise_policy_stops_with_context(tmp_path, capsys):
    assert main(["train", "configs/quickstart.yaml", *FAST, "grpo.steps=2", f"output_dir={tmp_path}",
                 "objective={name: 'flaky_objective:nan_after_sft'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "dpg train: error: reward computation failed at GRPO step 1 (4 completions, objective "
        "'flaky_objective:nan_after_sft', estimator metagrad): ")


def reward_fn(max_length=32, batching="cross_group"):
    tok = build_tokenizer("bpe")
    cfg = DPGConfig(grpo=GRPOSection(prompts_per_step=2, num_generations=4, micro_batch_size=8))
    cfg.reward.batching = batching
    cfg.inner_sft = InnerSFTConfig(optimizer="adamw", lr=1e-2, microbatch_size=4, max_length=max_length,
                                   dtype=torch.float64)
    engine = MetagradEngine(tiny_gpt2(vocab_size=len(tok)), lambda m, p: -p["lm_head.weight"].norm(), cfg.inner_sft)
    return DPGReward(engine, tok, cfg)


def test_degenerate_generations_have_defined_outcomes():
    fn = reward_fn()
    completions = ["", "<|endoftext|>", "x", "a" * 5000, "\ud800 lone surrogate", "😀 ∑ é\u200f\u0000",
                   "The river.", "The river."]
    out = fn.score(["p"] * 8, completions)
    assert torch.isfinite(out["rewards"]).all() and torch.isfinite(out["advantages"]).all()
    assert out["truncated"] == 1  # the 5000-character completion, cut to inner_sft.max_length tokens
    assert fn.engine.run([[0, 0]]).metagrads.shape == (1,)  # "" and "<|endoftext|>" both become [EOS, EOS]
    assert out["completions"][4] == "? lone surrogate"


def test_identical_completions_get_equal_rewards_within_an_inner_step():
    """The reward depends on where an example sits in the inner schedule: copies in one step are equal; copies in
    different steps may differ, even in sign (AdamW normalises each step's update, so its examples compete)."""
    fn = reward_fn()
    out = fn.score(["p"] * 8, ["The river runs."] * 8)
    assert torch.isfinite(out["advantages"]).all()
    r = out["rewards"]
    examples = [[0, 1]] * 8  # only the schedule matters here, not the content
    for step in make_schedule(examples, fn.cfg.inner_sft):
        idx = torch.cat([mb.index for mb in step.microbatches])
        assert torch.allclose(r[idx], r[idx[0]].expand(len(idx)), rtol=1e-9, atol=0)


def test_target_tokenizer_without_eos_is_refused():
    fn = reward_fn()
    fn.tokenizer.eos_token = None
    with pytest.raises(ValueError, match="target tokenizer: has no eos_token"):
        DPGReward(fn.engine, fn.tokenizer, fn.cfg)


def test_fuzz_reward_path_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fn = reward_fn(batching="inverse_groups")
    rng = random.Random(0)
    alphabet = "ab \n\t.,😀é∑\u200b\u202e\x00\x7f\ud83d"
    for _ in range(6):
        batch = []
        for _ in range(8):
            kind = rng.randrange(4)
            if kind == 0:
                batch.append(bytes(rng.randrange(256) for _ in range(rng.randrange(64))).decode("utf-8", "replace"))
            elif kind == 1:
                batch.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(40))))
            elif kind == 2:
                batch.append("")
            else:
                batch.append("z" * rng.randrange(10_000, 50_000))
        out = fn.score(["p"] * 8, batch)
        assert out["rewards"].shape == (8,) and torch.isfinite(out["rewards"]).all()
    assert list(tmp_path.iterdir()) == []


def test_sigkill_mid_run_then_resume(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dpg.cli", "train", "configs/quickstart.yaml", *FAST, "grpo.steps=6",
           "checkpoint.save_every=2", f"output_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / "checkpoint-2").is_dir() and len(read_log(out / "log.jsonl")) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "final").exists()
    assert main(["train", "--resume", str(out)]) == 0
    steps = [r["step"] for r in read_log(out / "log.jsonl")]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (out / "final/model.safetensors").is_file()
