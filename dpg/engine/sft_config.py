"""`InnerSFTConfig`: how the target is fine-tuned inside every reward call. Torch-free, so that a run's whole config
loads and validates in well under a second (`dpg.config.schema` imports this, not `dpg.engine.sft`); the engine turns `dtype` into
a torch dtype with `torch_dtype` when it runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dpg.fields import bound, check_fields
from dpg.errors import ConfigError

# dtype names accepted by inner_sft.dtype, generator.dtype and target.dtype (torch attributes of the same names)
DTYPES = ("float32", "float64", "bfloat16", "float16")
AUTO_GRAPH_BUDGET = 0.5  # graph_budget_mb="auto": this fraction of the free memory, the rest for the reverse pass


def dtype_name(dtype) -> str:
    """'float64' for 'float64' or torch.float64 (recognised by its name, so torch need not be imported here)."""
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise ConfigError(f"inner_sft.dtype: unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return name


@dataclass
class InnerSFTConfig:
    """How the target is fine-tuned inside every reward call (the learning algorithm A of the paper). Built in
    Python or from YAML, every field is checked against its type and its bound (a ConfigError, a ValueError)."""

    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = bound(1e-3, "> 0", "the inner learning rate")
    betas: tuple[float, float] = bound((0.9, 0.95), "[0, 1)", "AdamW's moment decay rates")
    eps: float = bound(1e-8, ">= 0", "AdamW's denominator floor")
    # inside the sqrt: keeps d sqrt(v)/dv finite where v = 0 (unused vocabulary rows)
    eps_root: float = bound(1e-9, ">= 0", "AdamW's floor inside the square root")
    weight_decay: float = bound(1e-4, ">= 0", "AdamW's decoupled weight decay, 0 = none")
    momentum: float = bound(0.0, "[0, 1)", "SGD's momentum, 0 = none")
    microbatch_size: int = bound(8, ">= 1", "examples per forward and backward pass")
    grad_accum_steps: int = bound(1, ">= 1", "microbatches per inner step")
    epochs: int = bound(1, ">= 1", "passes over the examples")
    max_length: int = bound(128, ">= 2", "target tokens per example; a next-token loss needs two")
    seed: int = bound(0, ">= 0", "the seed that shuffles the examples into batches")
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
    recompute_segment: int | None = bound(None, ">= 1", "inner steps between checkpoints")
    # MB of autograd graphs the forward pass may keep so that the reverse pass need not recompute those steps (the
    # last steps that fit; `dpg.engine.graphs`): 0 keeps none, math.inf every step, "auto" (default: ≈3× plain SFT
    # instead of ≈3.6× at 4 steps, docs/performance.md) a fraction (AUTO_GRAPH_BUDGET) of the memory free on the
    # target's device after the stored states, from step 1 on. The metagradients are the same in every case.
    graph_budget_mb: float | Literal["auto"] = bound("auto", "[0, inf]", "MB of autograd graphs kept, 0 = none")
    # float16 metagradients are refused and bfloat16 ones with AdamW warned about (`dpg.engine.metagrad.check_precision`:
    # measured to point elsewhere than float64's, docs/gpu.md); true accepts them without a word.
    allow_low_precision: bool = False

    def __post_init__(self):
        self.dtype = dtype_name(self.dtype)
        check_fields(self, "inner_sft.")

    @property
    def examples_per_step(self) -> int:
        return self.microbatch_size * self.grad_accum_steps

    @property
    def torch_dtype(self):
        """`dtype` as a torch.dtype (imports torch: only the engine side asks for it)."""
        import torch

        return getattr(torch, self.dtype)
