"""The held-out-judge replication (docs/protocols/replication.md) as a resumable batch of cells, and its report.

    python -m experiments.replication --dry-list            # every planned cell in order, and which are done
    python -m experiments.replication                       # every cell not done yet, then the report
    python -m experiments.replication --jobs 2              # two worker processes share the cells
    python -m experiments.replication --only judge report   # scores and report from the committed samples alone
    python -m experiments.replication --studies l2_norm --seeds 100 101 --arms dpg_adamw naive

The plan (studies, seeds, arms, the cells' order) is experiments/replication_plan.py. Cells run seed-major, as the
protocol orders them: for each seed, for each study that plans it (100-107 everywhere, also 108-115 for l2_norm and
qr_code):

  train   experiments.run's run_one for dpg_adamw, then naive, at the bs256_m4 point (--set grpo.beta=0.04), into
          runs/replication/STUDY/ARM/seedS/ (resumed from its last checkpoint; nothing there is ever deleted);
  sample  1,024 completions with their prompts of the initial generator (once per study and seed) and of each
          arm's final one, sampling seed 20,000 + s: SAMPLES/STUDY/seedS/SET.jsonl.gz, and SET.json beside it
          (degeneration statistics and, for an arm, the compute that made it);
  select  select_4096 / select_40960: a pool of 4,096 / 40,960 completions of the initial generator (sampling seed
          30,000 / 40,000 + s), every one scored by `dpg.attribute` (metagrad under the dpg_adamw arm's inner SFT
          on its target, runs of 256, one repeat, seed s), the top 1,024 written in a random order (seed s);
  judge   every judge of experiments/judges.yaml on each sample set: SCORES/STUDY/seedS/SET.json.

SAMPLES and SCORES lie under docs/results/replication/. A cell writes its result file last and is skipped when the
file is there; a lock (runs/replication/.locks/) keeps a second process off a cell in progress. The optional arms
(--arms dpg_sgd control) wait until every required and selection cell of the whole plan is done, run dpg_sgd first,
and stop at the protocol's 16 MB sample budget. The `report` stage is experiments/replication_report.py: it reads
docs/results/replication/ alone and writes its tables there and into README.md and docs/results.md.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import fcntl
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dpg.run import fsio
from experiments.judge import POINT, POINT_SET, ROOT, judge, load_judges, read_samples, study_config
from experiments.replication_plan import (BUDGET_BYTES, DOCS, OPTIONAL, POOL_SEED, REQUIRED, SAMPLE_SEED,
                                          SELECTION, SET_BYTES, STAGES, STUDIES, Cell, plan, planned_seeds,
                                          samples_bytes)
from experiments.replication_report import PAGES, report

RUNS = ROOT / "runs" / "replication"


@dataclass
class Settings:
    """The sizes and places of a batch; the defaults are the protocol's (tests shrink them)."""

    steps: int | None = None  # GRPO steps; None: the point's (160: 40,960 examples in steps of 256)
    samples: int = 1024  # completions per sample set
    pools: dict = field(default_factory=lambda: {"select_4096": 4096, "select_40960": 40_960})
    run_size: int = 256  # examples per SFT run when a pool is scored
    eval_n: int = 256  # run_one's end-to-end evaluations along a run
    extra: tuple[str, ...] = ()  # config overrides after the point's
    runs: Path = RUNS
    docs: Path = DOCS


# -- where a cell's files lie -----------------------------------------------------------------------------------------


def run_dir(s: Settings, study: str, arm: str, seed: int) -> Path:
    return s.runs / study / arm / f"seed{seed}"


def samples_path(s: Settings, study: str, seed: int, name: str) -> Path:
    return s.docs / "samples" / study / f"seed{seed}" / f"{name}.jsonl.gz"


def set_stats_path(s: Settings, study: str, seed: int, name: str) -> Path:
    return s.docs / "samples" / study / f"seed{seed}" / f"{name}.json"


def scores_path(s: Settings, study: str, seed: int, name: str) -> Path:
    return s.docs / "scores" / study / f"seed{seed}" / f"{name}.json"


def result_path(cell: Cell, s: Settings) -> Path:
    """The file a cell writes last: it is done when this exists."""
    if cell.stage == "train":
        return run_dir(s, cell.study, cell.name, cell.seed) / "result.json"
    if cell.stage in ("sample", "select"):
        return set_stats_path(s, cell.study, cell.seed, cell.name)
    return scores_path(s, cell.study, cell.seed, cell.name)


