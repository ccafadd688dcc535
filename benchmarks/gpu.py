"""One prepared run on a CUDA GPU, for docs/gpu.md ("Measured on an H200"). Two parts, each writing its results as
soon as it has them (a run stopped early keeps what it finished):

1. **engine cost on cuda**: GPT-2 124M built from its config (untied head, eager attention, float32, eval mode;
   random weights: no hub there), random sequences of 128 tokens, K inner AdamW steps of 128 examples (microbatches
   of 32, accumulated 4 times). Side by side, after one warm-up of each: plain SFT (`MetagradEngine.train`), the
   engine (`MetagradEngine.run`: forward with stored states + reverse pass), the engine keeping steps' graphs in half
   the free GPU memory (`graph_budget_mb: auto`) and the full-unroll autograd reference
   (`benchmarks/reference.py::unrolled`: it keeps the whole run's graph; where it runs out of memory, that is recorded).
   Wall seconds (CUDA-synchronised, median of `--repeats`) and peak allocated GPU memory over what was allocated
   before (`torch.cuda.max_memory_allocated`). Also the float32 agreement of the engine with the unroll:
   max |Δ| / max |reference|.
2. **GRPO steps of a paper config** (`configs/paper/l2_norm.yaml`, 256 prompts × 4 = 1,024 completions of ≤ 128
   tokens per step, one inner AdamW step of 1,024 examples on GPT-2 124M): the generator is a Llama with
   Llama-3.2-1B's body (16 layers × 2048, GQA 32/8 heads, MLP 8192) and the target a GPT-2 124M, both random-init
   from their configs and saved locally, with dpg's 512-token BPE tokenizer (the real tokenizers are not on that
   machine), so the generator lacks Llama's 128k-token embedding (263M parameters) and the prompts skip the chat
   template. Per-step seconds of generation, reward (the engine) and policy update, from dpg's training log.

    python -m benchmarks.gpu --out DIR            # on the GPU (~5 min on an H200)
    python -m benchmarks.gpu --out DIR --quick    # the same code path on CPU with tiny models (~2 min)
"""

from __future__ import annotations

from experiments import env  # noqa: F401  first: the environment before torch and transformers load

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from benchmarks.metagrad_cost import Bench, Case
from dpg import MetagradEngine

ROOT = Path(__file__).resolve().parents[1]

LLAMA_1B_BODY = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, head_dim=64, rope_theta=500000.0, tie_word_embeddings=True)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpt2(vocab: int, quick: bool, **ids) -> torch.nn.Module:
    torch.manual_seed(0)
    size = dict(n_layer=2, n_embd=64, n_head=4) if quick else {}  # GPT2Config's defaults are GPT-2 124M
    cfg = GPT2Config(vocab_size=vocab, tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     **size, **ids)
    # eager attention and eval mode: the engine's double backward and forward-mode JVPs need both (docs/models.md)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(device()).eval()


def timed(run) -> tuple[float, float]:
    """(wall seconds, peak MB allocated over the allocation before) of one call."""
    sync()
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run()
    sync()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if torch.cuda.is_available() else math.nan
    return seconds, peak


