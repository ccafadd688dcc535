"""Optimizers as pure functions `update(grads, state, params) -> (params, state)`, optax-style.

Nothing is modified in place, so torch.func can differentiate an update with respect to its gradient, its state and
its parameters: the metagradient engine needs exactly that. `state["step"]` is a Python int (how many updates were
applied); every other entry of the state is a dict of tensors shaped like the parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dpg.sft import InnerSFTConfig, Params


@dataclass(frozen=True)
class SGD:
    lr: float
    momentum: float = 0.0

    def init(self, params: Params) -> dict:
        if self.momentum == 0:
            return {"step": 0}
        return {"step": 0, "trace": {k: torch.zeros_like(p) for k, p in params.items()}}

    def update(self, grads: Params, state: dict, params: Params) -> tuple[Params, dict]:
        if self.momentum == 0:
            return {k: params[k] - self.lr * grads[k] for k in params}, {"step": state["step"] + 1}
        trace = {k: self.momentum * state["trace"][k] + grads[k] for k in params}
        return {k: params[k] - self.lr * trace[k] for k in params}, {"step": state["step"] + 1, "trace": trace}


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
        t = state["step"] + 1
        m = {k: b1 * state["m"][k] + (1 - b1) * grads[k] for k in params}
        v = {k: b2 * state["v"][k] + (1 - b2) * grads[k] * grads[k] for k in params}
        new = {}
        for k in params:
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            # With eps_root = 0 this sqrt has an infinite derivative where v̂ = 0: keep eps_root > 0 for metagradients.
            u = m_hat / (torch.sqrt(v_hat + self.eps_root) + self.eps) + self.weight_decay * params[k]
            new[k] = params[k] - self.lr * u
        return new, {"step": t, "m": m, "v": v}


def make_optimizer(cfg: InnerSFTConfig) -> SGD | AdamW:
    if cfg.optimizer == "sgd":
        return SGD(lr=cfg.lr, momentum=cfg.momentum)
    return AdamW(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, eps_root=cfg.eps_root, weight_decay=cfg.weight_decay)
