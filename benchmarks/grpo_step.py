"""Where one GRPO step's time goes on the embedded tiny default: generation, reward (the metagradient), policy update.

Runs ``dpg train configs/quickstart.yaml grpo.steps=N`` into a temporary output directory (a separate process, as a
user would), then reads the per-step timings dpg's trainer logs to its JSONL (``dpg.trainer.read_log``):
``generation`` (sampling the completions, decoding, tokenizing them for the target), ``reward`` (the engine:
inner SFT + exact metagradients), ``policy_update`` (TRL's loss, backward and optimizer step) and ``total``. The first
step is reported apart (lazy initialisation); medians and shares are over the others.

    python benchmarks/grpo_step.py                     # 10 GRPO steps (~2 min on 2 shared cores)
    python benchmarks/grpo_step.py --steps 4           # quicker
    python benchmarks/grpo_step.py --set inner_sft.microbatch_size=4 --config configs/quickstart.yaml
"""

from __future__ import annotations

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "quickstart.yaml"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    p.add_argument("--keep", metavar="DIR", help="write the run here and keep it (default: a temporary directory)")
    args = p.parse_args()

    from dpg.trainer import LOG_FILE, read_log

    with tempfile.TemporaryDirectory(prefix="dpg-grpo-bench-") as tmp:
        out = Path(args.keep or tmp) / "run"
        cmd = [sys.executable, "-m", "dpg", "train", args.config, f"grpo.steps={args.steps}", f"output_dir={out}",
               f"checkpoint.save_every={args.steps}", *args.set]
        print(" ".join(cmd[1:]), flush=True)
        env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"dpg train failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        rows = [r for r in read_log(out / LOG_FILE) if "seconds" in r]

    if len(rows) < 2:
        sys.exit(f"only {len(rows)} logged steps; need at least 2")
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} cpus (shared), python {platform.python_version()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    first, rest = rows[0]["seconds"], [r["seconds"] for r in rows[1:]]
    med = {k: statistics.median(s[k] for s in rest) for k in (*PARTS, "total")}
    print(f"\n{len(rows)} GRPO steps in {wall:.0f}s wall (process start, models and setup included); "
          f"per step, wall seconds:")
    print(f"| part | first step | median of steps 2–{len(rows)} | min | max | share of the median total |")
    print("|---|---|---|---|---|---|")
    for k in (*PARTS, "total"):
        vals = [s[k] for s in rest]
        print(f"| {k} | {first[k]:.2f} | {med[k]:.2f} | {min(vals):.2f} | {max(vals):.2f} | {med[k] / med['total']:.0%} |")
    runs = rows[-1].get("sft_runs")
    print(f"\ninner SFT runs per reward call: {runs}; the three parts sum to "
          f"{sum(med[k] for k in PARTS) / med['total']:.0%} of the median total (medians need not add up)")


if __name__ == "__main__":
    main()
