"""Filesystem faults (read-only, disk full, not a directory) wherever a run writes, CLI misuse of every verb, and the
other hostile inputs a run meets: each is one named line (never a traceback), and the last whole checkpoint stays the
one `--resume` finishes from, bit-identical to an uninterrupted run.

The OS errors of a read-only or full disk are raised from the writer itself (tests may run as root, where permission
bits stop nothing); where mounting is allowed, a real 1 MB tmpfs fills up too."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from dpg.run import checkpoints, fsio
from dpg.run.checkpoints import MANIFEST
from dpg.cli import main
from dpg.training.sampling import read_completions
from dpg.run.checkpoints import read_log
from test_checkpoints import crashed_copy, reference_run, same_weights, snapshot, train
from test_reliability import reward_fn
from test_trainer import FAST

REPO = Path(__file__).resolve().parents[1]
DPG = Path(sys.executable).with_name("dpg")


@pytest.fixture
def reference(tmp_path_factory):
    return reference_run(tmp_path_factory)


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def refuse_writes(monkeypatch, code, when=lambda path, mode: True):
    """Every file dpg itself opens for writing (config, log, manifests, datasets) fails with `code` once `when`."""
    real_open = open

    def faulty_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax") and when(Path(path), mode):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(fsio, "open", faulty_open, raising=False)


def test_read_only_output_from_the_start(tmp_path, monkeypatch, capsys):
    refuse_writes(monkeypatch, errno.EROFS)
    run = tmp_path / "run"
    assert train(run) == 1
    assert one_error_line(capsys) == f"dpg train: error: read-only file system while writing {run / 'config.yaml'}"
    assert not list(run.glob("*.tmp*")) and not (run / "log.jsonl").exists()


def test_going_read_only_mid_run_keeps_the_checkpoint_and_resumes(reference, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    log = run / "log.jsonl"
    refuse_writes(monkeypatch, errno.EROFS, lambda path, mode: path == log and log.exists() and len(read_log(log)) == 2)
    assert train(run) == 1
    assert one_error_line(capsys) == f"dpg train: error: read-only file system while appending step to {log}"
    assert checkpoints.latest(run) == run / "checkpoint-2" and not (run / "final").exists()
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert [r["phi"] for r in read_log(log)] == [r["phi"] for r in read_log(reference / "log.jsonl")]
    assert same_weights(run / "final", reference / "final")


def test_disk_full_while_writing_a_checkpoint(reference, tmp_path, monkeypatch, capsys):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if str(f).endswith("checkpoint-4/optimizer.pt"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    assert train(run) == 1
    folder = run / "checkpoint-4"
    assert one_error_line(capsys) == (f"dpg train: error: no space left on device while writing checkpoint {folder} "
                                      f"({folder / 'optimizer.pt'})")
    assert not (folder / MANIFEST).exists() and checkpoints.problem(run / "checkpoint-2") is None
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert f"skipping {folder}: no {MANIFEST}" in capsys.readouterr().err
    assert same_weights(run / "final", reference / "final")


def test_disk_full_while_writing_final_as_safetensors_reports_it(reference, tmp_path, monkeypatch, capsys):
    import transformers.modeling_utils as modeling_utils

    real_save = modeling_utils.safe_save_file

    def save(tensors, filename, *args, **kwargs):
        if "final.tmp" in str(filename):  # safetensors' own error: no errno, only "code: 28" in its text
            raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                                  'space left on device" })')
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(modeling_utils, "safe_save_file", save)
    run = tmp_path / "run"
    assert train(run) == 1
    assert one_error_line(capsys) == (f"dpg train: error: no space left on device while writing the final generator "
                                      f"to {run / 'final'}")
    assert not (run / "final").exists() and not list(run.glob("final.tmp-*"))
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]
    assert same_weights(run / "final", reference / "final")


def test_resume_on_a_read_only_run_changes_nothing(reference, tmp_path, monkeypatch, capsys):
    run = crashed_copy(reference, tmp_path)
    (run / "log.jsonl").write_text((run / "log.jsonl").read_text() + '{"step": 5, "to')  # must be cut back
    before = snapshot(run)
    refuse_writes(monkeypatch, errno.EROFS)
    assert main(["train", "--resume", str(run)]) == 1
    assert one_error_line(capsys).startswith(f"dpg train: error: read-only file system while cutting back the log "
                                             f"{run / 'log.jsonl'}")
    assert snapshot(run) == before


@pytest.fixture
def tmpfs(tmp_path):
    """tmpfs(size) mounts a tmpfs of that size ("1m") and returns its directory, or None where this machine does not
    allow mounting."""
    mounted = []

    def mount(size):
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                                            str(disk)], capture_output=True).returncode:
            return None
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_really_full_disk_names_the_disk_not_torch(tmpfs, tmp_path, monkeypatch, capsys):
    """On a full 1 MB tmpfs torch's zip writer fails with "file write failed" / "unexpected pos" and no errno: dpg asks
    the filesystem and says the disk is full. (Without mounting: torch's error and a filesystem reporting 0 bytes.)"""
    disk = tmpfs("1m")
    if disk is None:
        real_statvfs, real_save = os.statvfs, torch.save

        def full(path):
            s = real_statvfs(path)
            return os.statvfs_result((s.f_bsize, s.f_frsize, s.f_blocks, 0, 0, s.f_files, s.f_ffree, s.f_favail,
                                      s.f_flag, s.f_namemax))

        def save(obj, f, *args, **kwargs):
            if "checkpoint-1" in str(f):
                raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                                   "file data/0: file write failed")
            return real_save(obj, f, *args, **kwargs)

        monkeypatch.setattr(torch, "save", save)
        monkeypatch.setattr(fsio.os, "statvfs", full)
    run = (disk or tmp_path) / "run"
    assert train(run, "checkpoint.save_every=1") == 1
    assert one_error_line(capsys) == f"dpg train: error: no space left on device while writing checkpoint " \
                                     f"{run / 'checkpoint-1'}"
    assert not (run / "checkpoint-1" / MANIFEST).exists()


