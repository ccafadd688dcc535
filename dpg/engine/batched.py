"""Φ after inner SFT for many loss-weight vectors over the same examples at once (`MetagradEngine.values`): the exact
removals `loo` and `leave_group_out` need one run per removed example or group.

Each row w of W [R, N] is the same inner SFT as `MetagradEngine.value(examples, w)`, and the rows run as one vectorised
inner run per chunk (torch.func.vmap over the weights, the parameters and optimizer state replicated per row). The
step gradients come from torch.func.grad: plain autograd.grad cannot run under vmap. In float64 the values equal the
sequential runs to rounding (tests/test_estimators.py); on a CPU a chunk of small runs costs a few single runs
(docs/performance.md).
"""

from __future__ import annotations

import torch
from torch.func import grad

from dpg.engine.graphs import SavedBytes
from dpg.engine.sft import Step, microbatch_loss


def values(engine, examples: list[list[int]], weights: torch.Tensor, budget_mb: float = 1024) -> torch.Tensor:
    """Φ after SFT for every row of `weights` [R, N] on `engine`'s target, objective and inner SFT. Rows per chunk: as
    many as fit in `budget_mb` at (4 copies of θ + one microbatch's saved activations) per row (`row_bytes`)."""
    W = torch.as_tensor(weights, dtype=engine.cfg.torch_dtype, device=engine.device)
    if W.ndim != 2 or W.shape[1] != len(examples):
        raise ValueError(f"weights: shape {tuple(W.shape)}; expected [rows, {len(examples)}] (one row per run)")
    if not torch.isfinite(W).all():
        raise ValueError("weights: contains non-finite values")
    if engine.shard[1] > 1:  # a collective per step cannot run inside vmap: one run at a time
        return torch.tensor([engine.value(examples, w) for w in W], dtype=torch.float64)
    steps = engine._schedule(examples)
    chunk = max(1, int(budget_mb * 2**20 // row_bytes(engine, steps, W[0])))

    def run(w):
        theta, state = engine.params0, engine.opt.init(engine.params0)
        for step in steps:
            g = None
            for mb in step.microbatches:
                g_mb = grad(lambda p: microbatch_loss(engine.model, p, mb, w)[0])(theta)
                g = g_mb if g is None else {k: g[k] + g_mb[k] for k in g}
            theta, state = engine.opt.update(g, state, theta)
        return engine._phi(theta)

    with torch.no_grad():
        # randomness="same": an objective that draws with its own seeded generator sees the same draws per row
        out = torch.cat([torch.func.vmap(run, randomness="same")(W[i:i + chunk]) for i in range(0, len(W), chunk)])
    bad = (~torch.isfinite(out)).nonzero().flatten().tolist()
    if bad:
        raise FloatingPointError(f"objective value Φ after inner SFT is not finite for weight rows {bad[:20]} "
                                 f"(of {len(bad)}); the inner run diverged or the objective is not finite there")
    return out.double().cpu()


def row_bytes(engine, steps: list[Step], w: torch.Tensor) -> int:
    """Memory of one vmapped run: θ, the optimizer's two moments and a gradient, plus the activations that the largest
    microbatch saves for its backward (measured with saved-tensor hooks on one forward)."""
    mb = max((mb for step in steps for mb in step.microbatches), key=lambda m: m.input_ids.numel())
    leaves = {k: p.detach().requires_grad_(True) for k, p in engine.params0.items()}
    saved = SavedBytes()
    with torch.enable_grad(), saved:
        microbatch_loss(engine.model, leaves, mb, w)
    return 4 * sum(p.numel() * p.element_size() for p in engine.params0.values()) + sum(saved.storages.values())
