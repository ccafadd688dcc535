"""What `--resume` may trust: checkpoints that prove they are whole, and a log that matches them.

Every checkpoint (and `final/`) ends with `dpg-manifest.json`, written last and atomically: the step and each
file's name, size and sha256. A folder whose manifest is missing, torn, or disagrees with its files, or that lacks
a file resuming needs, is not a checkpoint: `resume_point` skips it with a one-line warning saying why and falls back
to the previous one. The log is then cut back to the chosen step; a torn or missing line before it is an error.

Torch-free: `dpg plot` reads logs through here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dpg.run import fsio

# the files of a run directory (OUTPUT_DIR): its config as run, one JSON line per GRPO step, and the proof that a
# checkpoint or final/ is whole
CONFIG_FILE = "config.yaml"
LOG_FILE = "log.jsonl"
MANIFEST = "dpg-manifest.json"
# What HF's Trainer needs to continue exactly where it stopped (it silently skips any that is missing).
RESUME_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
RNG_FILE = re.compile(r"rng_state(_\d+)?\.pth")
CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)")


class RunDirError(ValueError):
    """A run directory that cannot be continued as it is (e.g. its log no longer matches its checkpoint)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: str | Path, step: int, resumable: bool) -> Path:
    """Record every file of `directory` (flushed to disk first), then the manifest itself, atomically, last.

    `resumable`: a training checkpoint, which must hold everything `--resume` needs."""
    directory = Path(directory)
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        with fsio.writing(path, "flushing"):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # the manifest must never be on disk before the files it vouches for
            finally:
                os.close(fd)
        files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    lacking = _lacking(files, resumable)
    if lacking:  # a save that silently left something out would resume wrongly later: refuse it now
        raise RuntimeError(f"{directory}: the save wrote no {lacking}; refusing to mark it complete")
    text = json.dumps({"step": step, "files": files}, indent=1)
    return fsio.write_text(directory / MANIFEST, text, "writing the manifest of")


def _lacking(files: dict, resumable: bool) -> str | None:
    if not any(w in files for w in WEIGHT_FILES):
        return f"weights ({' or '.join(WEIGHT_FILES)})"
    if resumable:
        for name in RESUME_FILES:
            if name not in files:
                return name
        if not any(RNG_FILE.fullmatch(name) for name in files):
            return "rng_state.pth"
    return None


def problem(directory: str | Path, resumable: bool = True, hashes: bool = True) -> str | None:
    """Why `directory` is not a whole checkpoint (one line), or None if every file matches its manifest.
    `hashes=False` checks names and sizes only (cheap: for deciding which old checkpoints to delete)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        step, files = manifest["step"], manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST} (its save never finished)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST} is unreadable ({type(err).__name__}: {err})"
    lacking = _lacking(files, resumable)
    if lacking:
        return f"lacks {lacking}, which resuming needs"
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, its manifest says {entry['size']} (truncated or replaced)"
        if hashes and _sha256(path) != entry["sha256"]:
            return f"{name} does not match the sha256 in its manifest (edited or corrupted)"
    m = CHECKPOINT_DIR.fullmatch(directory.name)
    if m and int(m.group(1)) != step:
        return f"its manifest is for step {step}, not {m.group(1)}"
    if "trainer_state.json" in files:
        state_step = json.loads((directory / "trainer_state.json").read_text(encoding="utf-8")).get("global_step")
        if state_step != step:
            return f"trainer_state.json says step {state_step}, its manifest says {step}"
    return None


def model_dir_problem(directory: str | Path) -> str | None:
    """Why `directory` is not a loadable generator: checked against its manifest when it has one (final/, a
    checkpoint), else for HF's config.json and weights. None if it looks whole."""
    directory = Path(directory)
    if not directory.is_dir():
        return "not a directory"
    if (directory / MANIFEST).exists():
        return problem(directory, resumable=False)
    if not (directory / "config.json").is_file():
        return "holds no config.json (not a saved model)"
    if not any((directory / w).is_file() for w in WEIGHT_FILES):
        return f"holds no weights ({' or '.join(WEIGHT_FILES)})"
    return None


def manifest_step(directory: str | Path) -> int:
    return json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))["step"]


