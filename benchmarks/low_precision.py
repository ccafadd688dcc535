"""Metagradients in bfloat16 and float16 against float64 (and float32 against float64): do low-precision rewards
point the right way? (docs/gpu.md, "Low-precision metagradients")

Only `inner_sft.dtype` changes between the runs of one batch: the same examples, schedule and objective, the target
cast from the same float32 weights. Two targets, a few batches each:

* ``quickstart`` — configs/quickstart.yaml's embedded tiny target and objective (−mean loss of " the river"),
  its inner SFT (AdamW, lr 1e-2, microbatches of 8, ≤ 32 tokens), 32 lines of the shipped corpus per batch: 4 steps;
* ``5M`` — benchmarks.metagrad_cost's 5M GPT-2 built from its config (6 × 256, untied head), Φ = −loss on 8 held-out
  random sequences of 64 tokens, AdamW lr 1e-3, 16 random sequences of 64 tokens per batch: 2 steps of 2 × 4.

Per dtype and batch, against the float64 metagradients x₆₄ of the same batch: the cosine similarity, the share of
examples whose metagradient has the same sign, and the relative error ‖x − x₆₄‖ / ‖x₆₄‖. Where Φ or a metagradient
is not finite (the engine raises), the row says so. By default the engine warns about bfloat16 with AdamW and
refuses float16 (unless `inner_sft.allow_low_precision`); this benchmark opts in to measure them.

    python -m benchmarks.low_precision            # both targets, 3 batches each (~6 min on 2 shared cores)
    python -m benchmarks.low_precision --quick    # the quickstart target, 1 batch (~20 s)
    python -m benchmarks.low_precision --inner optimizer=sgd lr=0.5   # the same with another inner SFT
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F
import yaml

from benchmarks.metagrad_cost import Case, build_model, make_objective, markdown, print_table, random_ids
from dpg import MetagradEngine
from dpg import objectives
from dpg.config.schema import load_config
from dpg.training import assembly, models
from dpg.training.rewards import to_target_examples

DTYPES = ("float64", "float32", "bfloat16", "float16")
QUICKSTART = "configs/quickstart.yaml"


def quickstart_runs(batches: int, inner: dict):
    """(dtype -> engine, batches of examples) on the quickstart's target, objective and inner SFT (with `inner`)."""
    cfg = load_config(QUICKSTART)
    target, tok = assembly.load_target(cfg)
    objective = objectives.from_config(cfg.objective, model=target, tokenizer=tok)
    weights = {k: t.detach().clone() for k, t in target.state_dict().items()}
    engines = {}
    for dtype in DTYPES:
        model, _ = assembly.load_target(cfg)
        model.load_state_dict(weights)
        engines[dtype] = MetagradEngine(model, objective, dataclasses.replace(cfg.inner_sft, **inner, dtype=dtype,
                                                            allow_low_precision=True))
    lines, n = models.corpus_lines(), 4 * cfg.inner_sft.examples_per_step
    data = [to_target_examples([lines[(b * n + i) % len(lines)] for i in range(n)], tok, cfg.inner_sft.max_length)[0]
            for b in range(batches)]
    return engines, data


def gpt2_runs(batches: int, inner: dict):
    """(dtype -> engine, batches of examples) on the 5M GPT-2 of benchmarks.metagrad_cost (inner SFT with `inner`)."""
    case = Case("5M", steps=2, n_examples=16)
    heldout = torch.tensor(random_ids(*case.heldout, seed=1))
    engines = {dtype: MetagradEngine(build_model(case.model), make_objective(heldout),
                                     dataclasses.replace(case.config(), **inner, dtype=dtype, allow_low_precision=True))
               for dtype in DTYPES}
    data = [random_ids(case.n_examples, case.seq_len, seed=10 + b) for b in range(batches)]
    return engines, data


def compare(x: torch.Tensor, ref: torch.Tensor) -> dict:
    x, ref = x.double(), ref.double()
    return {"cosine": float(F.cosine_similarity(x, ref, dim=0)),
            "sign": float((x.sign() == ref.sign()).double().mean()), "rel": float((x - ref).norm() / ref.norm())}


def measure(name: str, engines: dict, data: list) -> list[dict]:
    rows = []
    for b, examples in enumerate(data):
        grads = {}
        for dtype, engine in engines.items():
            t0 = time.perf_counter()
            try:
                grads[dtype] = engine.run(examples).metagrads
            except FloatingPointError as err:  # a diverged run is a measured outcome here
                grads[dtype] = "Φ not finite" if str(err).startswith("objective value") else "dΦ/dw not finite"
            print(f"  {name} batch {b} {dtype}: {time.perf_counter() - t0:.1f}s", flush=True)
        for dtype in DTYPES[1:]:
            row = {"target": name, "batch": b, "dtype": dtype, "examples": len(examples)}
            if isinstance(grads[dtype], str):
                rows.append({**row, "failed": grads[dtype]})
            else:
                rows.append({**row, **compare(grads[dtype], grads["float64"])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quickstart target, 1 batch")
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--inner", nargs="*", default=[], metavar="KEY=VALUE",
                   help="inner_sft fields for both targets, e.g. optimizer=sgd lr=0.5 (values read as YAML)")
    args = p.parse_args()
    env.set_threads(args.threads)
    inner = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.inner)}
    batches = 1 if args.quick else args.batches
    rows = measure("quickstart", *quickstart_runs(batches, inner))
    if not args.quick:
        rows += measure("5M", *gpt2_runs(batches, inner))
    header = ["target", "batch", "examples", "dtype", "cosine", "sign agreement", "relative error"]
    cells = [[r["target"], str(r["batch"]), str(r["examples"]), r["dtype"],
              *((f"{r['cosine']:+.4f}", f"{r['sign']:.1%}", f"{r['rel']:.1e}") if "failed" not in r
                else (r["failed"], "—", "—"))] for r in rows]
    print_table("Metagradients against float64 (same batch, same inner SFT)", header, cells)
    summary = [[target, dtype, *ranges([r for r in rows if (r["target"], r["dtype"]) == (target, dtype)])]
               for target in dict.fromkeys(r["target"] for r in rows) for dtype in DTYPES[1:]]
    summary_header = ["target", "dtype", "cosine", "sign agreement", "relative error"]
    print_table("Over the batches: lowest – highest", summary_header, summary)
    print("\n" + markdown(header, cells) + "\n\n" + markdown(summary_header, summary))


def ranges(rows: list[dict]) -> list[str]:
    """min – max of each measure over the batches, or the failure where any batch failed."""
    failed = [r["failed"] for r in rows if "failed" in r]
    if failed:
        return [f"{failed[0]} ({len(failed)} of {len(rows)} batches)", "—", "—"]
    spans = [(min(r[k] for r in rows), max(r[k] for r in rows)) for k in ("cosine", "sign", "rel")]
    return [f"{spans[0][0]:+.2f} – {spans[0][1]:+.2f}", f"{spans[1][0]:.0%} – {spans[1][1]:.0%}",
            f"{spans[2][0]:.0e} – {spans[2][1]:.0e}"]


if __name__ == "__main__":
    main()
