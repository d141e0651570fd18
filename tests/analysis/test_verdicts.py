"""The study's verdict rules (issue 29) on synthetic studies whose truth is known: Holm's adjusted
p-values, the equivalence test, the seeds a reading needs, and the readings a synthetic sweep gets
through `paired_comparisons` (the path `sweep-report` and `report` print)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robdistill.analysis.verdicts import (DELTA_ACCURACY, EQUIVALENT, HIGHER, INCONCLUSIVE, LOWER, NOT_REPRODUCED,
                                          REPRODUCED, claim_verdict, combined_verdict, direction_power, holm,
                                          interval, primary_metric, read_family, seeds_needed, tost_p)
from robdistill.core.stats import seed_summary
from robdistill.eval.results import EvaluationResult
from robdistill.analysis.study import Cell, paired_comparisons, paired_rows


def test_holm_gives_the_textbook_adjusted_values() -> None:
    # p = 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005, 0.01, 0.03, 0.04 -> 4 x 0.005 = 0.02,
    # 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(1 x 0.04, 0.06) = 0.06 (monotone), back in input order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1; a NaN (no test) neither counts in m nor changes
    adjusted = holm([0.5, float("nan"), 0.4])
    assert adjusted[0] == pytest.approx(0.8) and adjusted[2] == pytest.approx(0.8) and math.isnan(adjusted[1])
    assert holm([0.9, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])


def test_holm_turns_a_borderline_family_member_inconclusive() -> None:
    # one difference of p ~ 0.02 alone reads higher; among 8 comparisons (the others null) it does not
    strong = [0.040, 0.055, 0.050]
    alone = read_family([seed_summary(strong)], DELTA_ACCURACY)[0]
    assert alone.p < 0.05 and alone.word == HIGHER
    nulls = [[0.01, -0.02, 0.015], [-0.03, 0.02, 0.0], [0.02, 0.01, -0.04]] * 3
    family = read_family([seed_summary(strong)] + [seed_summary(v) for v in nulls[:7]], DELTA_ACCURACY)
    assert family[0].p == pytest.approx(alone.p) and family[0].p_adjusted > 0.05
    assert family[0].word == INCONCLUSIVE and family[0].family_size == 8


def test_tost_agrees_with_the_90_percent_interval() -> None:
    for values in ([0.001, -0.004, 0.006], [0.02, 0.025, 0.03], [0.0, 0.01, -0.01, 0.005], [-0.05, 0.04, 0.0]):
        s = seed_summary(values)
        low, high = interval(s, 0.90)
        inside = -DELTA_ACCURACY < low and high < DELTA_ACCURACY
        assert (tost_p(s, DELTA_ACCURACY) < 0.05) == inside, values


def test_seeds_needed_matches_power_tables() -> None:
    # paired / one-sample t-test, two-sided alpha 0.05, power 0.8: effect size 1 -> 10, 0.5 -> 34 (G*Power)
    assert seeds_needed(1.0, 1.0) == 10
    assert seeds_needed(0.5, 1.0) == 34
    n = seeds_needed(0.01, 0.05)
    assert direction_power(0.01, 0.05, n, 0.05) >= 0.8 > direction_power(0.01, 0.05, n - 1, 0.05)
    assert seeds_needed(0.0, 0.05) is None                         # no difference to resolve
    assert seeds_needed(0.01, 0.0) == 6                             # no spread: the sign test needs 6 seeds
    assert seeds_needed(0.01, 0.05, alpha=0.05 / 8) > n             # a family of 8 needs more
    assert seeds_needed(0.05, 0.01, delta=DELTA_ACCURACY) is None   # beyond the margin: never equivalent


def test_claim_verdicts() -> None:
    assert claim_verdict(LOWER) == REPRODUCED
    assert claim_verdict(HIGHER) == NOT_REPRODUCED and claim_verdict(EQUIVALENT) == NOT_REPRODUCED
    assert claim_verdict(INCONCLUSIVE) == INCONCLUSIVE
    assert combined_verdict([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combined_verdict([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combined_verdict([REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert primary_metric(["pgd", "cw", "autoattack", "worst"]) == "autoattack"
    assert primary_metric(["pgd", "worst"]) == "worst"


# -- synthetic studies -----------------------------------------------------------------------------

N = 2000  # test images per evaluation


def evaluation(acc: float) -> EvaluationResult:
    """An evaluation whose AutoAttack (and PGD) accuracy is ``acc`` of N images."""
    k = int(round(acc * N))
    flags = torch.tensor([True] * k + [False] * (N - k))
    return EvaluationResult("m", 0.1, torch.zeros(N, dtype=torch.long), torch.ones(N, dtype=torch.bool),
                            {"pgd": flags, "autoattack": flags}, {}, {})


def synthetic_study(effects: dict[str, tuple[float, float]], seeds: int, seed: int = 0) -> dict[str, object]:
    """Teacher 'at' with keep and one perturbation per entry: perturbation = keep + effect + noise of
    the given spread (per seed, in accuracy), keep itself varies by 3 points across seeds. Returns each
    perturbation's primary (AutoAttack) comparison."""
    rng = np.random.default_rng(seed)
    cells = []
    for s in range(seeds):
        keep = 0.70 + 0.03 * rng.standard_normal()
        cells.append(Cell("at", "keep", s, evaluation(keep), f"k{s}"))
        for name, (effect, spread) in effects.items():
            cells.append(Cell("at", name, s, evaluation(keep + effect + spread * rng.standard_normal()), f"{name}{s}"))
    return {c.perturb: c for c in paired_comparisons(cells) if c.primary}, cells