def test_a_really_read_only_disk(reference, tmpfs, tmp_path, monkeypatch, capsys):
    """Fresh run and resume on a read-only filesystem are refused before anything is written; a finished run there
    still says so. (Without mounting: a filesystem that reports itself read-only.)"""
    mounted = tmpfs("8m")
    disk = mounted or tmp_path
    shutil.copytree(reference / "checkpoint-2", disk / "crashed" / "checkpoint-2")
    shutil.copy(reference / "config.yaml", disk / "crashed")
    write_log = "".join(line + "\n" for line in (reference / "log.jsonl").read_text().splitlines()[:3])
    (disk / "crashed" / "log.jsonl").write_text(write_log)
    (disk / "finished").mkdir()
    shutil.copytree(reference / "final", disk / "finished" / "final")
    shutil.copy(reference / "config.yaml", disk / "finished")
    if mounted is not None:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    else:
        real_statvfs = os.statvfs

        def read_only(path):
            s = real_statvfs(path)
            return os.statvfs_result((*s[:8], s.f_flag | os.ST_RDONLY, s.f_namemax))

        monkeypatch.setattr(fsio.os, "statvfs", read_only)
    before = snapshot(disk)
    assert train(disk / "new") == 2
    assert one_error_line(capsys) == (f"dpg train: error: output_dir: cannot write a run to '{disk / 'new'}': {disk} "
                                      "is on a read-only file system")
    assert main(["train", "--resume", str(disk / "crashed")]) == 2
    assert one_error_line(capsys) == (f"dpg train: error: output_dir: cannot write a run to '{disk / 'crashed'}': "
                                      f"{disk / 'crashed'} is on a read-only file system")
    assert main(["train", "--resume", str(disk / "finished")]) == 0
    assert f"{disk / 'finished'} is finished" in capsys.readouterr().out
    assert snapshot(disk) == before


@pytest.mark.parametrize("verb", ["generate", "evaluate", "plot"])
def test_an_output_under_a_file_is_refused_before_any_work(reference, tmp_path, capsys, verb):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "a_file" / "out.jsonl"
    args = {"generate": ["generate", "configs/quickstart.yaml", *FAST, "-n", "2", "--out", str(out)],
            "evaluate": ["evaluate", "configs/quickstart.yaml", *FAST, "--generator", "initial", "--out", str(out)],
            "plot": ["plot", str(reference), "--out", str(out)]}[verb]
    assert main(args) == 2
    assert one_error_line(capsys) == (f"dpg {verb}: error: --out: cannot write {out}: {tmp_path / 'a_file'} exists "
                                      "and is not a directory")


def test_a_full_disk_while_writing_samples_names_the_file(tmp_path, monkeypatch, capsys):
    refuse_writes(monkeypatch, errno.ENOSPC)
    out = tmp_path / "samples.jsonl"
    assert main(["generate", "configs/quickstart.yaml", *FAST, "-n", "2", "--out", str(out)]) == 1
    assert one_error_line(capsys) == f"dpg generate: error: no space left on device while writing {out}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["check", "--weights", "0"], "--weights: must be an integer from 1 up, got 0"),
    (["check", "--weights", "-2"], "--weights: must be an integer from 1 up, got -2"),
    (["check", "--h", "0"], "--h: must be a finite number > 0, got 0.0"),
    (["check", "--h", "nan"], "--h: must be a finite number > 0, got nan"),
    (["check", "-n", "-3"], "-n: must be an integer from 0 up, got -3"),
    (["check", "--tol", "inf"], "--tol: must be a finite number > 0, got inf"),
    (["generate", "--temperature", "-1", "--out", "x.jsonl"], "--temperature: must be a finite number ≥ 0, got -1.0"),
    (["generate", "-n", "0", "--out", "x.jsonl"], "-n: must be an integer from 1 up, got 0"),
    (["generate", "--seed", "-1", "--out", "x.jsonl"], "--seed: must be an integer from 0 up, got -1"),
    (["generate", "--out", "."], "--out: . is a directory; give a new file name"),
    (["evaluate", "--data", "missing.jsonl"], "--data: missing.jsonl is missing"),
    (["evaluate", "--generator", "initial", "--out", "."], "--out: . is a directory; give a new file name"),
    (["evaluate", "--generator", "no/such/dir"], "--generator: no/such/dir is not a directory (a generator saved by "
                                                 "dpg train, or 'initial')"),
])
def test_cli_misuse_is_one_named_line(args, message, capsys):
    verb, *rest = args
    assert main([verb, "configs/quickstart.yaml", *rest]) == 2
    assert one_error_line(capsys) == f"dpg {verb}: error: {message}"


