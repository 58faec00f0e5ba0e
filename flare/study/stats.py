"""The few statistics the reports need: mean and sample spread over seeds, and Student's t
quantile for 95% intervals (scipy is not among the pinned dependencies)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flare.errors import FlareError


@dataclass(frozen=True)
class Stat:
    """Mean over seeds; ``std`` is the sample standard deviation (ddof=1), None with a single seed."""

    mean: float
    std: float | None
    n: int

    def format(self) -> str:
        return f"{self.mean:.1f}" if self.std is None else f"{self.mean:.1f} ± {self.std:.1f}"


def seed_stat(values: Sequence[float]) -> Stat:
    """Mean and sample standard deviation of one quantity over seeds (or languages)."""
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def t_interval(values: Sequence[float]) -> tuple[Stat, float | None]:
    """Mean and sample sd of `values` (seeds, or languages), with the half width of the 95% t interval
    around the mean (None with a single value: no spread to estimate)."""
    stat = seed_stat(values)
    half = None if stat.std is None else t_quantile_975(stat.n - 1) * stat.std / math.sqrt(stat.n)
    return stat, half


def t_quantile_975(df: int) -> float:
    """Two-sided 95% critical value of Student's t with integer ``df`` (no scipy in the pins): the exact
    finite-series CDF for integer degrees of freedom, inverted by bisection."""
    if df < 1:
        raise FlareError(f"t quantile needs df >= 1, got {df}")

    def central_mass(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        c2, s = math.cos(theta) ** 2, math.sin(theta)
        if df % 2:
            term, total = s * math.cos(theta), 0.0
            for k in range((df - 1) // 2):
                total += term
                term *= (2 * k + 2) / (2 * k + 3) * c2
            return 2 / math.pi * (theta + total)
        term, total = 1.0, 0.0
        for k in range(df // 2):
            total += term
            term *= (2 * k + 1) / (2 * k + 2) * c2
        return s * total

    low, high = 0.0, 1000.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if central_mass(mid) < 0.95 else (low, mid)
    return (low + high) / 2