def engine_costs(ks: list[int], repeats: int, quick: bool) -> list[dict]:
    model = gpt2(vocab=1024 if quick else 50257, quick=quick)
    rows = []
    for k in ks:
        case = Case(model="gpt2-124m", steps=k, seq_len=128, n_examples=128 * k, microbatch=32, heldout=(8, 128))
        bench = Bench(case, model=model)
        auto = MetagradEngine(model, bench.engine.objective, case.config(graph_budget_mb="auto"))
        kept = {}

        def engine_auto():
            res = auto.run(bench.examples)
            kept.update(steps=res.kept_steps, graph_mb=res.graph_mb)
            return res.metagrads

        runs = {"sft": lambda: bench.run("sft"), "engine": lambda: bench.run("engine"), "engine_auto": engine_auto,
                "unroll": lambda: bench.run("unroll")}
        grads, failed = {}, {}
        for m, run in runs.items():  # warm-up (kernels, allocator) and the metagradients compared below
            try:
                grads[m] = run()
            except torch.cuda.OutOfMemoryError as e:  # the full unroll keeps the whole run's graph: a measured limit
                failed[m] = f"out of memory: {str(e).splitlines()[0]}"
                torch.cuda.empty_cache()
        times, peaks = {m: [] for m in grads}, {}
        for _ in range(repeats):
            for m in grads:
                seconds, peaks[m] = timed(runs[m])
                times[m].append(seconds)
        row = {"K": k, "examples": case.n_examples, "params": bench.params, "failed": failed,
               "seconds": {m: statistics.median(t) for m, t in times.items()}, "peak_mb": peaks,
               "states_mb": bench.states_mb, "auto_kept": kept}
        if (ref := grads.get("unroll")) is not None:
            for m in ("engine", "engine_auto"):
                row[f"{m}_vs_unroll_rel"] = float((grads[m] - ref).abs().max() / ref.abs().max())
        rows.append(row)
        print(json.dumps(row), flush=True)
        del bench, auto, grads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def save_models(root: Path, quick: bool) -> tuple[Path, Path, int]:
    """A Llama-3.2-1B-bodied generator and a GPT-2 124M target, random-init, saved with dpg's BPE tokenizer: their
    directories and the generator's parameter count."""
    from dpg.training.models import load_tokenizer

    tok = load_tokenizer("tiny")
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    body = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, tie_word_embeddings=True) if quick else LLAMA_1B_BODY
    torch.manual_seed(0)
    generator = AutoModelForCausalLM.from_config(LlamaConfig(vocab_size=len(tok), max_position_embeddings=1024,
                                                             **body, **ids))
    target = gpt2(vocab=len(tok) if quick else 50257, quick=quick, **ids)
    params = sum(p.numel() for p in generator.parameters())
    dirs = root / "generator", root / "target"
    for model, d in zip((generator, target), dirs):
        model.save_pretrained(d)
        tok.save_pretrained(d)
    return *dirs, params


def grpo_steps(root: Path, steps: int, quick: bool) -> dict:
    from dpg.config.schema import load_config
    from dpg.run.checkpoints import LOG_FILE, read_log
    from dpg.training import trainer

    gen_dir, target_dir, gen_params = save_models(root / "models", quick)
    overrides = [f"generator.name_or_path={gen_dir}", f"target.name_or_path={target_dir}", "prompts.chat=false",
                 f"grpo.steps={steps}", f"output_dir={root / 'run'}", f"checkpoint.save_every={steps + 1}",
                 "logging.progress=false"]
    if quick:  # 8 prompts × 4: the same code path in a CPU minute
        overrides += ["grpo.prompts_per_step=8", "inner_sft.microbatch_size=4", "grpo.max_completion_length=32"]
    cfg = load_config(ROOT / "configs" / "paper" / "l2_norm.yaml", overrides)
    t0 = time.perf_counter()
    trainer.train(cfg)
    log = read_log(root / "run" / LOG_FILE)
    parts = ("generation", "reward", "policy_update", "total")
    out = {"config": "configs/paper/l2_norm.yaml", "overrides": overrides, "completions_per_step":
           cfg.grpo.completions_per_step, "wall_seconds": time.perf_counter() - t0,
           "generator_params": gen_params,
           "steps": [{p: r["seconds"][p] for p in parts} | {"phi": r.get("phi")} for r in log if "seconds" in r]}
    if torch.cuda.is_available():
        out["max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="tiny models: the same code path on CPU")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--grpo-steps", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["engine", "grpo"], choices=["engine", "grpo"])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    print(json.dumps(result), flush=True)
    for part in args.parts:
        t0 = time.perf_counter()
        result[part] = (engine_costs(args.ks, args.repeats, args.quick) if part == "engine"
                        else grpo_steps(Path(tempfile.mkdtemp(prefix="dpg-gpu-")), args.grpo_steps, args.quick))
        result[f"{part}_wall_seconds"] = time.perf_counter() - t0
        (args.out / "gpu.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