def done(cell: Cell, s: Settings) -> bool:
    return result_path(cell, s).is_file()


def waiting(cell: Cell, s: Settings) -> str | None:
    """Why the cell cannot run yet (None: it can)."""
    if cell.stage == "sample" and cell.name != "initial" and not done(Cell("train", cell.study, cell.name,
                                                                            cell.seed), s):
        return "its training"
    if cell.stage == "judge" and not set_stats_path(s, cell.study, cell.seed, cell.name).is_file():
        return "its samples"
    if cell.name in OPTIONAL:
        if not all(done(c, s) for c in plan()):
            return "every required and selection cell"
        if cell.stage != "judge" and samples_bytes(s.docs) + SET_BYTES > BUDGET_BYTES:
            return f"room in the {BUDGET_BYTES / 1e6:.0f} MB sample budget"
    return None


# -- running cells ------------------------------------------------------------------------------------------------


@contextmanager
def cell_lock(path: Path):
    """Yields True while this process holds the lock file `path`, False when another process holds it. flock: the
    lock goes with the process, however it ends, so a killed worker never leaves a cell locked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def lock_path(cell: Cell, s: Settings) -> Path:
    return s.runs / ".locks" / f"{cell.stage}.{cell.study}.{cell.name}.seed{cell.seed}.lock"


def work(cells: list[Cell], s: Settings, poll: float = 30.0) -> list[Cell]:
    """Run every cell not done yet, the first runnable one in order each time; wait while another process holds a
    cell, return when nothing is left that could run. Returns the cells that failed (each reported as it fails)."""
    failed = []
    while True:
        pending = [c for c in cells if not done(c, s) and c not in failed]
        busy = False
        for cell in pending:
            if waiting(cell, s):
                continue
            with cell_lock(lock_path(cell, s)) as mine:
                if not mine:
                    busy = True
                    continue
                if not done(cell, s):  # another process may have finished it since `pending` was listed
                    print(f"[{cell}] starting", flush=True)
                    t0 = time.perf_counter()
                    try:
                        RUNNERS[cell.stage](cell, s)
                        print(f"[{cell}] done in {time.perf_counter() - t0:.0f} s", flush=True)
                    except Exception:
                        traceback.print_exc()
                        print(f"[{cell}] FAILED; its result file is not written, a rerun tries it again", flush=True)
                        failed.append(cell)
            break
        else:
            if not busy:
                return failed
            time.sleep(poll)


def train(cell: Cell, s: Settings) -> None:
    from experiments import run

    run.run_one(cell.study, cell.name, cell.seed, s.steps or run.point_steps(POINT), s.eval_n, s.runs,
                [*POINT_SET, *s.extra], POINT)


def sample(cell: Cell, s: Settings) -> None:
    from dpg.training import assembly, models

    cfg = study_config(cell.study, cell.seed, s.extra)
    if cell.name == "initial":
        model, tok = assembly.load_generator(cfg)
        info = {"generator": "initial"}
    else:
        out = run_dir(s, cell.study, cell.name, cell.seed)
        model, tok = models.load_model(str(out / "final"), role="generator"), models.load_tokenizer(str(out / "final"))
        info = {"generator": str(where(out / "final")), "compute": rl_compute(out)}
    rows = draw(cfg, model, tok, s.samples, SAMPLE_SEED + cell.seed)
    write_set(cell, s, rows, {**info, "sampling_seed": SAMPLE_SEED + cell.seed})


def select(cell: Cell, s: Settings) -> None:
    """The selection arm. The pool and `dpg attribute`'s files (its scores, one row per example in pool order, and
    their summary) stay in the arm's run directory, so that a crash resumes from them."""
    import torch

    import dpg
    from dpg.training import assembly

    cfg = study_config(cell.study, cell.seed, s.extra)  # the dpg_adamw arm's target and inner SFT
    out = run_dir(s, cell.study, cell.name, cell.seed)
    pool, pool_info, scores = out / "pool.jsonl.gz", out / "pool.json", out / "scores.jsonl"
    size, seed = s.pools[cell.name], POOL_SEED[cell.name] + cell.seed
    if not pool_info.is_file():
        model, tok = assembly.load_generator(cfg)
        t0 = time.perf_counter()
        write_gzip_jsonl(draw(cfg, model, tok, size, seed), pool)
        fsio.write_text(pool_info, json.dumps({"examples": size, "sampling_seed": seed,
                                               "seconds": time.perf_counter() - t0}) + "\n")
    if not scores.is_file():
        dpg.attribute(cfg, pool, estimator="metagrad", run_size=s.run_size, repeats=1, seed=cell.seed, out=scores,
                      verbosity="quiet")
    means = [json.loads(line)["score"] for line in scores.read_text().splitlines() if line.strip()]
    kept = sorted(range(len(means)), key=lambda i: (-means[i], i))[:s.samples]  # ties: the earlier example first
    order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(cell.seed)).tolist()
    rows = read_samples(pool)
    summary = json.loads((out / "scores.summary.json").read_text())
    runs = summary["runs_per_repeat"] * summary["repeats"]
    compute = {"examples_sampled": size, "sft_runs": runs, "sft_runs_with_metagradient": runs, "policy_updates": 0,
               "wall_seconds": json.loads(pool_info.read_text())["seconds"] + summary["seconds"]}
    write_set(cell, s, [rows[kept[i]] for i in order],
              {"generator": "initial", "pool": size, "sampling_seed": seed, "run_size": s.run_size,
               "compute": compute})


