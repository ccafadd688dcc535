"""Checkpoints that prove they are whole, and what `--resume` does with them: torn, truncated, deleted and edited
files make it fall back to the previous whole checkpoint (and still finish bit-identical to an uninterrupted run);
the log is reconciled with the checkpoint; a finished run is left alone; a run without a checkpoint restarts at
step 0; NaN injected into the policy update stops the run before anything non-finite is saved."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from trl import GRPOTrainer

from dpg.run import checkpoints
from dpg.run.checkpoints import MANIFEST, RunDirError
from dpg.cli import main
from dpg.run.checkpoints import read_log
from test_trainer import FAST

RUN = ["grpo.steps=4", "checkpoint.save_every=2"]


def train(out, *extra):
    return main(["train", "configs/quickstart.yaml", f"output_dir={out}", *FAST, *RUN, *extra])


_REFERENCE = {}


def reference_run(tmp_path_factory):
    """An uninterrupted run of 4 steps (checkpoint-2, checkpoint-4, final/), trained once per session; tests copy it."""
    if "run" not in _REFERENCE:
        out = tmp_path_factory.mktemp("reference") / "run"
        assert train(out) == 0
        _REFERENCE["run"] = out
    return _REFERENCE["run"]


@pytest.fixture
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def same_weights(a, b):
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def snapshot(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def crashed_copy(reference, tmp_path):
    """What a kill during the write of final/ leaves: every checkpoint, the whole log, no final/."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    shutil.rmtree(run / "final")
    return run


def test_every_checkpoint_and_final_carry_a_manifest(reference):
    assert sorted(p.name for p in reference.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for folder, step in ((reference / "checkpoint-2", 2), (reference / "checkpoint-4", 4), (reference / "final", 4)):
        manifest = json.loads((folder / MANIFEST).read_text())
        assert manifest["step"] == step
        assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {MANIFEST}
        for name, entry in manifest["files"].items():
            assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert checkpoints.problem(reference / "checkpoint-4") is None
    assert checkpoints.latest(reference) == reference / "checkpoint-4"


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, why", [
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:1000]),
     "model.safetensors has 1000 bytes, its manifest says"),
    (lambda c: flip_byte(c / "optimizer.pt"), "optimizer.pt does not match the sha256 in its manifest"),
    (lambda c: (c / "trainer_state.json").write_text("{}"), "trainer_state.json has 2 bytes"),
    (lambda c: (c / "optimizer.pt").unlink(), "optimizer.pt is missing"),
    (lambda c: (c / "scheduler.pt").unlink(), "scheduler.pt is missing"),
    (lambda c: (c / "rng_state.pth").unlink(), "rng_state.pth is missing"),
    (lambda c: (c / MANIFEST).unlink(), f"no {MANIFEST} (its save never finished)"),
    (lambda c: (c / MANIFEST).write_text('{"step": 4, "fi'), f"{MANIFEST} is unreadable"),
])
def test_a_damaged_newest_checkpoint_is_skipped_with_the_reason(reference, tmp_path, damage, why):
    run = crashed_copy(reference, tmp_path)
    damage(run / "checkpoint-4")
    point = checkpoints.resume_point(run, steps=4)
    assert point.checkpoint == run / "checkpoint-2" and point.step == 2 and not point.finished
    assert len(point.warnings) == 1 and point.warnings[0].startswith(f"skipping {run / 'checkpoint-4'}: {why}")


def test_an_edited_step_is_caught_even_with_a_matching_manifest(reference, tmp_path):
    run = crashed_copy(reference, tmp_path)
    folder = run / "checkpoint-4"
    state = json.loads((folder / "trainer_state.json").read_text())
    (folder / "trainer_state.json").write_text(json.dumps({**state, "global_step": 3}))
    assert "trainer_state.json has" in checkpoints.problem(folder) or "sha256" in checkpoints.problem(folder)
    checkpoints.write_manifest(folder, 4, resumable=True)  # even re-signed, the step must agree
    assert checkpoints.problem(folder) == "trainer_state.json says step 3, its manifest says 4"
    # a manifest lacking a file resuming needs is incomplete, whatever its files say
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]["scheduler.pt"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert checkpoints.problem(folder) == "lacks scheduler.pt, which resuming needs"


def test_resume_falls_back_and_finishes_bit_identical(reference, tmp_path, capsys):
    run = crashed_copy(reference, tmp_path)
    (run / "checkpoint-4" / "model.safetensors").write_bytes(b"garbage")
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"skipping {run / 'checkpoint-4'}: model.safetensors has 7 bytes" in err
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]
    assert [r["phi"] for r in read_log(run / "log.jsonl")] == [r["phi"] for r in read_log(reference / "log.jsonl")]
    assert same_weights(run / "final", reference / "final")
    assert checkpoints.problem(run / "checkpoint-4") is None  # written again, whole


def test_a_finished_run_says_so_and_changes_nothing(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 0
    assert f"{run} is finished: final/ holds step 4 of 4; nothing to do" in capsys.readouterr().out
    assert snapshot(run) == before


def test_a_kill_while_writing_final_resumes_without_training_a_step(reference, tmp_path):
    run = crashed_copy(reference, tmp_path)
    (run / "final.tmp-4242").mkdir()  # what the killed save left
    (run / "final.tmp-4242" / "model.safetensors").write_bytes(b"half")
    assert main(["train", "--resume", str(run)]) == 0
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]  # no step 5
    assert same_weights(run / "final", reference / "checkpoint-4")
    assert same_weights(run / "final", reference / "final")
    assert not list(run.glob("final.tmp-*"))
    assert checkpoints.problem(run / "final", resumable=False) is None


