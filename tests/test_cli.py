"""The command line as people type it: Ctrl-C is one line and exit 130 in every command (for train: the step, the
last complete checkpoint and the command that continues the run); key=value overrides go anywhere after the config;
--resume names a missing run directory; --version; every verb and flag says what it does."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dpg import __version__, api
from dpg.cli import main
from dpg.run import checkpoints
from dpg.run.checkpoints import MANIFEST, read_log
from test_cli_startup import probe
from test_trainer import FAST

REPO = Path(__file__).resolve().parents[1]
DPG = Path(sys.executable).with_name("dpg")
VERBS = ["train", "generate", "evaluate", "check", "calibrate", "plot", "attribute", "select"]


def error_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------------------------
def test_ctrl_c_in_train_says_where_the_run_stopped_and_resume_continues_it(tmp_path):
    run = tmp_path / "run"
    argv = [str(DPG), "train", "configs/quickstart.yaml", f"output_dir={run}", *FAST, "grpo.steps=50",
            "checkpoint.save_every=1"]
    # SIGINT as the terminal sends it; the default disposition, whatever the shell running the tests set
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not (run / "checkpoint-1" / MANIFEST).exists() and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip() == (f"dpg train: interrupted after step 1 of 50; last complete checkpoint: {run / 'checkpoint-1'} "
                           f"(step 1); continue with: dpg train --resume {run}")

    r = subprocess.run([str(DPG), "train", "--resume", str(run), "grpo.steps=2"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming after step 1" in r.stdout
    assert [row["step"] for row in read_log(run / "log.jsonl")] == [1, 2]
    assert checkpoints.finished(run, 2)


def test_ctrl_c_while_a_checkpoint_is_written_leaves_none_that_resume_trusts(tmp_path, monkeypatch, capsys):
    """Interrupted after checkpoint-2's files, before its manifest: the message names checkpoint-1, and --resume
    skips the unsigned checkpoint-2 with a warning saying why, then finishes the run."""
    run = tmp_path / "run"
    write_manifest = checkpoints.write_manifest

    def interrupted_at_step_2(directory, step, resumable):
        if step == 2 and resumable:
            raise KeyboardInterrupt
        return write_manifest(directory, step, resumable)

    monkeypatch.setattr(checkpoints, "write_manifest", interrupted_at_step_2)
    argv = ["train", "configs/quickstart.yaml", f"output_dir={run}", *FAST, "grpo.steps=3", "checkpoint.save_every=1",
            "-q"]
    assert main(argv) == 130
    assert error_lines(capsys) == [f"dpg train: interrupted after step 2 of 3; last complete checkpoint: "
                                   f"{run / 'checkpoint-1'} (step 1); continue with: dpg train --resume {run}"]
    assert (run / "checkpoint-2").is_dir() and not (run / "checkpoint-2" / MANIFEST).exists()

    monkeypatch.setattr(checkpoints, "write_manifest", write_manifest)
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert f"skipping {run / 'checkpoint-2'}: no {MANIFEST} (its save never finished)" in capsys.readouterr().err
    assert [row["step"] for row in read_log(run / "log.jsonl")] == [1, 2, 3]
    assert checkpoints.problem(run / "checkpoint-2") is None and checkpoints.finished(run, 3)


def test_ctrl_c_before_the_run_is_written_says_to_run_the_same_command_again(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "train", interrupted)
    run = tmp_path / "run"
    assert main(["train", "configs/quickstart.yaml", f"output_dir={run}", "grpo.steps=3"]) == 130
    assert error_lines(capsys) == ["dpg train: interrupted before the run started; run again: dpg train "
                                   f"configs/quickstart.yaml output_dir={run} grpo.steps=3"]
    run.mkdir()
    (run / "config.yaml").write_text(Path("configs/quickstart.yaml").read_text())
    old = time.time() - 60  # written by an earlier command
    os.utime(run / "config.yaml", (old, old))
    assert main(["train", "--resume", str(run), "grpo.steps=3"]) == 130
    assert error_lines(capsys) == [f"dpg train: interrupted before the run continued; run again: dpg train --resume "
                                   f"{run} grpo.steps=3"]


@pytest.mark.parametrize("verb", VERBS)
def test_ctrl_c_in_any_command_is_one_line_and_exit_130(verb, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("dpg.cli._check_flags", interrupted)
    handler = signal.getsignal(signal.SIGINT)
    scores = ["--data", "d.jsonl", "--out", "s.jsonl"]
    rest = {"train": ["--dry-run"], "generate": ["--out", "x.jsonl"], "attribute": scores, "select": scores}.get(verb, [])
    assert main([verb, "configs" if verb == "plot" else "configs/quickstart.yaml", *rest]) == 130
    assert error_lines(capsys) == [f"dpg {verb}: interrupted"]
    assert signal.getsignal(signal.SIGINT) is handler  # a later Ctrl-C interrupts as before


def test_ctrl_c_in_attribute_says_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("dpg.cli._check_flags", interrupted)
    out = tmp_path / "scores.jsonl"
    Path(f"{out}.partial").write_text("")  # what an attribution writes as its SFT runs finish
    argv = ["attribute", "configs/quickstart.yaml", "--data", "d.jsonl", "--out", str(out)]
    assert main(argv) == 130
    assert error_lines(capsys) == [f"dpg attribute: interrupted; {out}.partial keeps the SFT runs already scored, and "
                                   f"the same command resumes from it: dpg {' '.join(argv)}"]


# ---------------------------------------------------------------------------------------------------------------
# key=value overrides after flags
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def calls(monkeypatch):
    """What the commands were asked to do, instead of doing it."""
    seen = []
    monkeypatch.setattr(api, "train", lambda cfg, **kwargs: seen.append(("train", cfg, kwargs)))
    monkeypatch.setattr(api, "evaluate", lambda cfg, **kwargs: seen.append(("evaluate", cfg, kwargs)) or "")
    monkeypatch.setattr("dpg.tools.dryrun.dry_run", lambda cfg, **kwargs: seen.append(("dry_run", cfg, kwargs)) or "")
    return seen


def test_overrides_after_overwrite(calls, tmp_path):
    assert main(["train", "configs/quickstart.yaml", "--overwrite", "grpo.steps=1", f"output_dir={tmp_path}"]) == 0
    (what, cfg, kwargs), = calls
    assert what == "train" and cfg.grpo.steps == 1 and cfg.output_dir == str(tmp_path) and kwargs["overwrite"]


def test_overrides_after_dry_run(calls, tmp_path):
    assert main(["train", "configs/quickstart.yaml", "--dry-run", f"output_dir={tmp_path}", "--stand-in",
                 "grpo.steps=7"]) == 0
    (what, cfg, kwargs), = calls
    assert what == "dry_run" and cfg.output_dir == str(tmp_path) and cfg.grpo.steps == 7
    assert kwargs["stand_in"] == "missing"


def test_overrides_after_generator_and_n(calls):
    assert main(["evaluate", "configs/quickstart.yaml", "--generator", "initial", "-n", "8", "inner_sft.lr=1e-3"]) == 0
    (what, cfg, kwargs), = calls
    assert what == "evaluate" and cfg.inner_sft.lr == 1e-3
    assert kwargs["generators"] == ["initial"] and kwargs["n"] == 8


def test_flags_taking_several_values_leave_overrides_alone_in_the_order_typed(calls, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "", "completion": "hi"}\n')
    assert main(["evaluate", "configs/quickstart.yaml", "inner_sft.lr=1e-3", "--generator", "initial",
                 "inner_sft.lr=2e-3", "--data", str(data), "inner_sft.lr=3e-3", "seed=5"]) == 0
    (what, cfg, kwargs), = calls
    assert kwargs["generators"] == ["initial"] and kwargs["data"] == [str(data)]
    assert cfg.inner_sft.lr == 3e-3 and cfg.seed == 5  # the last one typed wins


def test_resume_takes_overrides_anywhere(calls, tmp_path):
    (tmp_path / "config.yaml").write_text(Path("configs/quickstart.yaml").read_text())
    assert main(["train", "--resume", str(tmp_path), "grpo.steps=2", "-q", "seed=3"]) == 0
    (what, cfg, kwargs), = calls
    assert (cfg.grpo.steps, cfg.seed, cfg.output_dir, kwargs["resume"]) == (2, 3, str(tmp_path), True)


def test_an_unknown_flag_gets_the_commands_usage(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "configs/quickstart.yaml", "--overwite", "grpo.steps=1"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: dpg train") and err.strip().endswith("dpg train: error: unrecognized arguments: "
                                                                          "--overwite")


# ---------------------------------------------------------------------------------------------------------------
# wording, --version, --help
# ---------------------------------------------------------------------------------------------------------------
def test_resume_on_a_missing_run_directory_says_so(tmp_path, capsys):
    result, err = probe(["train", "--resume", "no/such/run"])
    assert result == {"code": 2, "imported": []}
    assert err.strip() == "dpg train: error: --resume: the run directory no/such/run does not exist"
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert error_lines(capsys) == [f"dpg train: error: --resume: the run directory {tmp_path} holds no config.yaml, "
                                   "so it is not a run of dpg train"]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0 and capsys.readouterr().out.strip() == f"dpg {__version__}"


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return capsys.readouterr().out


def test_every_verb_is_one_line_in_the_overall_help(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    lines = help_text([], capsys).splitlines()
    for verb in VERBS:
        i = next(i for i, line in enumerate(lines) if line.split()[:1] == [verb])
        assert len(lines[i].split()) > 2, lines[i]  # the verb, then what it does
        assert not lines[i + 1].startswith(" " * 5), lines[i + 1]  # not carried over to a second line


@pytest.mark.parametrize("verb", VERBS)
def test_every_argument_has_help(verb, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "120")
    text = help_text([verb], capsys)
    # an argument's own line (two spaces in) is followed on it, or on the next line further in, by its help
    lines = text.split("\n\n", 2)[2].splitlines()
    for i, line in enumerate(lines):
        if re.match(r"  \S", line) and len(re.split(r"\s{2,}", line.strip())) == 1:
            assert i + 1 < len(lines) and lines[i + 1].startswith(" " * 6), f"{verb}: {line.strip()} has no help"


def test_dpg_warnings_are_one_line_and_library_warnings_keep_their_format(capsys, monkeypatch):
    import warnings

    from dpg import cli
    from dpg.errors import DPGWarning

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    with pytest.raises(SystemExit):
        main(["--version"])
    assert warnings.showwarning is cli._show_warning  # every command prints warnings through it
    capsys.readouterr()

    cli._show_warning(DPGWarning("inner_sft.dtype: bfloat16: rewards may point the wrong way"), DPGWarning,
                      "metagrad.py", 81)
    cli._show_warning(UserWarning("a library's"), UserWarning, "lib.py", 7)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "warning: inner_sft.dtype: bfloat16: rewards may point the wrong way"
    assert lines[1].startswith("lib.py:7: UserWarning: a library's")
