"""`InnerSFTConfig`: how the target is fine-tuned inside every reward call. Torch-free, so that a run's whole config
loads and validates in well under a second (`dpg.config.schema` imports this, not `dpg.engine.sft`); the engine turns `dtype` into
a torch dtype with `torch_dtype` when it runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


# dtype names accepted by inner_sft.dtype, generator.dtype and target.dtype (torch attributes of the same names)
DTYPES = ("float32", "float64", "bfloat16", "float16")
AUTO_GRAPH_BUDGET = 0.5  # graph_budget_mb="auto": this fraction of the free memory, the rest for the reverse pass


def dtype_name(dtype) -> str:
    """'float64' for 'float64' or torch.float64 (recognised by its name, so torch need not be imported here)."""
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ValueError(f"inner_sft.dtype: unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return name


@dataclass
class InnerSFTConfig:
    """How the target is fine-tuned inside every reward call (the learning algorithm A of the paper)."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    eps_root: float = 1e-9  # inside the sqrt: keeps d sqrt(v)/dv finite where v = 0 (unused vocabulary rows)
    weight_decay: float = 1e-4  # AdamW only, decoupled
    momentum: float = 0.0  # SGD only
    microbatch_size: int = 8
    grad_accum_steps: int = 1
    epochs: int = 1
    max_length: int = 128
    seed: int = 0  # shuffles the examples into batches
    shuffle: bool = True  # false: steps take the examples in the order given (a fixed curriculum; experiments/fidelity.py)
    loss_normalization: Literal["token_mean", "official"] = "token_mean"
    # A name from DTYPES; a torch dtype is accepted too and stored by its name. `torch_dtype` gives it back.
    dtype: str = "float32"
    # Where each step's (θ, optimizer state, gradient) waits for the reverse pass (see `dpg.engine.states`): "memory" (on
    # `state_device`), "disk" (safetensors files under `state_dir`, default the system temp dir) or "recompute"
    # (checkpoints every `recompute_segment` steps, default ⌈√steps⌉, and one extra forward pass).
    state_storage: Literal["memory", "disk", "recompute"] = "memory"
    state_device: str = "cpu"
    state_dir: str | None = None
    recompute_segment: int | None = None
    # MB of autograd graphs the forward pass may keep so that the reverse pass need not recompute those steps (the
    # last steps that fit; `dpg.engine.metagrad`): 0 keeps none, math.inf every step, "auto" a fraction (AUTO_GRAPH_BUDGET)
    # of the memory free on the target's device when `run` starts. The metagradients are the same in every case.
    graph_budget_mb: float | Literal["auto"] = 0.0

    def __post_init__(self):
        self.dtype = dtype_name(self.dtype)
        self.betas = tuple(float(b) for b in self.betas)
        checks = {
            "optimizer": self.optimizer in ("sgd", "adamw"),
            "loss_normalization": self.loss_normalization in ("token_mean", "official"),
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "eps": self.eps >= 0,
            "eps_root": self.eps_root >= 0,
            "weight_decay": self.weight_decay >= 0,
            "momentum": 0 <= self.momentum < 1,
            "microbatch_size": isinstance(self.microbatch_size, int) and self.microbatch_size >= 1,
            "grad_accum_steps": isinstance(self.grad_accum_steps, int) and self.grad_accum_steps >= 1,
            "epochs": isinstance(self.epochs, int) and self.epochs >= 1,
            "max_length": isinstance(self.max_length, int) and self.max_length >= 2,
            "state_storage": self.state_storage in ("memory", "disk", "recompute"),
            "recompute_segment": self.recompute_segment is None or (isinstance(self.recompute_segment, int)
                                                                    and self.recompute_segment >= 1),
            "graph_budget_mb": self.graph_budget_mb == "auto" or (isinstance(self.graph_budget_mb, (int, float))
                                                                  and not isinstance(self.graph_budget_mb, bool)
                                                                  and self.graph_budget_mb >= 0),
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"inner_sft.{key}: invalid value {getattr(self, key)!r}")

    @property
    def examples_per_step(self) -> int:
        return self.microbatch_size * self.grad_accum_steps

    @property
    def torch_dtype(self):
        """`dtype` as a torch.dtype (imports torch: only the engine side asks for it)."""
        import torch

        return getattr(torch, self.dtype)
