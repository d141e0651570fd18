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
