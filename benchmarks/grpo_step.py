"""Where one GRPO step's time goes on the embedded tiny default: generation, reward (the metagradient), policy update.

Runs ``dpg train configs/quickstart.yaml grpo.steps=N`` into a temporary output directory (a separate process, as a
user would), once per ``--threads`` value (``OMP_NUM_THREADS``: torch's intra-op threads), then reads the per-step
timings dpg's trainer logs to its JSONL (``dpg.training.trainer.read_log``): ``generation`` (sampling the completions,
decoding, tokenizing them for the target), ``reward`` (the engine: inner SFT + exact metagradients),
``policy_update`` (TRL's loss, backward and optimizer step) and ``total``, in wall seconds. The first step is reported
apart (lazy initialisation); medians and shares are over the others.

    python -m benchmarks.grpo_step                   # 10 GRPO steps with 1 and with 2 threads (~4 min, 2 shared cores)
    python -m benchmarks.grpo_step --steps 4 --threads 1
    python -m benchmarks.grpo_step --set inner_sft.microbatch_size=4 --config configs/quickstart.yaml
"""

from __future__ import annotations

from experiments import env  # noqa: F401  first: the environment before torch and transformers load

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("generation", "reward", "policy_update")


def run(args, threads: int) -> tuple[list[dict], float]:
    from dpg.run.checkpoints import LOG_FILE, read_log

    with tempfile.TemporaryDirectory(prefix="dpg-grpo-bench-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "dpg", "train", args.config, f"grpo.steps={args.steps}", f"output_dir={out}",
               f"checkpoint.save_every={args.steps}", *args.set]
        print(f"OMP_NUM_THREADS={threads} " + " ".join(["dpg", *cmd[3:]]), flush=True)
        child_env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # with experiments.env's settings of this process
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=child_env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"dpg train failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        rows = [r for r in read_log(out / LOG_FILE) if "seconds" in r]
    if len(rows) < 2:
        sys.exit(f"only {len(rows)} logged steps; need at least 2")
    return rows, wall


def report(rows: list[dict], wall: float, threads: int) -> dict:
    first, rest = rows[0]["seconds"], [r["seconds"] for r in rows[1:]]
    med = {k: statistics.median(s[k] for s in rest) for k in (*PARTS, "total")}
    print(f"\n{threads} thread(s): {len(rows)} GRPO steps in {wall:.0f}s wall (process start, models and setup "
          f"included); per step, wall seconds:\n")
    print(f"| part | first step | median of steps 2–{len(rows)} | min | max | share of the median total |")
    print("|---|---|---|---|---|---|")
    for k in (*PARTS, "total"):
        vals = [s[k] for s in rest]
        print(f"| {k} | {first[k]:.2f} | {med[k]:.2f} | {min(vals):.2f} | {max(vals):.2f} | "
              f"{med[k] / med['total']:.0%} |")
    print(f"\ninner SFT runs per reward call: {rows[-1].get('sft_runs')}\n")
    return med


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="OMP_NUM_THREADS of each run")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    args = p.parse_args()
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus (shared), python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    totals = {}
    for threads in args.threads:
        rows, wall = run(args, threads)
        totals[threads] = report(rows, wall, threads)["total"]
    if len(totals) > 1:
        print("median step: " + ", ".join(f"{t} thread(s) {s:.2f}s" for t, s in totals.items()))


if __name__ == "__main__":
    main()
