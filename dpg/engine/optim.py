"""Optimizers as pure functions `update(grads, state, params) -> (params, state)`, optax-style.

Nothing is modified in place, so torch.func can differentiate an update with respect to its gradient, its state and
its parameters: the metagradient engine needs exactly that. `state["step"]` is a Python int (how many updates were
applied); every other entry of the state is a dict of tensors shaped like the parameters.

Each optimizer also has `update_vjp(grads, state, params, params_bar, state_bar) -> (grads_bar, state_bar,
params_bar)`: the vector-Jacobian product of `torch.func.vjp(update, grads, state, params)` applied to the
cotangents of the outputs (state without "step"), written out by hand. It saves nothing for a backward pass and runs
2-3× faster than the generic VJP; equal to it up to rounding (tests/test_optim.py, docs/performance.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dpg.engine.sft import Params
from dpg.engine.sft_config import InnerSFTConfig


@dataclass(frozen=True)
class SGD:
    lr: float
    momentum: float = 0.0

    def init(self, params: Params) -> dict:
        if self.momentum == 0:
            return {"step": 0}
        return {"step": 0, "trace": {k: torch.zeros_like(p) for k, p in params.items()}}

    def update(self, grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        # torch.add(a, b, alpha=c) = a + c·b in one op (one kernel instead of two, here and in the VJP)
        if self.momentum == 0:
            return {k: torch.add(params[k], grads[k], alpha=-self.lr) for k in params}, {"step": state["step"] + 1}
        trace = {k: torch.add(grads[k], state["trace"][k], alpha=self.momentum) for k in params}
        return ({k: torch.add(params[k], trace[k], alpha=-self.lr) for k in params},
                {"step": state["step"] + 1, "trace": trace})

    def update_vjp(self, grads: Params, state: dict, params: Params, params_bar: Params,
                   state_bar: dict) -> tuple[Params, dict, Params]:
        # θ' = θ − lr·trace, trace = μ·trace₀ + g (trace = g without momentum)
        if self.momentum == 0:
            return {k: params_bar[k] * -self.lr for k in params}, {}, params_bar
        trace_bar = {k: torch.add(state_bar["trace"][k], params_bar[k], alpha=-self.lr) for k in params}
        return trace_bar, {"trace": {k: t * self.momentum for k, t in trace_bar.items()}}, params_bar


@dataclass(frozen=True)
class AdamW:
    """optax.adamw: u = m̂ / (sqrt(v̂ + eps_root) + eps) + wd·θ ;  θ ← θ − lr·u ; bias correction from step 1."""

    lr: float
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    eps_root: float = 1e-9
    weight_decay: float = 1e-4

    def init(self, params: Params) -> dict:
        zeros = lambda: {k: torch.zeros_like(p) for k, p in params.items()}  # noqa: E731
        return {"step": 0, "m": zeros(), "v": zeros()}

    def update(self, grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        b1, b2 = self.betas
        step_size, decay, root, eps = self._scalars(state["step"] + 1)
        m = {k: torch.lerp(state["m"][k], grads[k], 1 - b1) for k in params}  # b1·m + (1 − b1)·g
        v = {k: torch.addcmul(b2 * state["v"][k], grads[k], grads[k], value=1 - b2) for k in params}
        # With eps_root = 0 this sqrt has an infinite derivative where v = 0: keep eps_root > 0 for metagradients.
        new = {k: torch.addcdiv(decay * params[k], m[k], torch.sqrt(v[k] + root) + eps, value=-step_size)
               for k in params}
        return new, {"step": state["step"] + 1, "m": m, "v": v}

    def _scalars(self, t: int) -> tuple[float, float, float, float]:
        """(step size, decay, root, eps) of update t ≥ 1: the same function as optax's with the bias corrections
        folded into scalars, in 8 tensor ops per parameter instead of 17 (fused lerp / addcmul / addcdiv; the update
        is 1.6× faster, docs/performance.md):
          m̂ / (sqrt(v̂ + eps_root) + eps) = (sqrt(bc2)/bc1) · m / (sqrt(v + eps_root·bc2) + eps·sqrt(bc2))
          θ − lr·(u + wd·θ)               = (1 − lr·wd)·θ − lr·(sqrt(bc2)/bc1) · m / (…)"""
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**t, 1 - b2**t
        return (self.lr * math.sqrt(bc2) / bc1, 1 - self.lr * self.weight_decay, self.eps_root * bc2,
                self.eps * math.sqrt(bc2))

    def update_vjp(self, grads: Params, state: dict, params: Params, params_bar: Params,
                   state_bar: dict) -> tuple[Params, dict, Params]:
        # With s = sqrt(v + root), d = s + eps and θ' = decay·θ − a·m/d (a = step size, as in `update`):
        #   m̄ = m̄' − a·θ̄'/d,  v̄ = v̄' + a·θ̄'·m/(2·s·d²),  ḡ = (1 − b1)·m̄ + 2(1 − b2)·g·v̄,
        #   m̄₀ = b1·m̄,  v̄₀ = b2·v̄,  θ̄ = decay·θ̄'.  In-place ops only touch temporaries created here.
        b1, b2 = self.betas
        a, decay, root, eps = self._scalars(state["step"] + 1)
        g_bar, m_bar0, v_bar0 = {}, {}, {}
        for k in params:
            g, tb = grads[k], params_bar[k]
            m = torch.lerp(state["m"][k], g, 1 - b1)
            s = torch.addcmul(b2 * state["v"][k], g, g, value=1 - b2).add_(root).sqrt_()
            d = s + eps
            q = tb / d
            m_bar = torch.add(state_bar["m"][k], q, alpha=-a)
            q.mul_(m).div_(s).div_(d)
            v_bar = torch.add(state_bar["v"][k], q, alpha=a / 2)
            g_bar[k] = torch.addcmul((1 - b1) * m_bar, g, v_bar, value=2 * (1 - b2))
            m_bar0[k], v_bar0[k] = m_bar.mul_(b1), v_bar.mul_(b2)
        return g_bar, {"m": m_bar0, "v": v_bar0}, {k: decay * params_bar[k] for k in params}


def make_optimizer(cfg: InnerSFTConfig) -> SGD | AdamW:
    if cfg.optimizer == "sgd":
        return SGD(lr=cfg.lr, momentum=cfg.momentum)
    return AdamW(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, eps_root=cfg.eps_root, weight_decay=cfg.weight_decay)
