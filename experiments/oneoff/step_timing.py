"""Seconds per GRPO step of the paper regime on this machine, per batch-size point and arm, and the wall time of the
paper-regime batch that they imply.

    python -m experiments.oneoff.step_timing             # docs/results/paper/step_seconds.json; ~15 min on one loaded core
    python -m experiments.oneoff.step_timing --estimate  # only the estimate again, from the recorded timings (a new PLAN)

For each (point, study, arm) of MEASURE: `dpg.training.trainer.train` of the study at that point exactly as
`python -m experiments.run STUDY --point POINT --arms ARM --seeds 0` sets it up, for STEPS GRPO steps into a
temporary directory, and the logged seconds of each step (generation, reward, policy update, total). Step 1 also
pays for start-up, so a step's cost is the mean over steps 2…STEPS. One end-to-end evaluation per point (`run.evaluate`
of the initial generator: 256 samples, a fresh inner SFT, Φ and proxies) is timed too. The machine is shared: its
load average is recorded before and after, and timings vary 2-4× with it.

The estimate of the batch (PLAN), in hours of one core: for each run, steps × its seconds per step + 5 evaluations
(initial, 3 checkpoints, final). A step is priced by its own (point, study, arm) where measured, else by the l2_norm
one of its point and arm (the reward is a small part of a step, see the rows), or of the arm of the same cost (ALIKE).
The pretraining of the generators and targets (once per seed, cached) is left out: ~25 s each. `loo` is measured but
not planned: at the main point its reward alone takes over a minute a step (257 SFT runs).
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dpg.config.schema import load_config
from dpg.run.checkpoints import LOG_FILE, read_log
from dpg.training import trainer
from experiments.run import DOCS, MAIN_POINT, POINTS, ROOT, arm_overrides, config_path, evaluate, point_steps

STEPS = 3
OUT = DOCS / "paper" / "step_seconds.json"
REWARD_ARMS = ["dpg_adamw", "dpg_sgd", "naive", "first_order", "leave_group_out"]  # one per reward cost
MEASURE = ([(p, "l2_norm", a) for p in POINTS for a in REWARD_ARMS]
           + [(p, "l2_norm", "loo") for p in ("bs64_m1", MAIN_POINT)]  # 1,025 SFT runs of 16 steps: not at bs1024
           + [("bs1024_m16", "l2_norm", "dpg_adamw_inverse")]
           + [(MAIN_POINT, "language", a) for a in ("dpg_adamw", "levenshtein", "embedding", "langid")])
ALIKE = {"control": "dpg_adamw"}  # an unmeasured arm costs what this one does (same estimator and batching)

SEEDS = 3
STUDIES = ["sixseven", "qr_code", "l2_norm", "language", "uuid", "belief"]
MAIN_ARMS = ["dpg_adamw", "dpg_sgd", "naive", "first_order", "control", "leave_group_out"]
PLAN = ([(MAIN_POINT, s, a) for s in STUDIES for a in MAIN_ARMS]
        + [(MAIN_POINT, "language", a) for a in ("levenshtein", "embedding", "langid")]
        + [(p, s, a) for p in POINTS if p != MAIN_POINT for s in ("sixseven", "l2_norm")
           for a in ("dpg_adamw", "dpg_sgd", "naive")]
        + [("bs1024_m16", s, "dpg_adamw_inverse") for s in ("sixseven", "l2_norm")])


def time_steps(point: str, study: str, arm: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(config_path(study), [*arm_overrides(arm, point), f"grpo.steps={STEPS}", "seed=0",
                                               "checkpoint.save_every=1000", f"output_dir={tmp}/run"])
        trainer.train(cfg, verbosity="quiet")
        rows = read_log(Path(tmp) / "run" / LOG_FILE)
    later = [r["seconds"] for r in rows[1:]]
    return {"point": point, "study": study, "arm": arm, "completions": cfg.grpo.completions_per_step,
            "first_step": rows[0]["seconds"]["total"],
            "seconds": {k: statistics.mean(s[k] for s in later) for k in later[0]}}


def time_evaluation(point: str) -> float:
    base = load_config(config_path("l2_norm"), [*arm_overrides("dpg_adamw", point), "seed=0"])
    t0 = time.perf_counter()
    evaluate("l2_norm", base, "initial", 0, 4 * POINTS[MAIN_POINT], 0)
    return time.perf_counter() - t0


def estimate(rows: list[dict], evals: dict[str, float]) -> dict:
    """Hours of the PLAN, per point and in all, from the measured seconds per step (study-independent except the
    heuristic arms, measured on language)."""
    cost = {(r["point"], r["study"], r["arm"]): r["seconds"]["total"] for r in rows}
    hours: dict[str, float] = {}  # "point arm" -> hours over its studies and seeds
    for point, study, arm in PLAN:
        step = cost.get((point, study, arm)) or cost.get((point, "l2_norm", ALIKE.get(arm, arm)))
        if step is None:
            raise SystemExit(f"no measured step for {arm} at {point}: add it to MEASURE or ALIKE")
        key = f"{point} {arm}"
        hours[key] = hours.get(key, 0) + SEEDS * (point_steps(point) * step + 5 * evals[point]) / 3600
    return {"runs": len(PLAN) * SEEDS, "hours": sum(hours.values()), "hours_per_point_and_arm": hours}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--estimate", action="store_true", help="only recompute the estimate from the recorded timings")
    if p.parse_args(argv).estimate:
        record = json.loads(OUT.read_text())
        record["estimate"] = estimate(record["rows"], record["eval_seconds"])
        OUT.write_text(json.dumps(record, indent=1))
        print(json.dumps(record["estimate"], indent=1), f"\nwrote {OUT}")
        return 0
    env.set_threads()
    os.chdir(ROOT)  # configs name their data files relative to the repository root
    load_before, t0 = os.getloadavg(), time.perf_counter()
    rows = []
    for point, study, arm in MEASURE:
        rows.append(time_steps(point, study, arm))
        s = rows[-1]["seconds"]
        print(f"{point} {study} {arm}: {s['total']:.2f} s/step (generation {s['generation']:.2f}, reward "
              f"{s['reward']:.2f}, policy update {s['policy_update']:.2f}); load {os.getloadavg()[0]:.1f}", flush=True)
    evals = {p: time_evaluation(p) for p in POINTS}
    record = {"command": "python -m experiments.oneoff.step_timing", "steps": STEPS, "machine": f"{os.cpu_count()} cores, "
              "shared with other jobs, one torch thread per process", "load_before": load_before,
              "load_after": os.getloadavg(), "rows": rows, "eval_seconds": evals,
              "estimate": estimate(rows, evals), "seconds": time.perf_counter() - t0}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=1))
    print(json.dumps(record["estimate"], indent=1), f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
