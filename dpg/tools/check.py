"""`dpg check`: the engine's metagradient against finite differences, on the configured target, objective and inner
SFT, in float64.

A few example weights wᵢ are picked evenly over the examples; for each, the metagradient dΦ/dwᵢ of one reverse pass
is compared with the central difference (Φ(1 + h eᵢ) − Φ(1 − h eᵢ)) / 2h of two more inner SFT runs. The examples
are lines of the shipped corpus, so the check needs no generator. Importing this module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from dpg.config.schema import DPGConfig


@dataclass(frozen=True)
class WeightCheck:
    """One example weight: its metagradient beside its finite difference."""

    index: int
    metagrad: float
    finite_difference: float

    @property
    def relative_error(self) -> float:
        """|mg − fd| / max(|mg|, |fd|); NaN when either is not finite (so the check fails, never passes)."""
        scale = max(abs(self.finite_difference), abs(self.metagrad), 1e-300)
        return abs(self.metagrad - self.finite_difference) / scale


@dataclass(frozen=True)
class CheckResult:
    """What `check` measured; `str()` is the table `dpg check` prints."""

    weights: list[WeightCheck]
    examples: int
    inner_steps: int
    h: float
    tol: float

    @property
    def max_relative_error(self) -> float:
        errors = [w.relative_error for w in self.weights]
        return math.nan if any(math.isnan(e) for e in errors) else max(errors)

    @property
    def passed(self) -> bool:
        return self.max_relative_error <= self.tol  # False for NaN

    def __str__(self) -> str:
        lines = [f"{self.inner_steps} inner steps, {self.examples} examples, float64, central differences with "
                 f"h = {self.h:g}"]
        lines += [f"  w[{w.index}]: metagrad {w.metagrad:+.10e}  finite difference {w.finite_difference:+.10e}  "
                  f"relative error {w.relative_error:.2e}" for w in self.weights]
        lines.append(f"max relative error: {self.max_relative_error:.3e} ({'OK' if self.passed else 'FAILED'}, "
                     f"tolerance {self.tol:g})")
        return "\n".join(lines)


def check(cfg: DPGConfig, n: int = 0, weights: int = 5, h: float | None = None, tol: float = 1e-4) -> CheckResult:
    """Finite-difference check of the engine on cfg's target and objective, with inner_sft.dtype set to float64.

    n: examples (0: two inner steps' worth); weights: how many example weights to perturb; h: the step (default 1e-4
    for SGD, 1e-6 for AdamW); tol: `passed` is max relative error ≤ tol."""
    for key, value, low in (("n", n, 0), ("weights", weights, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key}: must be an integer ≥ {low}, got {value!r}")
    for key, value, positive in (("h", h, True), ("tol", tol, False)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0 or (positive and value == 0)):
            raise ValueError(f"{key}: must be a finite number {'> 0' if positive else '≥ 0'}, got {value!r}")
    cfg = dataclasses.replace(cfg, inner_sft=dataclasses.replace(cfg.inner_sft, dtype="float64"))
    import torch

    from dpg.training import assembly, models
    from dpg.training.rewards import to_target_examples

    engine, _, target_tok = assembly.build_engine(cfg)
    n = n or 2 * cfg.inner_sft.examples_per_step
    lines = models.corpus_lines()
    examples, _ = to_target_examples([lines[i % len(lines)] for i in range(n)], target_tok, cfg.inner_sft.max_length)
    res = engine.run(examples)
    h = h if h is not None else (1e-4 if cfg.inner_sft.optimizer == "sgd" else 1e-6)
    picks = torch.linspace(0, n - 1, min(weights, n)).round().long().unique().tolist()
    checked = []
    for i in picks:
        e = torch.zeros(n, dtype=torch.float64)
        e[i] = h
        fd = (engine.value(examples, 1 + e) - engine.value(examples, 1 - e)) / (2 * h)
        checked.append(WeightCheck(i, res.metagrads[i].item(), float(fd)))
    return CheckResult(checked, n, res.num_steps, h, tol)