def judge_set(cell: Cell, s: Settings) -> None:
    from dpg.training.assembly import target_device

    judges, _ = load_judges()
    path = samples_path(s, cell.study, cell.seed, cell.name)
    texts = [row["completion"] for row in read_samples(path)]
    t0 = time.perf_counter()
    results = {name: judge(cell.study, cell.seed, texts, name, s.extra) for name in judges}
    record = {"study": cell.study, "seed": cell.seed, "set": cell.name, "samples": str(path.relative_to(s.docs)),
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "device": target_device().type,
              "seconds": time.perf_counter() - t0, "code": code_version(),
              "judges": results}
    out = scores_path(s, cell.study, cell.seed, cell.name)
    fsio.make_dir(out.parent)
    fsio.write_text(out, json.dumps(record, indent=1) + "\n")


RUNNERS = {"train": train, "sample": sample, "select": select, "judge": judge_set}


def draw(cfg, model, tok, n: int, seed: int) -> list[dict]:
    """n completions with their prompts ({"prompt", "completion"}), the study's prompts in turn, at its temperature."""
    from dpg.training import assembly, sampling

    return sampling.sample(model, tok, assembly.load_prompts(cfg), n, cfg.grpo.max_completion_length,
                           cfg.grpo.temperature, seed=seed, progress=False)


def write_gzip_jsonl(rows: list[dict], path: Path) -> Path:
    """gzip -9 JSONL with mtime 0 and no file name inside, so the same rows always give the same bytes; atomic."""
    fsio.make_dir(path.parent)
    data = gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"),
                         compresslevel=9, mtime=0)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with fsio.writing(path):
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def write_set(cell: Cell, s: Settings, rows: list[dict], info: dict) -> None:
    """The sample set, then its statistics (the cell's result file)."""
    path = write_gzip_jsonl(rows, samples_path(s, cell.study, cell.seed, cell.name))
    record = {"study": cell.study, "seed": cell.seed, "set": cell.name, "samples": len(rows),
              "bytes": path.stat().st_size, **info, "code": code_version(),
              "degeneration": degeneration([r["completion"] for r in rows])}
    fsio.write_text(set_stats_path(s, cell.study, cell.seed, cell.name), json.dumps(record, indent=1) + "\n")


def degeneration(texts: list[str]) -> dict:
    """dpg's collapse statistics of a sample set (dpg/training/degeneration.py) and the share of its most common
    completion."""
    from dpg.training.degeneration import text_stats

    return {**text_stats(texts), "most_common": Counter(texts).most_common(1)[0][1] / len(texts)}


def where(path: Path) -> Path:
    """PATH relative to the repository root where it lies below it (as a command from the root names it), as written
    or once resolved (runs/ may be a link to another disk)."""
    for p in (Path(path).absolute(), Path(path).resolve()):
        if p.is_relative_to(ROOT):
            return p.relative_to(ROOT)
    return path


