"""Statistics for reporting: Wilson score intervals for accuracies, and seed aggregates."""
from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Proportion:
    """k successes out of n with a 95% Wilson score interval (Wilson 1927)."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"acc": self.value, "ci_low": self.low, "ci_high": self.high, "k": self.k, "n": self.n}


def wilson(k: int, n: int, z: float = Z95) -> Proportion:
    """Wilson score interval: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    if n == 0:
        return Proportion(k, n, float("nan"), float("nan"))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exact endpoints, free of rounding
    high = 1.0 if k == n else min(1.0, centre + half)
    return Proportion(k, n, low, high)


@dataclass(frozen=True)
class SeedSummary:
    """A statistic over independent seeds: mean, sample std and a 95% Student-t interval for the
    mean (undefined, NaN, with fewer than two seeds)."""

    values: tuple[float, ...]
    mean: float
    std: float
    low: float
    high: float

    @property
    def n(self) -> int:
        return len(self.values)


def seed_summary(values: list[float] | tuple[float, ...]) -> SeedSummary:
    """mean +- t_{0.975, n-1} * std / sqrt(n) over per-seed values (SPEC section 4: across seeds)."""
    from scipy.stats import t as student_t

    values = tuple(float(v) for v in values)
    n = len(values)
    if n == 0:
        return SeedSummary(values, *(float("nan"),) * 4)
    mean = sum(values) / n
    if n < 2:
        return SeedSummary(values, mean, float("nan"), float("nan"), float("nan"))
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(student_t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return SeedSummary(values, mean, std, mean - half, mean + half)


def mcnemar_exact(a: list[int] | list[bool], b: list[int] | list[bool]) -> float:
    """Exact two-sided McNemar test for paired per-sample flags of two models on the same inputs:
    a binomial test with p = 1/2 on the discordant pairs (only a right vs only b right)."""
    from scipy.stats import binomtest

    if len(a) != len(b):
        raise ValueError(f"paired flags differ in length: {len(a)} vs {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
