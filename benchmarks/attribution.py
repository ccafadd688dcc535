"""Examples scored per second by `dpg attribute` for each estimator, on the embedded default (the quickstart's target
and objective) and on a ~5M-parameter GPT-2 target.

    python -m benchmarks.attribution                                  # both targets, every estimator
    python -m benchmarks.attribution --quick                          # the embedded default only, 128 examples
    python -m benchmarks.attribution --targets quickstart --examples 4096 --estimators metagrad

The workload is what `dpg attribute` runs once the data is tokenized: `score_examples` (dpg/tools/attribution.py)
over N examples in SFT runs of 32 (one reward call of the quickstart), one repeat; leave_group_out with 4 groups per
run. Embedded default: configs/quickstart.yaml (tiny target, Φ = −loss of " the river", AdamW, 8 examples per inner
step, so 4 steps per run) on lines of the shipped corpus cut to its max_length of 32 tokens. 5M:
metagrad_cost's 5M GPT-2 (vocabulary 1024) on random 24-token examples, Φ = −loss on a held-out batch, AdamW with
the same 8 examples per step. Wall and CPU seconds (time.process_time) of one call, one torch thread; on a shared
machine CPU time is the run's own work.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import time

import torch

from benchmarks.metagrad_cost import build_model, make_objective, n_params, random_ids, vocab_of
from dpg import InnerSFTConfig, MetagradEngine
from dpg.tools.attribution import ESTIMATORS, score_examples

RUN_SIZE, GROUPS, SEQ = 32, 4, 24


def quickstart():
    """(engine, examples) of the embedded default: the quickstart's target and objective, corpus lines as data."""
    from dpg.config.schema import load_config
    from dpg.training import assembly, models
    from dpg.training.rewards import to_target_examples

    cfg = load_config("configs/quickstart.yaml")
    engine, _, tok = assembly.build_engine(cfg)
    lines = models.corpus_lines()
    return engine, lambda n: to_target_examples([lines[i % len(lines)] for i in range(n)], tok,
                                                cfg.inner_sft.max_length)[0]


def gpt2_5m():
    model = build_model("5M")
    vocab = vocab_of(model)
    objective = make_objective(torch.tensor(random_ids(4, SEQ, seed=1, vocab=vocab)))
    cfg = InnerSFTConfig(optimizer="adamw", lr=1e-3, microbatch_size=8, grad_accum_steps=1, max_length=SEQ)
    return MetagradEngine(model, objective, cfg), lambda n: random_ids(n, SEQ, seed=0, vocab=vocab)


TARGETS = {"quickstart": quickstart, "5M": gpt2_5m}


def bench(engine, examples, estimator: str) -> dict:
    c0, w0 = time.process_time(), time.perf_counter()
    score_examples(engine, examples, estimator, run_size=RUN_SIZE, groups=GROUPS if estimator == "leave_group_out"
                   else None)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"examples": len(examples), "cpu": cpu, "wall": wall, "per_s": len(examples) / cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    p.add_argument("--estimators", nargs="+", choices=list(ESTIMATORS), default=list(ESTIMATORS))
    p.add_argument("--examples", type=int, nargs="+", default=None,
                   help="examples per target, in --targets order (default 256 for quickstart, 64 for 5M)")
    p.add_argument("--quick", action="store_true", help="the embedded default only, 128 examples")
    args = p.parse_args()
    env.set_threads(1)
    targets = ["quickstart"] if args.quick else args.targets
    sizes = [128] if args.quick else args.examples or [{"quickstart": 256, "5M": 64}[t] for t in targets]
    if len(sizes) != len(targets):
        p.error(f"--examples: give one count per target ({len(targets)})")
    print("| target | params | estimator | examples | CPU s | wall s | examples/s (CPU) | 4,096 examples (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for target, n in zip(targets, sizes):
        engine, make = TARGETS[target]()
        examples = make(n)
        score_examples(engine, examples[:RUN_SIZE], "metagrad", run_size=RUN_SIZE)  # warm-up
        for estimator in args.estimators:
            b = bench(engine, examples, estimator)
            print(f"| {target} | {n_params(engine.model) / 1e6:.2f}M | {estimator} | {b['examples']} | "
                  f"{b['cpu']:.1f} | {b['wall']:.1f} | {b['per_s']:.1f} | {4096 / b['per_s'] / 60:.1f} min |",
                  flush=True)


if __name__ == "__main__":
    main()