def checkpoint_dirs(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint-N folder, newest first, whole or not."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("checkpoint-*")
             if (m := CHECKPOINT_DIR.fullmatch(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def latest(run_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies against its manifest (None if there is none)."""
    return next((p for _, p in checkpoint_dirs(run_dir) if problem(p) is None), None)


def rotate(run_dir: str | Path, keep: int) -> None:
    """Delete checkpoints older than the newest `keep` whole ones (by step, not by mtime). Each loses its manifest
    first, so one half-deleted by a crash reads as incomplete, never as whole."""
    whole = [step for step, path in checkpoint_dirs(run_dir) if problem(path, hashes=False) is None]
    if len(whole) <= keep:
        return
    for step, path in checkpoint_dirs(run_dir):
        if step < whole[keep - 1]:
            with fsio.writing(path, "deleting the old checkpoint"):
                (path / MANIFEST).unlink(missing_ok=True)
            fsio.remove_tree(path)


def run_files(run_dir: str | Path) -> list[str]:
    """The names of what a run wrote in `run_dir` (its config, log, checkpoints, final generator, pictures)."""
    run_dir = Path(run_dir)
    names = [CONFIG_FILE, LOG_FILE, "final", "pictures"] + [p.name for _, p in reversed(checkpoint_dirs(run_dir))]
    return [name for name in names if (run_dir / name).exists()] + sorted(p.name for p in _stale(run_dir))


def _stale(run_dir: Path) -> list[Path]:
    # what a killed save of final/ leaves (dpg.training.models.save_model's temporary and set-aside folders)
    return [*run_dir.glob("final.tmp-*"), *run_dir.glob("final.old-*")]


def clear_stale(run_dir: str | Path) -> None:
    for path in _stale(Path(run_dir)):
        fsio.remove_tree(path)


def clear_run(run_dir: str | Path) -> None:
    """`dpg train --overwrite`: delete what an earlier run wrote in `run_dir` (nothing else there is touched)."""
    for name in run_files(run_dir):
        path = Path(run_dir) / name
        if path.is_dir():
            fsio.remove_tree(path)
        else:
            with fsio.writing(path, "deleting"):
                path.unlink()


def finished(run_dir: str | Path, steps: int) -> str | None:
    """The line saying the run is finished (final/ whole, at step `steps` or later), or None if it is not."""
    final = Path(run_dir) / "final"
    if final.is_dir() and problem(final, resumable=False) is None and manifest_step(final) >= steps:
        return f"{run_dir} is finished: final/ holds step {manifest_step(final)} of {steps}; nothing to do"
    return None


@dataclass
class ResumePoint:
    checkpoint: Path | None  # the newest whole checkpoint; None: start from step 0
    step: int  # its step (0 without one)
    finished: str | None  # the run is finished (final/ whole, at the last step): this line says so; nothing to do
    warnings: list[str] = field(default_factory=list)  # one line per folder passed over, saying why


def resume_point(run_dir: str | Path, steps: int) -> ResumePoint:
    """Where `dpg train --resume` continues a run of `steps` GRPO steps."""
    run_dir = Path(run_dir)
    warnings = []
    done = finished(run_dir, steps)
    if done:
        return ResumePoint(None, manifest_step(run_dir / "final"), finished=done)
    final = run_dir / "final"
    if final.is_dir() and (why := problem(final, resumable=False)) is not None:
        warnings.append(f"{final} is not a whole generator ({why}); it will be written again")
    for step, path in checkpoint_dirs(run_dir):
        why = problem(path)
        if why is None:
            return ResumePoint(path, step, finished=None, warnings=warnings)
        warnings.append(f"skipping {path}: {why}")
    warnings.append(f"no complete checkpoint in {run_dir}: starting again from step 0")
    return ResumePoint(None, 0, finished=None, warnings=warnings)


def reconcile_log(path: str | Path, step: int) -> None:
    """Cut the log back to exactly steps 1..`step` (what the checkpoint holds); later lines are dropped, they run
    again. A line before that which is torn, missing or out of order is an error naming it: the run's record would
    otherwise be silently incomplete."""
    path = Path(path)
    if not path.exists():
        if step:
            raise RunDirError(f"{path} is missing, but the checkpoint is at step {step}; the log of steps "
                              f"1-{step} is gone")
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    keep = []
    for n, line in enumerate(lines, 1):
        if len(keep) == step:  # everything after the checkpoint's step (a torn last line too) runs again
            break
        try:
            logged = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            raise RunDirError(f"{path} line {n} is torn or not a log record ({line[:60]!r}); the checkpoint is at "
                              f"step {step}, so steps 1-{step} must all be whole") from None
        if logged != len(keep) + 1:
            raise RunDirError(f"{path} line {n} is step {logged}, expected step {len(keep) + 1}: a step's line is "
                              f"missing or out of order")
        keep.append(line)
    if len(keep) < step:
        raise RunDirError(f"{path} ends after step {len(keep)}, but the checkpoint is at step {step}: the lines of "
                          f"steps {len(keep) + 1}-{step} are missing")
    new = "".join(line + "\n" for line in keep)
    if new != text:
        fsio.write_text(path, new, "cutting back the log")


def read_log(path: str | Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The records of a run's JSONL log. A torn last line (a kill mid-write, or a run still writing it) is left out.
    A torn line anywhere else (a disk that filled up, a copy cut short) is an error naming it, or, given `warn`, left
    out with one line naming it passed to `warn`: reading a log to look at it (`dpg plot`) loses that step only.
    `--resume` does not read through here: `reconcile_log` refuses any torn line before the checkpoint's step."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no log at {path}" if not path.exists() else f"{path} is not a file")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if n == len(lines):
                break
            torn = f"{path} line {n} is torn or not JSON ({line[:60]!r})"
            if warn is None:
                raise RunDirError(torn) from None
            warn(f"{torn}; left out")
    return rows
