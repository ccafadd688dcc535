"""Φ's per second: `MetagradEngine.values` (one vmapped inner run over R weight rows) against R sequential
`engine.value` calls, side by side in one run, with the results checked equal.

    python -m benchmarks.values_batched               # tiny target (the embedded default's size) and 1M and 5M
    python -m benchmarks.values_batched --models 0.1M --rows 8 33

The workload is what `loo` / `leave_group_out` ask for: R rows of weights over N = 32 examples of 24 tokens, each row
one example (or group) removed, one AdamW step of 4 microbatches of 8. CPU time, medians of interleaved repeats
(metagrad_cost.time_interleaved), one thread.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse

import torch

from benchmarks.metagrad_cost import build_model, make_objective, random_ids, time_interleaved, vocab_of
from dpg import InnerSFTConfig, MetagradEngine

N, SEQ = 32, 24


def bench(model_name: str, rows: int, repeats: int) -> dict:
    model = build_model(model_name)
    vocab = vocab_of(model)
    objective = make_objective(torch.tensor(random_ids(4, SEQ, seed=1, vocab=vocab)))
    cfg = InnerSFTConfig(optimizer="adamw", lr=1e-3, microbatch_size=8, grad_accum_steps=4, max_length=SEQ)
    engine = MetagradEngine(model, objective, cfg)
    examples = random_ids(N, SEQ, seed=0, vocab=vocab)
    W = torch.ones(rows, N)
    W[torch.arange(rows), torch.arange(rows) % N] = 0
    batched = engine.values(examples, W)
    sequential = torch.tensor([engine.value(examples, w) for w in W], dtype=torch.float64)
    err = ((batched - sequential).abs().max() / sequential.abs().max()).item()
    t = time_interleaved({"sequential": lambda: [engine.value(examples, w) for w in W],
                          "batched": lambda: engine.values(examples, W)}, repeats)["cpu"]
    return {"model": model_name, "params": sum(p.numel() for p in model.parameters()), "rows": rows,
            "phi_per_s_sequential": rows / t["sequential"], "phi_per_s_batched": rows / t["batched"],
            "speedup": t["sequential"] / t["batched"], "max_rel_diff": err}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["0.1M", "1M", "5M"])
    p.add_argument("--rows", nargs="+", type=int, default=[8, 33])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    env.set_threads()
    print("| model | params | rows | Φ/s sequential | Φ/s batched | batched ÷ sequential | max rel. diff (fp32) |")
    print("|---|---|---|---|---|---|---|")
    for m in args.models:
        for r in args.rows:
            b = bench(m, r, args.repeats)
            print(f"| {b['model']} | {b['params'] / 1e6:.2f}M | {b['rows']} | {b['phi_per_s_sequential']:.1f} | "
                  f"{b['phi_per_s_batched']:.1f} | {b['speedup']:.2f}× | {b['max_rel_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