def test_synthetic_study_readings_match_the_truth() -> None:
    truth = {"cost5": (-0.05, 0.01),      # an injected 5-point cost, 1 point of spread
             "zero": (0.0, 0.003),        # no effect, small spread
             "small": (0.01, 0.08)}       # a 1-point effect with 8 points of spread
    found, cells = synthetic_study(truth, seeds=5)
    assert found["cost5"].reading.word == LOWER and found["cost5"].reading.p_adjusted < 0.05
    assert found["zero"].reading.word == EQUIVALENT and found["zero"].reading.tost_adjusted < 0.05
    small = found["small"].reading
    assert small.word == INCONCLUSIVE and small.family_size == 3
    assert small.seeds_for_direction is None or small.seeds_for_direction > 5
    assert small.seeds_text != "-"
    # the printed table carries the same readings, with raw and adjusted p and the seeds needed
    header, rows = paired_rows(cells)
    printed = {r[1].split(" - ")[0]: dict(zip(header, r)) for r in rows if r[2] == "autoattack"}
    assert printed["cost5"]["reading"] == LOWER and printed["cost5"]["family"] == "primary"
    assert printed["zero"]["reading"] == EQUIVALENT
    assert printed["small"]["reading"] == INCONCLUSIVE and printed["small"]["seeds needed"] == small.seeds_text
    assert float(printed["small"]["Holm p"]) >= float(printed["small"]["p"])


def test_synthetic_readings_over_many_noise_draws() -> None:
    """Over 100 synthetic studies the readings are right as often as the rules promise: the 5-point
    cost always reads lower; the zero effect reads no difference beyond delta and reads a direction at
    most about as often as the family-wise alpha allows; the 1-point effect in 8 points of spread is
    inconclusive nearly always (a direction or equivalence only by the luck of a narrow draw)."""
    from collections import Counter

    words: Counter = Counter()
    for seed in range(100):
        found, _ = synthetic_study({"cost5": (-0.05, 0.01), "zero": (0.0, 0.003), "small": (0.01, 0.08)}, 5, seed)
        words.update((name, c.reading.word) for name, c in found.items())
    assert words[("cost5", LOWER)] == 100
    assert words[("zero", EQUIVALENT)] >= 90 and words[("zero", LOWER)] + words[("zero", HIGHER)] <= 8
    assert words[("small", INCONCLUSIVE)] >= 90


def test_seeds_needed_is_enough_in_simulation() -> None:
    """The seeds an inconclusive reading asks for resolve its difference about 80% of the time when
    the truth is what was observed (simulated studies of that many seeds, a family of one)."""
    mean, std = 0.02, 0.03
    n = seeds_needed(mean, std)
    rng = np.random.default_rng(7)
    resolved = sum(read_family([seed_summary(list(mean + std * rng.standard_normal(n)))])[0].word == HIGHER
                   for _ in range(1000))
    assert 0.75 <= resolved / 1000 <= 0.90
