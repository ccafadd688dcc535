"""Judge the sweep's 1,024-completion generators by the SFT their cross-group rewards were exact for.

    python -m experiments.oneoff.eval_batch         # sixseven, seeds 0 1 2 -> docs/results/paper/bs1024_m16/eval_batch/
    python -m experiments.oneoff.eval_batch l2_norm # the same for l2_norm (the seeds whose four final generators exist)
    python -m experiments.oneoff.eval_batch l2_norm --runs runs/paper/bs1024_m16/replicate  # generators trained again

The primary endpoint of every point fine-tunes the target on 256 samples in 4 AdamW steps: exactly the SFT of an
inverse-group run at bs1024_m16 (4 runs of 256), a quarter of the cross-group one (1,024 samples, 16 steps). This
re-evaluates every arm's final generator of a seed with the cross-group arm's own config (`dpg_adamw`: 1,024 samples,
16 steps of 64), 2 repeats of fresh samples and SFT shuffles, against the initial generator; then pairs arms by seed.
A measurement made after the sweep's primary results, to explain them; not a pre-registered endpoint.
"""

from __future__ import annotations

from experiments import env  # noqa: F401  first: the environment before torch and transformers load

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dpg import api, stats
from dpg.config.schema import load_config
from experiments.plots import PRIMARY

ROOT = Path(__file__).resolve().parents[2]
POINT = "bs1024_m16"
ARMS = ["dpg_adamw", "dpg_sgd", "naive", "dpg_adamw_inverse"]
RUNS = ROOT / "runs" / "paper" / POINT  # RUNS / STUDY / ARM / seedS
OUT = ROOT / "docs" / "results" / "paper" / POINT / "eval_batch"


def evaluate(study: str, seed: int, runs: Path) -> dict:
    """ΔΦ of each arm's final generator (runs/STUDY/ARM/seedS/final) against the initial one, under the cross-group
    SFT (cached per seed), and the study's readable proxy per generator."""
    out, runs = OUT / f"{study}_seed{seed}.json", runs / study
    if not out.is_file():
        cfg = load_config(runs / "dpg_adamw" / f"seed{seed}" / "config.yaml")
        gens = ["initial", *(str(runs / arm / f"seed{seed}" / "final") for arm in ARMS)]
        result = api.evaluate(cfg, generators=gens, n=1024, repeats=2, seed=20000, verbosity="quiet")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    d = json.loads(out.read_text())
    delta = {Path(x["source"]).parents[1].name: x["phi"]["mean"] for x in d["differences"]}
    proxy = {Path(s["name"]).parents[1].name if s["name"] != "initial" else "initial":
             s["proxies"][PRIMARY[study][0]]["mean"] for s in d["sources"]}
    return {"delta": delta, "proxy": proxy}


def pm(mean: float, se: float) -> str:
    return f"{mean:+.3f} ± {se:.3f}"


def main(study: str = "sixseven", runs: Path | None = None) -> int:
    runs = runs or RUNS
    seeds = [s for s in (0, 1, 2) if all((runs / study / a / f"seed{s}" / "final").is_dir() for a in ARMS)]
    if not seeds:
        raise SystemExit(f"{study}: no seed has the final generators of all of {ARMS} under {runs / study}")
    res = {s: evaluate(study, s, runs) for s in seeds}
    delta = {arm: [res[s]["delta"][arm] for s in seeds] for arm in ARMS}  # per arm, in seed order
    print(f"{study} at {POINT}, evaluated with 1,024 samples and 16 AdamW steps (seeds {seeds}; mean ± SE over seeds)")
    print(f"| arm | ΔΦ per seed | ΔΦ | − naive's, paired | {PRIMARY[study][0].replace('_', ' ')} (initial " +
          f"{np.mean([res[s]['proxy']['initial'] for s in seeds]):.3f}) |\n|---|---|---|---|---|")
    for arm in ARMS:
        d, vs = delta[arm], "–"
        if arm != "naive":
            vs_naive = stats.paired(d, delta["naive"])
            vs = pm(vs_naive.mean, vs_naive.se)
        print(f"| {arm} | {' / '.join(f'{x:+.3f}' for x in d)} | {pm(*stats.mean_se(d))} | {vs} | "
              f"{np.mean([res[s]['proxy'][arm] for s in seeds]):.3f} |")
    inv = stats.paired(delta["dpg_adamw_inverse"], delta["dpg_adamw"])
    per_seed = " / ".join(f"{a - b:+.3f}" for a, b in zip(delta["dpg_adamw_inverse"], delta["dpg_adamw"]))
    print(f"\ndpg_adamw_inverse − dpg_adamw, paired: {pm(inv.mean, inv.se)} (per seed {per_seed})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("study", nargs="?", default="sixseven")
    parser.add_argument("--runs", type=Path, default=RUNS, help=f"the point's run directory (default {RUNS})")
    args = parser.parse_args()
    sys.exit(main(args.study, args.runs.resolve()))
