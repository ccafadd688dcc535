"""What `dpg train` prints (one line per step, no TRL dict, verbosity, no library noise) and the degeneration
statistics and warning."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpg.cli import main
from dpg.run.console import Console, number, step_line
from dpg.training.degeneration import CollapseMonitor, text_stats
from dpg.run.checkpoints import read_log

FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2",
        "grpo.max_completion_length=8", "inner_sft.microbatch_size=2", "inner_sft.max_length=16", "inner_sft.lr=1e-2",
        "prompts.limit=16", "grpo.steps=2", "logging.sample_completions=4"]


def test_text_stats_on_known_texts():
    s = text_stats(["the the the the", "a b c", "", "   "])
    # unigrams: 4 + 3 = 7 words, 4 distinct (the, a, b, c); bigrams: 3 + 2 = 5, 3 distinct ((the, the), (a, b), (b, c))
    assert s["distinct_1"] == pytest.approx(4 / 7) and s["distinct_2"] == pytest.approx(3 / 5)
    # repetition per completion with a bigram: "the the the the" repeats 2 of its 3 bigrams, "a b c" none
    assert s["repetition"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["mean_words"] == pytest.approx(7 / 4) and s["empty"] == 0.5
    none = text_stats(["", "word"])  # no bigram anywhere: undefined, not a made-up number
    assert none["distinct_2"] is None and none["repetition"] is None and none["distinct_1"] == 1.0
    with pytest.raises(ValueError, match="no completions"):
        text_stats([])


def test_collapse_monitor_warns_once_per_kind():
    monitor = CollapseMonitor(min_distinct_2=0.2, max_empty=0.75)
    healthy = text_stats(["a b c d", "e f g h"])
    assert monitor.check(1, healthy, ["a b c d", "e f g h"]) == []
    collapsed = ["the the the the the"] * 3 + [""]
    first = monitor.check(2, text_stats(collapsed), collapsed)
    assert len(first) == 1 and first[0].startswith("step 2: the generator may be collapsing: distinct-2")
    assert "logging.collapse_distinct_2 = 0.2" in first[0] and "the the the" in first[0]
    assert monitor.check(3, text_stats(collapsed), collapsed) == []  # once only
    empty = ["", "", "", "x"]
    assert monitor.check(4, text_stats(empty), empty) == [
        "step 4: the generator may be collapsing: 75% of its 4 completions are empty (at least logging.collapse_empty "
        "= 0.75)"]
    assert CollapseMonitor(0, 0).check(1, text_stats(collapsed), collapsed) == []  # 0 turns both checks off


def test_step_line():
    record = {"step": 7, "phi": -5.8123, "proxies": {"loss": 5.8123, "token_accuracy": 0.5},
              "advantage_scaling": {"raw_std": 3.1e-3, "eps_floor": 3.1e-6}, "seconds": {"total": 0.641},
              "text": {"distinct_2": 0.62, "mean_words": 17.24}}
    assert step_line(record, 150) == ("step   7/150  Φ -5.8123  loss 5.8123  reward std 3.1e-03 (eps 3.1e-06)  "
                                      "distinct-2 0.62  len 17.2  0.64 s/step")
    assert step_line({"step": 3, "reward_failed": "boom"}, 10) == \
        "step  3/10  reward failed, policy update skipped: boom"


def test_phi_has_four_decimals_whatever_its_size():
    # l2_norm's Φ moves by ~0.002 around −32: four significant digits would print -32 at every step
    assert [number(x) for x in (-32.00123, -32.0031, -6.594, -0.69314, 0.0, 1.0)] == [
        "-32.0012", "-32.0031", "-6.5940", "-0.6931", "0.0000", "1.0000"]
    # where four decimals would hide the value or outgrow the line: scientific
    assert [number(x) for x in (1.5e-7, -4.2e-4, 123456.7)] == ["1.500e-07", "-4.200e-04", "1.235e+05"]


def test_done_line_compares_means_of_the_first_and_last_steps():
    from dpg.training.trainer import summary

    rows = [{"step": s, "phi": float(s)} for s in range(1, 31)] + [{"step": 31, "reward_failed": "boom"}]
    assert summary(rows, 12.3, Path("run/final")) == (
        "done: 31 steps logged, 12 s; Φ 5.5000 → 25.5000 (means of the first and last 10 scored steps); final "
        "generator: run/final")
    assert summary(rows[:5], 2, Path("f")) == \
        "done: 5 steps logged, 2 s; Φ 1.5000 → 4.5000 (means of the first and last 2 scored steps); final generator: f"
    assert summary(rows[:1], 2, Path("f")) == \
        "done: 1 steps logged, 2 s; Φ 1.0000 → 1.0000 (first and last scored step); final generator: f"
    assert summary(rows[30:], 2, Path("f")) == "done: 1 steps logged, 2 s; final generator: f"


def test_console_verbosity(capsys):
    for verbosity, shown in (("quiet", []), ("info", ["info"]), ("debug", ["info", "debug"])):
        c = Console(verbosity)
        c.info("info")
        c.debug("debug")
        c.warn("careful")
        c.result("result")
        out, err = capsys.readouterr()
        assert out.split() == [*shown, "result"] and err == "warning: careful\n"
    with pytest.raises(ValueError, match=r"logging.verbosity: invalid value 'loud'"):
        Console("loud")


def test_train_prints_one_line_per_step_and_logs_trl_and_diversity(tmp_path, capsys):
    assert main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path / 'run'}", *FAST]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("  ")[0] for line in lines if line.startswith("step")] == ["step 1/2", "step 2/2"]
    assert lines[0].startswith("dpg train: 2 GRPO steps of 4 completions") and lines[-1].startswith("done: 2 steps")
    assert "grad_norm" not in out + err and "FutureWarning" not in err and "loss_type" not in err
    rows = read_log(tmp_path / "run/log.jsonl")
    for row in rows:  # TRL's metrics dict goes to the log; the diversity is that of the step's completions
        assert {"grad_norm", "entropy", "text/distinct_2"} <= set(row["trl"])
        assert row["text"] == text_stats([s["completion"] for s in row["samples"]])  # 4 samples = every completion
    quiet = main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path / 'quiet'}", *FAST, "-q"])
    out, err = capsys.readouterr()
    assert quiet == 0 and len(out.splitlines()) == 1 and out.startswith("done: 2 steps") and err == ""
    assert main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path / 'debug'}", *FAST, "-v"]) == 0
    assert "trl: {'loss'" in capsys.readouterr().out


def dpg(*args):
    """`dpg ARGS` in a fresh process, as a user runs it (WANDB_MODE=offline, as conftest sets it): (stdout, stderr).
    In this process the libraries are imported already, so what they print while importing would go unseen."""
    done = subprocess.run([sys.executable, "-m", "dpg", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


NOISE = ("[INFO] Running in WANDB offline mode", "Loading weights", "FutureWarning", "gradient_checkpointing",
         "missing keys")


def test_no_library_noise_from_dry_run_calibrate_train_and_resume(tmp_path):
    """Below -v, the libraries' known-harmless output is dropped on every path that loads models; -q leaves only
    what the command produced."""
    out, err = dpg("train", "configs/quickstart.yaml", *FAST, "--dry-run")
    assert out.startswith("dpg train --dry-run configs/quickstart.yaml\n") and err == ""
    out, err = dpg("calibrate", "configs/quickstart.yaml", *FAST, "--batches", "1", "-q")
    assert out.startswith("estimator ") and "batch 1/1" not in out and err == ""  # the table and recommendation
    run = tmp_path / "run"
    out, err = dpg("train", "configs/quickstart.yaml", *FAST, "checkpoint.save_every=1", f"output_dir={run}", "-q")
    assert out.startswith("done: 2 steps") and len(out.splitlines()) == 1 and err == ""
    # the generator's head is tied: its checkpoint holds it once, as the input embeddings (HF reported it missing)
    out, err = dpg("train", "--resume", str(run), "grpo.steps=3")
    assert [line.split("  ")[0] for line in out.splitlines() if line.startswith("step")] == ["step 3/3"]
    assert not any(noise in out + err for noise in NOISE) and err == ""


def test_resume_reports_missing_keys_except_a_tied_head():
    """save_pretrained writes a tied head once, as the input embeddings: loading them restores the head, so HF's
    missing-key report leaves it out; a key that no loaded tensor shares is still reported."""
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from dpg.training.trainer import DPGTrainer

    verbosity = hf_logging.get_verbosity()  # an earlier test's quiet_libraries may have raised it past warnings
    hf_logging.set_verbosity_warning()
    reported = []
    handler = logging.Handler()
    handler.emit = lambda record: reported.append(record.getMessage())
    logging.getLogger("transformers.trainer").addHandler(handler)
    trainer = DPGTrainer.__new__(DPGTrainer)  # the report reads the model only
    try:
        for tie in (True, False):
            small = GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8, tie_word_embeddings=tie)
            saved, trainer.model = GPT2LMHeadModel(small), GPT2LMHeadModel(small)
            checkpoint = {k: v for k, v in saved.state_dict().items() if k != "lm_head.weight"}
            trainer._issue_warnings_after_load(trainer.model.load_state_dict(checkpoint, strict=False))
            if tie:
                assert reported == [] and torch.equal(trainer.model.lm_head.weight, saved.lm_head.weight)
        assert reported == ["There were missing keys in the checkpoint model loaded: ['lm_head.weight']."]
    finally:
        logging.getLogger("transformers.trainer").removeHandler(handler)
        hf_logging.set_verbosity(verbosity)


def test_collapse_warning_once_in_log_and_on_stderr(tmp_path, capsys):
    # Near-greedy sampling: both completions of a prompt are the same text, so a step's distinct-2 is at most 1/2
    # whenever its completions have two words or more (with seed 3 the untrained generator writes "… their their").
    assert main(["train", "configs/quickstart.yaml", f"output_dir={tmp_path}", *FAST, "grpo.temperature=1e-3",
                 "logging.collapse_distinct_2=0.6", "seed=3"]) == 0
    err = capsys.readouterr().err
    rows = read_log(tmp_path / "log.jsonl")
    collapsed = [r["step"] for r in rows if r["text"]["distinct_2"] is not None and r["text"]["distinct_2"] < 0.6]
    assert collapsed, "the test needs a step whose distinct-2 is under the threshold"
    warned = [r["step"] for r in rows if "warnings" in r]
    assert warned == collapsed[:1]  # said once, at the first collapsed step, though later steps may be collapsed too
    message = rows[warned[0] - 1]["warnings"]
    assert len(message) == 1 and message[0].startswith(f"step {warned[0]}: the generator may be collapsing: distinct-2")
    assert err.count("the generator may be collapsing") == 1 and f"warning: {message[0]}" in err
