"""Memory against time for the reverse pass's state storage: memory / disk / recompute (`inner_sft.state_storage`).

A ~1M-parameter tiny GPT-2, AdamW, 64 sequences × 64 tokens cut into T = 16 or 64 inner
steps. For each strategy: median time of `engine.run` (interleaved repeats in this process) and the peak RSS
increase of one run (a fresh subprocess each; peak reset through /proc/self/clear_refs), next to plain SFT. All strategies return
the same metagradients (checked here too).

    python benchmarks/state_storage.py            # T = 16 and 64, 3 repeats (~5 min on 2 cores)
    python benchmarks/state_storage.py --quick    # T = 16, 1 repeat
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import re  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch.func import functional_call  # noqa: E402
from transformers import AutoModelForCausalLM, GPT2Config  # noqa: E402

from dpg import InnerSFTConfig, MetagradEngine  # noqa: E402

VOCAB, SEQ_LEN = 1024, 64
ADAMW = dict(optimizer="adamw", lr=1e-3, betas=(0.9, 0.95), eps=1e-8, eps_root=1e-9, weight_decay=1e-4)


def build_model() -> torch.nn.Module:
    """~1M parameters: 4 layers × 128 wide, untied head, eager attention, eval mode (what the engine needs)."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=SEQ_LEN, n_layer=4, n_embd=128, n_head=4, tie_word_embeddings=False,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()


def random_ids(n: int, length: int, seed: int) -> list[list[int]]:
    return torch.randint(1, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed)).tolist()


HELDOUT = torch.tensor(random_ids(8, SEQ_LEN, seed=1))


def val_objective(model, params):
    logits = functional_call(model, params, (HELDOUT,)).logits
    return -F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), HELDOUT[:, 1:].reshape(-1))


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


N_EXAMPLES = 64
STRATEGIES = {"memory": {}, "disk": {"state_storage": "disk"}, "recompute": {"state_storage": "recompute"}}


def engine_for(strategy: str, steps: int) -> MetagradEngine:
    cfg = InnerSFTConfig(**ADAMW, microbatch_size=N_EXAMPLES // steps, max_length=SEQ_LEN, **STRATEGIES[strategy])
    return MetagradEngine(build_model(), val_objective, cfg)


def memory_child(strategy: str, steps: int) -> dict:
    engine = engine_for("memory" if strategy == "sft" else strategy, steps)
    examples = random_ids(N_EXAMPLES, SEQ_LEN, seed=0)
    run = (lambda ex: engine.train(ex)) if strategy == "sft" else (lambda ex: engine.run(ex))
    run(random_ids(2, 8, seed=2))  # warm-up: lazy imports and kernel set-up are not counted
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current RSS
    base = _status_kb("VmRSS")
    run(examples)
    return {"peak_increase_mb": (_status_kb("VmHWM") - base) / 1024}


def memory(strategy: str, steps: int) -> float:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, __file__, "--_child", strategy, str(steps)], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_increase_mb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(memory_child(args._child[0], int(args._child[1]))))
        return
    steps_list, repeats = ([16], 1) if args.quick else ([16, 64], args.repeats)
    examples = random_ids(N_EXAMPLES, SEQ_LEN, seed=0)
    header = ["steps T", "strategy", "time (s)", "time ÷ SFT", "peak RSS increase (MB)", "memory ÷ SFT"]
    rows = []
    for steps in steps_list:
        engines = {s: engine_for(s, steps) for s in STRATEGIES}
        grads = {s: e.run(examples).metagrads for s, e in engines.items()}  # warm-up and agreement
        for s in STRATEGIES:
            assert torch.allclose(grads[s], grads["memory"], rtol=1e-5, atol=0), s
        times = {s: [] for s in ["sft", *STRATEGIES]}
        for _ in range(repeats):
            for s in times:  # interleaved, so that outside load hits every strategy alike
                t0 = time.perf_counter()
                engines["memory"].train(examples) if s == "sft" else engines[s].run(examples)
                times[s].append(time.perf_counter() - t0)
        mem = {s: memory(s, steps) for s in times}
        for s in times:
            t = statistics.median(times[s])
            rows.append([str(steps), s, f"{t:.2f}", f"{t / statistics.median(times['sft']):.2f}",
                         f"{mem[s]:.0f}", f"{mem[s] / mem['sft']:.1f}"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 1M target, {N_EXAMPLES} × {SEQ_LEN} tokens, "
          f"AdamW, float32; time = median of {repeats}")
    print("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                    + ["| " + " | ".join(r) + " |" for r in rows]))


if __name__ == "__main__":
    main()
