"""Across-seed summaries (METHODS section 4): mean, sample std and the 95% t-interval."""
from __future__ import annotations

import math

import pytest

from robdistill.core.stats import seed_summary


def test_seed_summary_known_values() -> None:
    # t_{0.975, 2} = 4.302652729911275 (tables); std of (0.5, 0.6, 0.7) = 0.1
    s = seed_summary([0.5, 0.6, 0.7])
    assert s.n == 3 and s.mean == pytest.approx(0.6) and s.std == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (s.low, s.high) == pytest.approx((0.6 - half, 0.6 + half))
    # t_{0.975, 4} = 2.7764451051977987; values 1..5: mean 3, std sqrt(2.5)
    s = seed_summary([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert (s.mean, s.low, s.high) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert isinstance(s.low, float)


def test_seed_summary_degenerate_cases() -> None:
    one = seed_summary([0.7])
    assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(seed_summary([]).mean)
    same = seed_summary([0.25, 0.25])
    assert same.std == 0.0 and same.low == same.high == 0.25


def test_mcnemar_exact() -> None:
    from robdistill.core.stats import mcnemar_exact

    # 8 pairs where only a is right, 2 where only b is: two-sided binomial p = 2 * P(X >= 8 | 10, 1/2)
    a = [1] * 8 + [0] * 2 + [1] * 5 + [0] * 3
    b = [0] * 8 + [1] * 2 + [1] * 5 + [0] * 3
    assert mcnemar_exact(a, b) == pytest.approx(2 * (45 + 10 + 1) / 1024)
    assert mcnemar_exact(b, a) == pytest.approx(mcnemar_exact(a, b))
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([1], [1, 0])


def test_direction_never_comes_from_zero_variance() -> None:
    """Issue "Trust" item 7: two seeds each +1 sample is no evidence of a direction."""
    from robdistill.core.stats import direction

    assert direction(seed_summary([1 / 359, 1 / 359])).startswith("inconclusive (no spread, sign test p = 0.5")
    assert direction(seed_summary([9 / 1000 - 8 / 1000, 1 / 1000 - 0 / 1000])).startswith("inconclusive")
    assert direction(seed_summary([0.01] * 6)) == "higher (no spread, sign test p = 0.031)"
    assert direction(seed_summary([-0.01] * 6)).startswith("lower (no spread")
    assert direction(seed_summary([0.0, 0.0])) == "equal"
    assert direction(seed_summary([0.10, 0.12, 0.11])) == "higher"
    assert direction(seed_summary([0.10, -0.12, 0.11])) == "inconclusive"


def test_t_test_p_is_the_paired_t_test() -> None:
    from scipy.stats import ttest_rel

    from robdistill.core.stats import t_test_p

    a, b = [0.71, 0.69, 0.75, 0.70], [0.68, 0.69, 0.70, 0.66]
    diff = seed_summary([x - y for x, y in zip(a, b)])
    assert t_test_p(diff) == pytest.approx(float(ttest_rel(a, b).pvalue))
    assert math.isnan(t_test_p(seed_summary([0.1]))) and math.isnan(t_test_p(seed_summary([0.1, 0.1])))
