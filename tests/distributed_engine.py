"""Run under torchrun with several processes (gloo): the data-parallel engine's metagradients and values, saved by
rank 0 for tests/test_distributed.py to compare with a single process."""

import math
import sys

import torch
import torch.distributed as dist
from conftest import random_examples, tiny_gpt2
from safetensors.torch import save_file
from test_engine import SETUPS, val_loss

from dpg import InnerSFTConfig, MetagradEngine

dist.init_process_group("gloo")
out = {}
for setup, n in [("adamw", 13), ("sgd_momentum", 13), ("adamw_official", 7)]:
    cfg = InnerSFTConfig(**SETUPS[setup], max_length=16, dtype=torch.float64)
    engine = MetagradEngine(tiny_gpt2(), val_loss, cfg, data_parallel=True)
    examples = random_examples(n)
    res = engine.run(examples)
    out[f"{setup}/metagrads"] = res.metagrads
    out[f"{setup}/value"] = torch.tensor([res.value, engine.value(examples)], dtype=torch.float64)
    out[f"{setup}/first_order"] = engine.first_order(examples)
# Kept graphs (inner_sft.graph_budget_mb): every step, and a budget for some (each process keeps what fits its shard).
for name, budget in [("kept_all", math.inf), ("kept_some", 1.0)]:
    cfg = InnerSFTConfig(**SETUPS["adamw"], max_length=16, dtype=torch.float64, graph_budget_mb=budget)
    res = MetagradEngine(tiny_gpt2(), val_loss, cfg, data_parallel=True).run(random_examples(13))
    out[f"{name}/metagrads"], out[f"{name}/kept_steps"] = res.metagrads, torch.tensor([res.kept_steps])
if dist.get_rank() == 0:
    save_file(out, sys.argv[1])
dist.destroy_process_group()
