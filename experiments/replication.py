"""The held-out-judge replication (docs/protocols/replication.md) as a resumable batch of cells, and its report.

    python -m experiments.replication --dry-list            # every planned cell in order, and which are done
    python -m experiments.replication                       # every cell not done yet, then the report
    python -m experiments.replication --jobs 2              # two worker processes share the cells
    python -m experiments.replication --only judge report   # scores and report from the committed samples alone
    python -m experiments.replication --studies l2_norm --seeds 100 101 --arms dpg_adamw naive

Cells run seed-major, as the protocol orders them: for each seed, for each study that plans it (100-107 everywhere,
also 108-115 for l2_norm and qr_code):

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
and stop at the protocol's 16 MB sample budget. `report` reads docs/results/replication/ alone (below, `report`)
and writes its tables there and into README.md and docs/results.md, between their markers (`embed`).
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import fcntl
import gzip
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
import traceback
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dpg import stats
from dpg.run import fsio
from experiments.judge import POINT, POINT_SET, ROOT, judge, load_judges, read_samples, study_config

RUNS = ROOT / "runs" / "replication"
DOCS = ROOT / "docs" / "results" / "replication"
PAGES = (ROOT / "README.md", ROOT / "docs" / "results.md")  # their replication blocks come from report.json
STUDIES = ("l2_norm", "uuid", "belief", "language", "sixseven", "qr_code")
SEEDS = tuple(range(100, 108))
MORE_SEEDS = {"l2_norm": tuple(range(108, 116)), "qr_code": tuple(range(108, 116))}  # the two low-power studies
REQUIRED = ("dpg_adamw", "naive")
SELECTION = ("select_4096", "select_40960")
OPTIONAL = ("dpg_sgd", "control")  # in this order, after every required and selection cell
STAGES = ("train", "sample", "select", "judge")
SAMPLE_SEED = 20_000
POOL_SEED = {"select_4096": 30_000, "select_40960": 40_000}
BUDGET_BYTES = 16 * 10**6  # every committed sample set together
SET_BYTES = 40_000  # the protocol's bound on one sample set, to stop optional arms before the budget is passed
# The protocol's power at Holm's strictest level for the planned seeds, from the earlier batch's train-judge effects
# (upper bounds for held-out judges): quoted beside a tie.
PLANNED_POWER = {"l2_norm": "0.53", "qr_code": "≈ 1.0", "uuid": "≥ 0.99", "belief": "≥ 0.99",
                 "language": "≥ 0.99", "sixseven": "≥ 0.99"}


def planned_seeds(study: str) -> tuple[int, ...]:
    return SEEDS + MORE_SEEDS.get(study, ())


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


@dataclass(frozen=True)
class Cell:
    stage: str  # train | sample | select | judge
    study: str
    name: str  # the arm, or the sample set ("initial" or an arm)
    seed: int

    def __str__(self) -> str:
        return f"{self.stage} {self.study}/{self.name}/seed{self.seed}"


def plan(studies=STUDIES, seeds=None, arms=(*REQUIRED, *SELECTION), stages=STAGES) -> list[Cell]:
    """The cells of the batch in the protocol's order: seed-major; per (study, seed) the RL pair, its samples, the
    selection arms, then the judging; the optional arms last, each over every seed and study."""
    rl = [a for a in REQUIRED if a in arms]
    sel = [a for a in SELECTION if a in arms]
    order = sorted({s for study in studies for s in planned_seeds(study) if seeds is None or s in seeds})
    pairs = [(seed, study) for seed in order for study in studies if seed in planned_seeds(study)]
    cells = []
    for seed, study in pairs:
        cells += [Cell("train", study, a, seed) for a in rl]
        cells += [Cell("sample", study, x, seed) for x in ("initial", *rl)]
        cells += [Cell("select", study, a, seed) for a in sel]
        cells += [Cell("judge", study, x, seed) for x in ("initial", *rl, *sel)]
    for arm in (a for a in OPTIONAL if a in arms):
        cells += [Cell(stage, study, arm, seed) for seed, study in pairs for stage in ("train", "sample", "judge")]
    return [c for c in cells if c.stage in stages]


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


def samples_bytes(docs: Path) -> int:
    return sum(f.stat().st_size for f in (docs / "samples").glob("*/seed*/*.jsonl.gz"))


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


# -- the report ----------------------------------------------------------------------------------------------------


def load_scores(docs: Path) -> dict[tuple[str, str, int], dict[str, float]]:
    """(study, set, seed) -> {judge: score} from every committed score file."""
    out = {}
    for f in sorted((docs / "scores").glob("*/seed*/*.json")):
        d = json.loads(f.read_text())
        out[(d["study"], d["set"], d["seed"])] = {j: v["mean"] for j, v in d["judges"].items()}
    return out


def load_set_stats(docs: Path) -> dict[tuple[str, str, int], dict]:
    out = {}
    for f in sorted((docs / "samples").glob("*/seed*/*.json")):
        d = json.loads(f.read_text())
        out[(d["study"], d["set"], d["seed"])] = d
    return out


def compare(scores: dict, study: str, judge_name: str, a: str, b: str, analyse: bool) -> dict:
    """J(a) − J(b) of one judge, paired by seed over the seeds both sets have; with `analyse` also the paired t
    test (dpg.stats.paired) and the sign test."""
    seeds = [s for s in planned_seeds(study) if (study, a, s) in scores and (study, b, s) in scores]
    diffs = [scores[(study, a, s)][judge_name] - scores[(study, b, s)][judge_name] for s in seeds]
    out = {"judge": judge_name, "a": a, "b": b, "seeds": seeds, "differences": diffs}
    if analyse and diffs:
        d = stats.paired([scores[(study, a, s)][judge_name] for s in seeds],
                         [scores[(study, b, s)][judge_name] for s in seeds])
        out |= {k: _finite(v) for k, v in d.to_dict().items()} | {"sign_p": stats.sign_test_p(d.wins, d.losses)}
    return out


def holm_family(results: dict[str, dict], final: bool) -> None:
    """Holm's adjustment over the studies of one family, in place (only when every study is complete: the family is
    the six studies). A study with fewer than two pairs has no p; it enters Holm as p = 1."""
    if not final:
        return
    ps = [r["p"] if r.get("p") is not None else 1.0 for r in results.values()]
    for r, adjusted in zip(results.values(), stats.holm(ps)):
        r["holm_p"] = adjusted


def decide(r: dict) -> str:
    """The protocol's rule: win / loss where Holm's p < 0.05 and the mean difference is positive / negative."""
    if "mean" not in r:  # a complete study whose pairs were all lost to missing runs
        return "no pair"
    if r["holm_p"] < 0.05 and r["mean"] > 0:
        return "win"
    if r["holm_p"] < 0.05 and r["mean"] < 0:
        return "loss"
    return "tie"


def report(docs: Path = DOCS, pages: tuple[Path, ...] = ()) -> dict:
    """The pre-registered analysis from the committed files under `docs` alone: report.json, report.md and
    paired.png there, and the same blocks in `pages` (README, docs/results.md) between their markers (`embed`). A
    study is complete when every planned (set, seed) of its required and selection arms has scores, or is listed as
    missing in missing.json ({"STUDY/SET/seedS": why}); until all six are complete the report is interim:
    incomplete studies show their per-seed differences only, and no study gets a win, tie or loss (Holm's family is
    the six studies)."""
    judges, primary = load_judges()
    scores, set_stats = load_scores(docs), load_set_stats(docs)
    missing_file = docs / "missing.json"
    missing = json.loads(missing_file.read_text()) if missing_file.is_file() else {}
    complete = {}
    for study in STUDIES:
        cells = plan([study], stages=["judge"])
        complete[study] = all((study, c.name, c.seed) in scores and set(scores[(study, c.name, c.seed)]) >= set(judges)
                              or f"{study}/{c.name}/seed{c.seed}" in missing for c in cells)
    final = all(complete.values())

    endpoint = {}
    for study in STUDIES:
        r = compare(scores, study, primary[study], "dpg_adamw", "naive", complete[study])
        r |= {"complete": complete[study], "planned_seeds": len(planned_seeds(study))}
        if complete[study] and r["seeds"]:
            gains = [scores[(study, "naive", s)][r["judge"]] - scores[(study, "initial", s)][r["judge"]]
                     for s in r["seeds"] if (study, "initial", s) in scores]
            gain = stats.mean_se(gains)[0] if gains else None
            r |= {"naive_gain": gain, "effect_in_naive_gains": r["mean"] / gain if gain else None}
        endpoint[study] = r
    holm_family(endpoint, final)
    if final:
        for r in endpoint.values():
            r["decision"] = decide(r)

    families = {}
    for name in judges:
        families[f"dpg_adamw − naive, judge {name}"] = {
            study: compare(scores, study, name, "dpg_adamw", "naive", complete[study]) for study in STUDIES}
    for a, b in (("dpg_adamw", "select_40960"), ("dpg_adamw", "select_4096"), ("select_40960", "naive"),
                 ("select_4096", "naive")):
        families[f"{a} − {b}, primary judge"] = {
            study: compare(scores, study, primary[study], a, b, complete[study]) for study in STUDIES}
    for family in families.values():
        holm_family(family, final)

    sets = [x for x in ("initial", *REQUIRED, *SELECTION, *OPTIONAL) if any(k[1] == x for k in set_stats)]
    degen, compute = {}, {}
    for study in STUDIES:
        for name in sets:
            rows = [d for (st, n, _), d in set_stats.items() if st == study and n == name]
            if rows:
                degen.setdefault(study, {})[name] = _means([r["degeneration"] for r in rows])
                if all("compute" in r for r in rows):
                    compute.setdefault(study, {})[name] = _means([r["compute"] for r in rows])
    out = {
        "interim": not final, "complete": complete, "primary_judges": primary, "missing": missing,
        "optional_arms_run": [a for a in OPTIONAL if any(k[1] == a for k in scores)],
        "samples_bytes": samples_bytes(docs),
        "primary": endpoint, "secondary": families, "degeneration": degen, "compute": compute,
    }
    fsio.make_dir(docs)
    fsio.write_text(docs / "report.json", json.dumps(out, indent=1) + "\n")
    fsio.write_text(docs / "report.md", markdown(out, judges))
    for page in pages:
        embed(page, blocks(out))
    if scores:
        figure(scores, judges, primary, complete, docs / "paired.png")
    return out


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _means(rows: list[dict]) -> dict:
    """Per key, the mean over the rows of its non-null values, and how many rows there were."""
    keys = [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows)]
    return {k: (sum(v) / len(v) if (v := [r[k] for r in rows if r.get(k) is not None]) else None) for k in keys} | {
        "seeds": len(rows)}


def _pm(r: dict, key: str = "mean", digits: int = 4) -> str:
    se = r.get("se")
    return f"{r[key]:+.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")


def blocks(rep: dict) -> dict[str, list[str]]:
    """The report's tables as markdown lines, by name: what report.md is made of, and what README.md (the
    headline: each study's decision) and docs/results.md embed between their `<!-- replication:NAME -->` markers.
    A function of report.json alone."""
    primary = ["| study | judge | complete | pairs / planned | mean D ± SE | t | p | Holm p | decision | + / − / = "
               "| sign p | effect (naive's gains) |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for study, r in rep["primary"].items():
        n = f"{len(r['seeds'])} / {r['planned_seeds']}"
        if "mean" not in r:
            primary.append(f"| {study} | {r['judge']} | no | {n} | | | | | | | | |")
            continue
        decision = r.get("decision", "")
        if decision == "tie":
            decision = f"tie (planned power {PLANNED_POWER[study]}, an upper bound)"
        eff = r.get("effect_in_naive_gains")
        primary.append(f"| {study} | {r['judge']} | {'yes' if r['complete'] else 'no'} | {n} | {_pm(r)} | "
                       f"{_num(r['t'], '.2f')} | {_num(r['p'], '.3g')} | {_num(r.get('holm_p'), '.3g')} | "
                       f"{decision} | {r['wins']} / {r['losses']} / {r['ties']} | {r['sign_p']:.3g} | "
                       f"{_num(eff, '+.2f')} |")
    primary += ["", "Per-seed D (primary judge), seed: value", ""]
    for study, r in rep["primary"].items():
        values = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(r["seeds"], r["differences"])) or "none yet"
        primary.append(f"- {study}: {values}")

    def families(names) -> list[str]:
        lines = []
        for family in names:
            lines += [f"**{family}**", "", "| study | pairs | mean ± SE | p | Holm p | + / − / = |",
                      "|---|---|---|---|---|---|"]
            for study, r in rep["secondary"][family].items():
                if "mean" in r:
                    lines.append(f"| {study} | {len(r['seeds'])} | {_pm(r)} | {_num(r['p'], '.3g')} | "
                                 f"{_num(r.get('holm_p'), '.3g')} | {r['wins']} / {r['losses']} / {r['ties']} |")
                else:
                    values = ", ".join(f"{d:+.4f}" for d in r["differences"]) or "none yet"
                    lines.append(f"| {study} | {len(r['seeds'])} | per seed: {values} | | | |")
            lines.append("")
        return lines[:-1]

    by_judge = [f for f in rep["secondary"] if f.startswith("dpg_adamw − naive, judge ")]
    selection = [f for f in rep["secondary"] if f not in by_judge]
    degeneration = ["| study | set | seeds | distinct-2 | empty | most common completion | mean words |",
                    "|---|---|---|---|---|---|---|"]
    for study, by_set in rep["degeneration"].items():
        for name, d in by_set.items():
            degeneration.append(f"| {study} | {name} | {d['seeds']} | {_num(d['distinct_2'], '.3f')} | "
                                f"{d['empty']:.3f} | {d['most_common']:.3f} | {d['mean_words']:.2f} |")
    compute = ["| study | arm | seeds | examples sampled | SFT runs | with a metagradient | policy updates "
               "| wall time (s) |",
               "|---|---|---|---|---|---|---|---|"]
    for study, by_arm in rep["compute"].items():
        for name, c in by_arm.items():
            compute.append(f"| {study} | {name} | {c['seeds']} | {c['examples_sampled']:.0f} | {c['sft_runs']:.0f} | "
                           f"{c['sft_runs_with_metagradient']:.0f} | {c['policy_updates']:.0f} | "
                           f"{c['wall_seconds']:.0f} |")
    optional = ", ".join(rep["optional_arms_run"]) or "none"
    status = ("**Interim.** Not every planned cell is complete, so no study is given a win, tie or loss (Holm's "
              "family is the six studies); incomplete studies show their per-seed differences only."
              if rep["interim"] else "**Final.** Every planned cell of every study is complete (or listed as missing).")
    pairs = sum(len(r["seeds"]) for r in rep["primary"].values())
    planned = sum(r["planned_seeds"] for r in rep["primary"].values())
    if rep["interim"]:
        headline = (f"*Interim*: {pairs} of {planned} planned (study, seed) pairs are complete; until every one is, "
                    "the protocol gives no study a win, tie or loss.")
    else:
        headline = "; ".join(
            f"**{study}: {r['decision']}**" + (f" ({r['mean']:+.3g} ± {r['se']:.2g}, {len(r['seeds'])} seeds)"
                                                if "mean" in r else "")
            for study, r in rep["primary"].items()) + "."
    return {"status": [status], "headline": [headline], "primary": primary, "judges": families(by_judge), "selection": families(selection),
            "degeneration": degeneration, "compute": compute,
            "budget": [f"Optional arms run: {optional}. Committed samples: {rep['samples_bytes'] / 1e6:.2f} MB of the "
                       f"{BUDGET_BYTES / 1e6:.0f} MB budget. Missing cells: {rep['missing'] or 'none'}."]}


def markdown(rep: dict, judges: dict) -> str:
    b = blocks(rep)
    lines = ["# The held-out-judge replication: report", "",
             "Pre-registered in docs/protocols/replication.md; rebuilt from the committed samples and scores by "
             "`python -m experiments.replication --only report`.", "", *b["status"], "",
             "## Primary endpoint: D = J(dpg_adamw) − J(naive), paired by seed", "",
             "J is the study's primary judge; p from the two-sided paired t test over seeds, Holm-adjusted over the "
             "six studies; the sign test is exact and two-sided; the effect is mean D ÷ the mean over seeds of "
             "J(naive) − J(initial).", "", *b["primary"], "",
             "## Secondary comparisons (reported, no headline claim)", "",
             "Each family is Holm-corrected over the six studies on its own. The family of a judge holds that "
             "judge's dpg_adamw − naive in every study; where the judge is the study's primary one, the entry "
             "repeats the primary endpoint. Held-out-target judges on sixseven and qr_code measure transfer.", "",
             *b["judges"], "", *b["selection"], "",
             "## Degeneration of the sample sets (mean over seeds; reported, not tested)", "", *b["degeneration"], "",
             "## Compute per run (mean over seeds)", "", *b["compute"], "", *b["budget"], "",
             "Judges: " + "; ".join(f"`{j.name}` ({j.role})" for j in judges.values()) + ".",
             "", "![every seed's paired difference per study and judge](paired.png)", ""]
    return "\n".join(lines)


MARKER = re.compile(r"(<!-- replication:(\w+) -->\n)(.*?)(<!-- /replication:\2 -->)", re.S)


def embed(page: Path, tables: dict[str, list[str]]) -> None:
    """Writes each named block between its `<!-- replication:NAME -->` and `<!-- /replication:NAME -->` markers in
    `page` (a blank line either side, so the markdown around it renders as tables). A marker without its end, or a
    name that is not a block, is an error naming it: a page whose tables could go stale must not pass silently."""
    text = page.read_text()
    opened = re.findall(r"<!-- replication:(\w+) -->", text)
    closed = set(re.findall(r"<!-- /replication:(\w+) -->", text))
    for name in opened:
        if name not in tables:
            raise ValueError(f"{page}: <!-- replication:{name} --> names no report block (known: {sorted(tables)})")
        if name not in closed:
            raise ValueError(f"{page}: <!-- replication:{name} --> has no <!-- /replication:{name} --> after it")
    fsio.write_text(page, MARKER.sub(lambda m: m.group(1) + "\n" + "\n".join(tables[m.group(2)]) + "\n\n" + m.group(4),
                                     text))


def _num(v, spec: str) -> str:
    return "" if v is None else f"{v:{spec}}"


def figure(scores: dict, judges: dict, primary: dict, complete: dict, path: Path) -> Path:
    """Per study, every seed's J(dpg_adamw) − J(naive) under each judge (dots), the primary judge in colour; for a
    complete study also the mean ± 2 SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(judges)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    for ax, study in zip(axes.flat, STUDIES):
        pairs = 0
        for i, name in enumerate(names):
            d = compare(scores, study, name, "dpg_adamw", "naive", False)["differences"]
            pairs = max(pairs, len(d))
            color = "C3" if name == primary[study] else "C0"
            ax.scatter([i] * len(d), d, color=color, s=14, alpha=0.6)
            if complete[study] and len(d) > 1:
                m, se = stats.mean_se(d)
                ax.errorbar(i + 0.25, m, yerr=2 * se, color=color, marker="_", ms=12, capsize=3)
        ax.axhline(0, color="gray", lw=0.7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        state = "complete" if complete[study] else "interim"
        ax.set_title(f"{study} ({pairs} of {len(planned_seeds(study))} seeds, {state}; red: primary)", fontsize=9)
    axes[0][0].set_ylabel("J(dpg_adamw) − J(naive), by seed\n(bar: mean ± 2 SE, complete studies)", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


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
        print(f"{sum(done(c, s) for c in cells)} of {len(cells)} cells done")
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