def code_version() -> str:
    """The commit of the code that wrote a result (`+changes` where dpg/, objectives/ or experiments/ differ from it),
    so that every committed sample set and score names what produced it; `unknown` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "dpg", "objectives",
                                "experiments"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def rl_compute(out: Path) -> dict:
    """What an RL arm's run spent, from its directory: examples sampled, SFT runs (with a metagradient where the
    rewards are metagradients), policy updates and the GRPO steps' wall time."""
    from dpg.config.schema import load_config
    from dpg.run.checkpoints import CONFIG_FILE, LOG_FILE, read_log

    result = json.loads((out / "result.json").read_text())
    runs = sum(r.get("sft_runs", 0) for r in read_log(out / LOG_FILE))
    metagrad = load_config(out / CONFIG_FILE).reward.estimator == "metagrad"
    return {"examples_sampled": result["steps"] * result["completions_per_step"], "sft_runs": runs,
            "sft_runs_with_metagradient": runs if metagrad else 0, "policy_updates": result["steps"],
            "wall_seconds": result["step_seconds"]}


# -- the command ------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    p.add_argument("--seeds", nargs="+", type=int, help="default: every planned seed (a study runs only its own)")
    p.add_argument("--arms", nargs="+", choices=[*REQUIRED, *SELECTION, *OPTIONAL],
                   default=[*REQUIRED, *SELECTION], help="default: the required and selection arms")
    p.add_argument("--only", nargs="+", choices=[*STAGES, "report"], help="default: every stage, then the report")
    p.add_argument("--jobs", type=int, default=1, help="worker processes sharing the cells (default 1)")
    p.add_argument("--dry-list", action="store_true", help="print the cells in order and which are done; run nothing")
    args = p.parse_args(argv)
    unplanned = [x for x in args.seeds or () if not any(x in planned_seeds(st) for st in args.studies)]
    if unplanned:
        p.error(f"--seeds: {unplanned} not planned for {args.studies} (100-107; also 108-115 for l2_norm, qr_code)")
    if args.jobs < 1:
        p.error(f"--jobs: must be at least 1, got {args.jobs}")
    os.chdir(ROOT)  # configs name their data files relative to the repository root
    s = Settings()
    stages = args.only or [*STAGES, "report"]
    cells = plan(args.studies, args.seeds, args.arms, [x for x in stages if x != "report"])
    if args.dry_list:
        for cell in cells:
            print(f"{status(cell, s):<48} {cell}")
        finished = [c for c in cells if done(c, s)]
        per_stage = ", ".join(
            f"{stage} {sum(c.stage == stage for c in finished)}/{sum(c.stage == stage for c in cells)}"
            for stage in STAGES if any(c.stage == stage for c in cells))
        print(f"{len(finished)} of {len(cells)} cells done ({per_stage})")
        return 0
    failed = 0
    if cells and args.jobs > 1:
        worker = ["-m", "experiments.replication", "--jobs", "1", "--studies", *args.studies, "--arms", *args.arms,
                  "--only", *(x for x in stages if x != "report"), *(["--seeds", *map(str, args.seeds)]
                                                                      if args.seeds else [])]
        procs = []
        for _ in range(args.jobs):
            procs.append(subprocess.Popen([sys.executable, *worker]))
            time.sleep(2)  # each worker takes the first free cell it finds
        failed = sum(proc.wait() != 0 for proc in procs)
    elif cells:
        from dpg.run.console import quiet_libraries

        quiet_libraries("info")
        env.set_threads()
        failed = len(work(cells, s))
        if failed:
            print(f"{failed} cell(s) failed (above); rerun the command to retry them", flush=True)
    if "report" in stages:
        rep = report(s.docs, PAGES)
        print(f"wrote {s.docs / 'report.md'} and the blocks of {', '.join(str(p.relative_to(ROOT)) for p in PAGES)} "
              f"({'interim' if rep['interim'] else 'final'})")
    return 1 if failed else 0


def status(cell: Cell, s: Settings) -> str:
    if done(cell, s):
        return "done"
    why = waiting(cell, s)
    if why:
        return f"waits for {why}"
    with cell_lock(lock_path(cell, s)) as mine:
        return "to do" if mine else "running"


if __name__ == "__main__":
    sys.exit(main())
