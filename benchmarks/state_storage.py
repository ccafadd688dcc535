"""Memory against time for the reverse pass's state storage: memory / disk / recompute (`inner_sft.state_storage`).

The 1M tiny GPT-2 of `benchmarks/metagrad_cost.py` (whose machinery this reuses), AdamW, float32, 64 sequences × 64
tokens cut into T = 16 or 64 inner steps of one microbatch. For each strategy: median wall and CPU seconds of
`engine.run` (interleaved repeats in this process, one intra-op thread; wall time is what matters for `disk`, whose
writes run on a background thread) and the peak RSS increase of one run in a fresh process, next to plain SFT. All
strategies must return the same metagradients (checked here too, in float32 to 1e-5).

    python -m benchmarks.state_storage            # T = 16 and 64, 3 repeats (~5 min on 2 cores)
    python -m benchmarks.state_storage --quick    # T = 16, 1 repeat
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse

import torch

from benchmarks import metagrad_cost as mc
from dpg.engine.states import RecomputeStore

STRATEGIES = ("memory", "disk", "recompute")
N_EXAMPLES = 64


def case(steps: int, storage: str) -> mc.Case:
    return mc.Case("1M", steps, n_examples=N_EXAMPLES, microbatch=N_EXAMPLES // steps, storage=storage)


def measure(steps: int, repeats: int) -> list[list[str]]:
    benches = {s: mc.Bench(case(steps, s)) for s in STRATEGIES}  # same seed: the same weights in each
    grads = {s: b.run("engine") for s, b in benches.items()}  # warm-up, and the agreement check
    for s in STRATEGIES:
        if not torch.allclose(grads[s], grads["memory"], rtol=1e-5, atol=0):
            raise AssertionError(f"state_storage={s} disagrees with memory")
    runs = {"sft": lambda b=benches["memory"]: b.run("sft"),
            **{s: (lambda b=b: b.run("engine")) for s, b in benches.items()}}
    times = mc.time_interleaved(runs, repeats)
    del benches, runs  # free the models before the memory children run
    mc.release_memory()
    mem = {"sft": mc.measure_memory(case(steps, "memory"), ["sft"])["sft"],
           **{s: mc.measure_memory(case(steps, s), ["engine"])["engine"] for s in STRATEGIES}}
    w, c = times["wall"], times["cpu"]
    label = {"recompute": f"recompute (segment {RecomputeStore(steps, None, None).segment})"}
    return [[str(steps), label.get(s, s), f"{w[s]:.2f}", f"{w[s] / w['sft']:.2f}", f"{c[s]:.2f}",
             f"{mem[s]:.0f}", f"{mem[s] / mem['sft']:.1f}"] for s in w]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="T = 16 only, 1 repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = ap.parse_args()
    env.set_threads(args.threads)
    steps_list, repeats = ([16], 1) if args.quick else ([16, 64], args.repeats)
    print(mc.machine())
    rows = [row for steps in steps_list for row in measure(steps, repeats)]
    header = ["T", "strategy", "wall s", "wall ÷ SFT", "CPU s", "peak RSS increase MB", "memory ÷ SFT"]
    mc.print_table(f"1M target, {N_EXAMPLES} × 64 tokens, AdamW, float32; median of {repeats}", header, rows)
    print(mc.markdown(header, rows))


if __name__ == "__main__":
    main()
