"""Nothing non-finite is trained on or saved: the policy loss of every micro-batch and the generator's weights and
optimizer state after every update are checked, so a NaN stops the run with the step and the tensor named before a
checkpoint could hold it (the last checkpoint written stays the one `--resume` uses)."""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from dpg.errors import NonFiniteError


def _first_bad(named_tensors):
    for name, t in named_tensors:
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = ~torch.isfinite(t)
            return name, int(bad.sum()), t.numel(), int(torch.isnan(t).sum())
    return None


def check_weights(model: torch.nn.Module, optimizer, step: int) -> None:
    """Raise NonFiniteError naming the first weight (or optimizer-state tensor) with a NaN or inf."""
    with torch.no_grad():
        bad = _first_bad((name, p) for name, p in model.named_parameters())
        what = "generator weight"
        if bad is None and optimizer is not None:
            names = {p: name for name, p in model.named_parameters()}
            bad = _first_bad((f"{names.get(p, '?')} ({key})", t) for p, state in optimizer.state.items()
                             for key, t in state.items() if isinstance(t, torch.Tensor))
            what = "optimizer state of"
    if bad is not None:
        name, n_bad, n, n_nan = bad
        raise NonFiniteError(f"non-finite {what} {name} after GRPO step {step}: {n_bad} of {n} values are NaN or "
                             f"inf ({n_nan} NaN); stopped before saving it")


def check_loss(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteError(f"non-finite policy loss at GRPO step {step}: {loss.item()}; stopped before the update")


class FiniteGuard(TrainerCallback):
    """Checks the weights after every optimizer step; HF saves a checkpoint only after on_step_end returns."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        check_weights(model, optimizer, state.global_step)
        return control
