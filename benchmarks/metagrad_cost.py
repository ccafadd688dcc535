"""Cost of an exact metagradient relative to the plain SFT run it differentiates (time and peak memory).

For tiny GPT-2 targets (~1M and ~5M parameters, untied head, eager attention, float32, eval mode) and 32 random
sequences × 64 tokens fine-tuned with AdamW in 1 / 4 / 8 inner steps, it measures side by side:

* ``sft``    — plain SFT on the same data: ``MetagradEngine.train(examples)``;
* ``engine`` — the metagradient engine: ``MetagradEngine.run(examples)`` (forward with stored states + reverse);
* ``unroll`` — the naive full-unroll autograd metagradient (``tests/reference.py::unrolled``: ``create_graph=True``
  through every step, the whole graph kept until one final backward).

Time: median of ``--repeats`` interleaved repeats (sft, engine, unroll, sft, …) after one warm-up of each, in this
process. Peak memory: one fresh subprocess per (mode, model, steps); the peak RSS increase over the RSS after the model
and data are built (``VmHWM`` reset through ``/proc/self/clear_refs``, glibc told to ``mmap`` every large block so
that freed tensors leave the RSS). Stored states = what the engine keeps for its reverse pass, K × (θ, m, v, g) =
K × 4 × params × 4 bytes; ``engine − states`` should not grow with K.

    python benchmarks/metagrad_cost.py            # full run (< 10 min on 2 cores)
    python benchmarks/metagrad_cost.py --quick    # smoke: 1M model, 1 and 4 steps, 1 repeat (~1 min)
    python benchmarks/metagrad_cost.py --profile  # torch.profiler of engine.run on the 5M model, 4 steps
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from reference import unrolled  # noqa: E402

from dpg import InnerSFTConfig, MetagradEngine  # noqa: E402

hf_logging.set_verbosity_error()

VOCAB, SEQ_LEN, N_EXAMPLES = 1024, 64, 32
MODELS = {  # name -> GPT2Config overrides
    "1M": dict(n_layer=4, n_embd=128, n_head=4),
    "5M": dict(n_layer=6, n_embd=256, n_head=8),
}
SCHEDULES = {1: (8, 4), 4: (8, 1), 8: (4, 1)}  # inner steps -> (microbatch_size, grad_accum_steps) for 32 examples
MODES = ("sft", "engine", "unroll")
ADAMW = dict(optimizer="adamw", lr=1e-3, betas=(0.9, 0.95), eps=1e-8, eps_root=1e-9, weight_decay=1e-4)


# -- setup -------------------------------------------------------------------------------------------------------------

def build_model(name: str, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                     tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **MODELS[name])
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(dtype).eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_ids(n: int, length: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (n, length), generator=g).tolist()


HELDOUT = torch.tensor(random_ids(8, SEQ_LEN, seed=1))


def val_objective(model, params):
    """Φ = −mean next-token loss on a fixed held-out batch (8 × 64 tokens): touches every parameter."""
    logits = functional_call(model, params, (HELDOUT,)).logits
    return -F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), HELDOUT[:, 1:].reshape(-1))


def config(steps: int, dtype=torch.float32) -> InnerSFTConfig:
    mb, ga = SCHEDULES[steps]
    return InnerSFTConfig(**ADAMW, microbatch_size=mb, grad_accum_steps=ga, max_length=SEQ_LEN, dtype=dtype)


def runner(mode: str, engine: MetagradEngine, steps: int):
    """A zero-argument callable doing one `mode` run on `examples`; returns its metagradients (or None)."""
    mb, ga = SCHEDULES[steps]
    if mode == "sft":
        return lambda ex: (engine.train(ex), None)[1]
    if mode == "engine":
        return lambda ex: engine.run(ex).metagrads
    if mode == "unroll":
        opt = {k: v for k, v in ADAMW.items() if k != "optimizer"}
        return lambda ex: unrolled(engine.model, engine.objective, ex, optimizer="adamw", mb=mb, ga=ga,
                                   max_length=SEQ_LEN, **opt)[1]
    raise ValueError(mode)


# -- memory (child process) --------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def measure_memory_child(mode: str, model_name: str, steps: int) -> dict:
    """Runs in a fresh process: peak RSS increase of one `mode` run over the RSS after the model/data are built."""
    model = build_model(model_name)
    engine = MetagradEngine(model, val_objective, config(steps))
    run = runner(mode, engine, steps)
    examples = random_ids(N_EXAMPLES, SEQ_LEN, seed=0)
    run(random_ids(2, 8, seed=2))  # warm-up on a tiny input: lazy imports / kernel init, not counted
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
    base = _status_kb("VmRSS")
    run(examples)
    peak = _status_kb("VmHWM")
    return {"base_mb": base / 1024, "peak_increase_mb": (peak - base) / 1024}


def measure_memory(mode: str, model_name: str, steps: int) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    cmd = [sys.executable, __file__, "--_memory-child", mode, model_name, str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child {mode}/{model_name}/{steps} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- time (this process) -----------------------------------------------------------------------------------------------

def measure_time(model_name: str, steps: int, repeats: int) -> dict:
    model = build_model(model_name)
    engine = MetagradEngine(model, val_objective, config(steps))
    examples = random_ids(N_EXAMPLES, SEQ_LEN, seed=0)
    runs = {m: runner(m, engine, steps) for m in MODES}
    grads = {m: runs[m](examples) for m in MODES}  # warm-up; also the float32 agreement check below
    times = {m: [] for m in MODES}
    split = []
    for _ in range(repeats):
        for m in MODES:  # interleaved, so that load from other processes hits every mode alike
            t0 = time.perf_counter()
            if m == "engine":
                split.append(engine.run(examples).seconds)
            else:
                runs[m](examples)
            times[m].append(time.perf_counter() - t0)
    ref = grads["unroll"]
    return {
        "params": n_params(model),
        "seconds": {m: statistics.median(t) for m, t in times.items()},
        "engine_forward": statistics.median(s["forward"] for s in split),
        "engine_reverse": statistics.median(s["reverse"] for s in split),
        "engine_vs_unroll_rel": float((grads["engine"] - ref).abs().max() / ref.abs().max()),
    }


# -- report ------------------------------------------------------------------------------------------------------------

def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}\n" + " | ".join(header))
        for r in rows:
            print(" | ".join(r))
        return
    table = Table(title=title)
    for h in header:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*r)
    Console(width=200).print(table)


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main_benchmark(args) -> None:
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"data: {N_EXAMPLES} sequences × {SEQ_LEN} tokens, vocab {VOCAB}, AdamW, float32; "
          f"time = median of {args.repeats} after a warm-up")
    results = []
    t_start = time.perf_counter()
    for model_name in args.models:
        for steps in args.steps:
            r = {"model": model_name, "steps": steps, **measure_time(model_name, steps, args.repeats)}
            if not args.no_memory:
                r["memory"] = {m: measure_memory(m, model_name, steps) for m in MODES}
            r["states_mb"] = steps * 4 * r["params"] * 4 / 2**20
            results.append(r)
            s = r["seconds"]
            print(f"  {model_name} K={steps}: sft {s['sft']:.2f}s engine {s['engine']:.2f}s unroll {s['unroll']:.2f}s"
                  f"  ({time.perf_counter() - t_start:.0f}s elapsed)", flush=True)

    header = ["model", "params", "K", "mb×ga", "SFT s", "engine s", "fwd+rev s", "engine/SFT", "unroll s",
              "unroll/SFT", "engine≈unroll"]
    rows = []
    for r in results:
        s, mb_ga = r["seconds"], "{}×{}".format(*SCHEDULES[r["steps"]])
        rows.append([r["model"], f"{r['params'] / 1e6:.2f}M", str(r["steps"]), mb_ga, f"{s['sft']:.2f}",
                     f"{s['engine']:.2f}", f"{r['engine_forward']:.2f}+{r['engine_reverse']:.2f}",
                     f"{s['engine'] / s['sft']:.2f}×", f"{s['unroll']:.2f}", f"{s['unroll'] / s['sft']:.2f}×",
                     f"{r['engine_vs_unroll_rel']:.1e}"])
    print_table("Time (median wall-clock seconds; ratio to plain SFT on the same data)", header, rows)
    tables = [markdown(header, rows)]

    if not args.no_memory:
        mheader = ["model", "K", "SFT MB", "engine MB", "unroll MB", "engine/SFT", "unroll/SFT", "states MB",
                   "engine − states MB", "unroll − SFT MB"]
        mrows = []
        for r in results:
            m = {k: v["peak_increase_mb"] for k, v in r["memory"].items()}
            mrows.append([r["model"], str(r["steps"]), f"{m['sft']:.0f}", f"{m['engine']:.0f}", f"{m['unroll']:.0f}",
                          f"{m['engine'] / m['sft']:.2f}×", f"{m['unroll'] / m['sft']:.2f}×", f"{r['states_mb']:.0f}",
                          f"{m['engine'] - r['states_mb']:.0f}", f"{m['unroll'] - m['sft']:.0f}"])
        print_table("Peak RSS increase during one run (MB, fresh process each); states = K × (θ, m, v, g) float32",
                    mheader, mrows)
        tables.append(markdown(mheader, mrows))
    print(f"total {time.perf_counter() - t_start:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text("\n\n".join(tables) + "\n")


def main_profile(args) -> None:
    from torch.profiler import ProfilerActivity, profile, record_function

    model_name, steps = "5M", 4
    engine = MetagradEngine(build_model(model_name), val_objective, config(steps))
    examples = random_ids(N_EXAMPLES, SEQ_LEN, seed=0)
    engine.run(examples)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("engine.run"):
            res = engine.run(examples)
    print(f"engine.run {model_name} K={steps}: forward {res.seconds['forward']:.2f}s, "
          f"reverse {res.seconds['reverse']:.2f}s (with profiler overhead)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1M model, K = 1 and 4, 1 repeat")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", nargs="+", type=int, default=list(SCHEDULES), choices=list(SCHEDULES))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-memory", action="store_true", help="skip the per-run memory subprocesses")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", help="write the tables as markdown here")
    p.add_argument("--profile", action="store_true", help="profile engine.run (5M model, 4 steps) instead")
    p.add_argument("--profile-rows", type=int, default=30)
    p.add_argument("--_memory-child", nargs=3, metavar=("MODE", "MODEL", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._memory_child:
        mode, model_name, steps = args._memory_child
        print(json.dumps(measure_memory_child(mode, model_name, int(steps))))
    elif args.profile:
        main_profile(args)
    else:
        if args.quick:
            args.models, args.steps, args.repeats = ["1M"], [1, 4], 1
        main_benchmark(args)


if __name__ == "__main__":
    main()