def test_no_whole_checkpoint_restarts_from_step_zero(reference, tmp_path, capsys):
    run = crashed_copy(reference, tmp_path)
    shutil.rmtree(run / "checkpoint-2")
    (run / "checkpoint-4" / MANIFEST).unlink()  # killed while writing the first checkpoint
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert f"no complete checkpoint in {run}: starting again from step 0" in err
    assert [r["phi"] for r in read_log(run / "log.jsonl")] == [r["phi"] for r in read_log(reference / "log.jsonl")]
    assert same_weights(run / "final", reference / "final")


def test_overwrite_starts_again_in_place(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (run / "log.jsonl").write_text('{"step": 1}\n{"step": 2, "torn')
    (run / "notes.txt").write_text("mine")
    assert train(run, "--overwrite") == 0
    assert [r["phi"] for r in read_log(run / "log.jsonl")] == [r["phi"] for r in read_log(reference / "log.jsonl")]
    assert same_weights(run / "final", reference / "final")
    assert (run / "notes.txt").read_text() == "mine"  # only what a run wrote is deleted


def write_log(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_log_lines_past_the_checkpoint_are_dropped_a_torn_last_line_too(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, ['{"step": 1}', '{"step": 2}', '{"step": 3}', '{"step": 4, "ph'])
    checkpoints.reconcile_log(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


@pytest.mark.parametrize("lines, message", [
    (['{"step": 1}', '{"step": 2, "ph', '{"step": 3}'], r"log.jsonl line 2 is torn or not a log record"),
    (['{"step": 1}', '{"step": 3}', '{"step": 4}'], r"log.jsonl line 2 is step 3, expected step 2"),
    (['{"step": 1}', '{"step": 2}'], r"log.jsonl ends after step 2, but the checkpoint is at step 3: the lines of "
                                     r"steps 3-3 are missing"),
    (['{"step": 1}', '', '{"step": 2}', '{"step": 3}'], r"log.jsonl line 2 is torn"),
])
def test_a_torn_or_missing_log_line_before_the_checkpoint_is_an_error_naming_it(tmp_path, lines, message):
    log = tmp_path / "log.jsonl"
    write_log(log, lines)
    before = log.read_text()
    with pytest.raises(RunDirError, match=message):
        checkpoints.reconcile_log(log, 3)
    assert log.read_text() == before


def test_resume_with_a_torn_middle_log_line_is_a_named_error(reference, tmp_path, capsys):
    run = crashed_copy(reference, tmp_path)
    lines = (run / "log.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    write_log(run / "log.jsonl", lines)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run / 'log.jsonl'} line 2 is torn or not a log record" in err[0]
    assert not (run / "final").exists()


def test_read_log_skips_only_a_torn_last_line(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, ['{"step": 1}', '{"step": 2, "ph'])
    assert read_log(log) == [{"step": 1}]
    write_log(log, ['{"step": 1}', '{"ste', '{"step": 3}'])
    with pytest.raises(RunDirError, match="log.jsonl line 2 is torn or not JSON"):
        read_log(log)


def inject_nan_weights_at(monkeypatch, step):
    """NaN written into the generator by the policy update of GRPO step `step`."""
    count = {"steps": 0}
    original = torch.optim.AdamW.step

    def step_then_poison(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        count["steps"] += 1
        if count["steps"] == step:
            with torch.no_grad():
                self.param_groups[0]["params"][3].view(-1)[:5] = torch.nan
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_poison)


def test_nan_in_the_policy_update_stops_before_any_checkpoint_holds_it(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    inject_nan_weights_at(monkeypatch, 3)
    assert train(run) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("dpg train: error: non-finite generator weight ") and "after GRPO step 3: 5 of " in err[0]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"] and not (run / "final").exists()
    assert checkpoints.problem(run / "checkpoint-2") is None
    assert all(torch.isfinite(t).all() for t in weights(run / "checkpoint-2").values())
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2]
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0  # from the last good checkpoint
    assert same_weights(run / "final", reference / "final")


def test_a_nan_loss_is_named_before_the_update(tmp_path, monkeypatch, capsys):
    original = GRPOTrainer.compute_loss

    def nan_at_step_2(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        return loss * torch.nan if self.state.global_step == 1 else loss

    monkeypatch.setattr(GRPOTrainer, "compute_loss", nan_at_step_2)
    run = tmp_path / "run"
    assert train(run, "checkpoint.save_every=1") == 1
    assert capsys.readouterr().err.strip() == ("dpg train: error: non-finite policy loss at GRPO step 2: nan; stopped "
                                               "before the update")
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1"]


def fake_checkpoint(run_dir, step):
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / name).write_bytes(bytes(step))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    checkpoints.write_manifest(folder, step, resumable=True)
    return folder


def test_rotation_keeps_the_newest_whole_checkpoints_by_step(tmp_path):
    for step in (1, 2, 10):
        fake_checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-10" / "optimizer.pt").write_bytes(b"")  # torn: not counted as whole
    (tmp_path / "checkpoint-11").mkdir()  # a save in progress: not counted, not deleted
    checkpoints.rotate(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-11", "checkpoint-2"]
    (tmp_path / "checkpoint-2" / "scheduler.pt").unlink()  # a save that left a file out is never marked whole
    with pytest.raises(RuntimeError, match="the save wrote no scheduler.pt; refusing to mark it complete"):
        checkpoints.write_manifest(tmp_path / "checkpoint-2", 2, resumable=True)
