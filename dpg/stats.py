"""The statistics every report of dpg uses: mean and standard error, paired differences with Student's t test and the
sign count, and Holm's correction. Pure Python (torch-free, no scipy), so configs, evaluations and experiments share
one implementation.

Standard error = sample standard deviation (n − 1) / √n. A paired difference is taken per pair (per seed or per
repeat) before its mean, so the noise both members share cancels. The t test is two-sided with n − 1 degrees of
freedom; its p-value comes from the regularised incomplete beta function, p = I_{df/(df+t²)}(df/2, 1/2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence


def mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean; the standard error is nan for fewer than two values (there is none)."""
    n = len(xs)
    if n == 0:
        raise ValueError("mean_se: no values")
    m = math.fsum(xs) / n
    if n < 2:
        return m, math.nan
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1) / n)


@dataclass(frozen=True)
class Paired:
    """a − b over n pairs: mean ± se, Student's t (df = n − 1) with its two-sided p, and the sign count."""

    n: int
    mean: float
    se: float
    t: float
    p: float
    wins: int  # pairs with a > b
    losses: int  # pairs with a < b
    ties: int

    def to_dict(self) -> dict:
        return asdict(self)


def paired(a: Sequence[float], b: Sequence[float]) -> Paired:
    """The paired difference a − b (pairs matched by position, e.g. by seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired: {len(a)} values against {len(b)}; pairs must match one to one")
    d = [x - y for x, y in zip(a, b)]
    m, se = mean_se(d)
    if len(d) < 2:
        t = p = math.nan
    elif se == 0:
        t, p = (0.0, 1.0) if m == 0 else (math.copysign(math.inf, m), 0.0)
    else:
        t = m / se
        p = t_test_p(t, len(d) - 1)
    return Paired(len(d), m, se, t, p, sum(x > 0 for x in d), sum(x < 0 for x in d), sum(x == 0 for x in d))


def t_test_p(t: float, df: int) -> float:
    """Two-sided p-value of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t_test_p: df must be at least 1, got {df}")
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact binomial p of `wins` against `losses` (ties dropped) under p = 1/2."""
    n, k = wins + losses, min(wins, losses)
    if n == 0:
        return 1.0
    tail = math.fsum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given): reject where adjusted p < α controls the
    family-wise error rate at α over all the tests."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) by Lentz's continued fraction (relative error ~1e-14)."""
    if not 0 <= x <= 1:
        raise ValueError(f"betainc: x must lie in [0, 1], got {x}")
    if x in (0, 1):
        return float(x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point: use the symmetry
        return 1 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b
    return math.exp(log_front) * _beta_fraction(a, b, x) / a


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny, c, d = 1e-300, 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            return h
    raise ArithmeticError(f"betainc: continued fraction did not converge for a={a}, b={b}, x={x}")
