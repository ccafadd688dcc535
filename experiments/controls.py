"""The drift control of the studies: DPG toward an objective unrelated to any study.

Φ_control = ⟨R, θ − θ₀⟩ / sqrt(#parameters), R a fixed random ±1 direction over every parameter of the target. The
`control` arm of experiments/run.py trains the generator with exact DPG rewards for this Φ (same GRPO, same
AdamW inner SFT, same steps) and is then evaluated end to end with the study's own Φ, like every other arm. What
that arm gains on the study's Φ is what GRPO's drift alone (lower entropy, other lengths, other tokens) does to the
generated data; an arm beats chance only where it beats the control.
"""

from __future__ import annotations

import torch


class RandomDirection:
    def __init__(self, seed: int = 0):
        self.seed = seed
        self.directions: dict[str, torch.Tensor] = {}

    def _direction(self, name: str, like: torch.Tensor) -> torch.Tensor:
        if name not in self.directions:
            g = torch.Generator().manual_seed(self.seed + sum(map(ord, name)))
            self.directions[name] = torch.randint(0, 2, like.shape, generator=g).to(like.dtype) * 2 - 1
        return self.directions[name].to(like.device)

    def __call__(self, model, params):
        initial = dict(model.named_parameters())
        total, count = 0.0, 0
        for name, p in params.items():
            if name in initial and initial[name].requires_grad:
                total = total + (self._direction(name, p) * (p - initial[name].detach())).sum()
                count += p.numel()
        return total / count ** 0.5