def test_plot_misuse_and_skipped_steps(reference, tmp_path, capsys):
    assert main(["plot", str(reference / "log.jsonl")]) == 2
    assert one_error_line(capsys) == f"dpg plot: error: RUN_DIR: {reference / 'log.jsonl'} is not a directory"
    assert main(["plot", str(reference), "--out", str(tmp_path)]) == 2
    assert one_error_line(capsys) == f"dpg plot: error: --out: {tmp_path} is a directory; give a new file name"
    run = tmp_path / "skipped"
    run.mkdir()
    rows = read_log(reference / "log.jsonl")
    rows[1] = {"step": 2, "reward_failed": "objective value Φ after inner SFT is nan"}
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 10_000


def test_generators_that_are_torn_or_weightless_are_named(reference, tmp_path, capsys):
    torn = tmp_path / "torn"
    shutil.copytree(reference / "final", torn)
    (torn / "model.safetensors").write_bytes((torn / "model.safetensors").read_bytes()[:500])
    unsigned = tmp_path / "unsigned"
    shutil.copytree(torn, unsigned)
    (unsigned / MANIFEST).unlink()
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    shutil.copy(reference / "final" / "config.json", weightless)
    for verb in ("generate", "evaluate"):
        for gen, why in ((torn, "model.safetensors has 500 bytes, its manifest says"),
                         (unsigned, "cannot be loaded (SafetensorError: Error while deserializing header"),
                         (weightless, "holds no weights (model.safetensors or ")):
            assert main([verb, "configs/quickstart.yaml", *FAST, "--generator", str(gen), "-n", "2",
                         *(["--out", str(tmp_path / "x.jsonl")] if verb == "generate" else [])]) == 2
            assert one_error_line(capsys).startswith(f"dpg {verb}: error: --generator {gen}: {why}")


def test_datasets_and_prompts_name_the_file_and_line(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"completion": "a"}\n{"completion": "b"\n')
    with pytest.raises(ValueError, match=rf"^{data} line 2: not JSON"):
        read_completions(data)
    data.write_text('{"completion": "a"}\n{"completion": null}\n')
    with pytest.raises(ValueError, match=rf"^{data} line 2: 'completion' is None, not text$"):
        read_completions(data)
    data.write_bytes(b'{"completion": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=rf"^{data}: not UTF-8 text"):
        read_completions(data)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Write about rivers:"}\n{"prompt": "Write\n')
    run = tmp_path / "run"
    assert train(run, f"prompts.source={prompts}") == 2
    assert one_error_line(capsys) == f"dpg train: error: prompts.source: {prompts} line 2 is not JSON " \
                                     "(Unterminated string starting at: line 1 column 12 (char 11))"
    assert not run.exists()


def test_a_chat_completion_without_text_is_an_error_naming_the_row():
    fn = reward_fn()
    completions = [[{"role": "assistant", "content": "The river."}]] * 8
    completions[5] = [{"role": "assistant", "content": [{"type": "text", "text": "The river."}]}]  # None is empty
    with pytest.raises(RuntimeError, match=r"completion 5: the assistant message's content is \[\{'type'.*, not text"):
        fn.score(["p"] * 8, completions, step=1)


def test_two_processes_cache_the_pretrained_generator_together(tmp_path):
    """Two runs started together on an empty cache: one pretrains, the other waits and loads the same directory."""
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import time, pathlib
        from dpg.training import models
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.01)
        print(models.pretrained_tiny_generator({str(tmp_path / 'cache')!r}, steps=20))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    cached = Path(paths.pop())
    assert (cached / "config.json").is_file() and (cached / "model.safetensors").is_file()
    assert sorted(p.name for p in cached.parent.iterdir()) == sorted([cached.name, cached.name + ".lock"])


def test_the_installed_command_reports_faults_in_one_line(reference, tmp_path):
    """The same guarantees through the `dpg` executable: a finished run (answered before torch loads), a bad flag."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    r = subprocess.run([str(DPG), "train", "--resume", str(run)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == f"{run} is finished: final/ holds step 4 of 4; nothing to do"
    r = subprocess.run([str(DPG), "check", "configs/quickstart.yaml", "--weights", "0"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == "dpg check: error: --weights: must be an integer from 1 up, got 0"
