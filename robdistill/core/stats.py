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
    """mean +- t_{0.975, n-1} * std / sqrt(n) over per-seed values (METHODS section 4: across seeds)."""
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


SPREAD_TOLERANCE = 1e-12  # accuracy differences are multiples of 1/n: a real spread is far larger
SIGN_TEST_ALPHA = 0.05


def no_spread(summary: SeedSummary) -> bool:
    """Whether the per-seed values (>= 2 seeds) all agree up to float rounding: the same +1 sample
    out of n, computed as k'/n - k/n, can differ in its last bits from seed to seed, and a t-test
    on such noise would read p ~ 1e-16."""
    return summary.n >= 2 and summary.std <= SPREAD_TOLERANCE


def sign_test_p(values: list[float] | tuple[float, ...]) -> float:
    """Exact two-sided sign test over seeds: a binomial test (p = 1/2) on the number of positive
    values among the nonzero ones (beyond ``SPREAD_TOLERANCE``); 1 when none is nonzero."""
    from scipy.stats import binomtest

    nonzero = [v for v in values if abs(v) > SPREAD_TOLERANCE]
    if not nonzero:
        return 1.0
    return float(binomtest(sum(v > 0 for v in nonzero), len(nonzero), 0.5).pvalue)


def t_test_p(summary: SeedSummary) -> float:
    """Two-sided one-sample t-test of mean 0 over the values (>= 2 seeds, with spread): for per-seed
    differences this is the paired t-test over seeds. NaN with fewer than two values or no spread."""
    from scipy.stats import t as student_t

    if summary.n < 2 or not summary.std > SPREAD_TOLERANCE:
        return float("nan")
    t = summary.mean / (summary.std / math.sqrt(summary.n))
    return float(2 * student_t.sf(abs(t), summary.n - 1))


def direction(summary: SeedSummary) -> str:
    """The direction of a per-seed difference (>= 2 seeds), always from a test, never from zero
    variance: 'higher' / 'lower' when the 95% t-interval excludes 0, else 'inconclusive'. Without
    spread the t-interval is undefined and an exact sign test over seeds decides (alpha 0.05, so at
    least 6 seeds); a zero mean without spread is 'equal'."""
    if no_spread(summary):
        if abs(summary.mean) <= SPREAD_TOLERANCE:
            return "equal"
        p = sign_test_p(summary.values)
        word = ("higher" if summary.mean > 0 else "lower") if p < SIGN_TEST_ALPHA else "inconclusive"
        return f"{word} (no spread, sign test p = {p:.2g})"
    if summary.low > 0:
        return "higher"
    if summary.high < 0:
        return "lower"
    return "inconclusive"
