"""The study's verdicts, from numbers only: one vocabulary, the families of comparisons, Holm's
correction, the equivalence test and the seeds a reading would need.

Every reading and verdict word a study prints (``sweep-report``, ``report``) comes from here:

- a paired difference over seeds reads :data:`LOWER` / :data:`HIGHER` only when its Holm-adjusted
  p (paired t-test over seeds; an exact sign test when the per-seed differences have no spread) is
  below :data:`ALPHA` within its family (Holm 1979); else :data:`EQUIVALENT` ("no difference beyond
  delta") only when the two one-sided tests against +-delta (Schuirmann 1987), Holm-adjusted in the
  same family, are below :data:`ALPHA` (equivalently: the 90% t-interval lies inside +-delta at the
  unadjusted level); else :data:`INCONCLUSIVE`, with its interval and the seeds it would need;
- a paper's claim reads :data:`REPRODUCED` / :data:`NOT_REPRODUCED` / :data:`INCONCLUSIVE` from the
  reading of the comparison it predicts (:func:`claim_verdict`).

Pure functions of plain numbers (accuracies as fractions, differences as fractions); nothing here
trains, attacks or reads a store.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from robdistill.core.stats import SeedSummary, no_spread, seed_summary, sign_test_p, t_test_p

# -- the vocabulary, defined once ----------------------------------------------------------------
LOWER = "lower"
HIGHER = "higher"
EQUIVALENT = "no difference beyond delta"
INCONCLUSIVE = "inconclusive"
READINGS = (LOWER, HIGHER, EQUIVALENT, INCONCLUSIVE)

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

ALPHA = 0.05            # family-wise error rate of each family (Holm), and the TOST level
POWER = 0.80            # the power `seeds_needed` plans for
MAX_SEEDS = 1000        # beyond this `seeds_needed` answers None (">1000")
# The equivalence margin for accuracy differences, fixed before any reading under these rules was
# computed: 3 points of (robust) accuracy. Justified in the README ("Statistics"): it is below the
# seed-to-seed spread of one cell and the single-model Wilson half-width on the digits test set,
# and an order of magnitude below the effects the study resolves (onehot, the standard teacher).
DELTA_ACCURACY = 0.03

# -- the families and the primary metric -----------------------------------------------------------
PRIMARY_METRIC = "autoattack"
PRIMARY_FALLBACKS = ("worst",)  # a suite without AutoAttack: its worst case is primary

FAMILIES: tuple[tuple[str, str], ...] = (
    ("claim 1", "every teacher but the reference x {mean max logit, mean logit gap}, each minus the reference "
                "teacher of the same seed"),
    ("claim 2", "every teacher but the reference: its same-seed rank agreement with the reference minus the "
                "reference's seed-to-seed agreement, paired by seed"),
    ("claim 3 (primary)", "every (teacher, perturbation) minus keep of the same teacher and seed under the primary "
                          "metric (AutoAttack; the worst case when the suite has no AutoAttack)"),
    ("secondary", "the same (teacher, perturbation) comparisons under each other metric, one family per metric: "
                  "shown with their adjusted p, never a claim verdict"),
    ("teacher study", "the AALP ordering: ALP - AT and AALP - ALP under AutoAttack (benchmarks/teacher_study.py)"),
)


def primary_metric(metrics: Sequence[str]) -> str:
    """The primary metric among those measured: AutoAttack, else the worst case, else the last one."""
    for name in (PRIMARY_METRIC, *PRIMARY_FALLBACKS):
        if name in metrics:
            return name
    return metrics[-1] if metrics else ""


# -- the tests -------------------------------------------------------------------------------------

def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the input order: the i-th smallest of m p-values
    becomes max_{j <= i} min(1, (m - j + 1) p_(j)). NaN (no test: one seed) stays NaN and does not
    count in m."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if p == p)
    m = len(finite)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def difference_p(diff: SeedSummary) -> float:
    """The two-sided p of a paired difference over seeds: the one-sample t-test of the per-seed
    differences (= the paired t-test); without spread an exact sign test over seeds; NaN for < 2 seeds."""
    if diff.n < 2:
        return float("nan")
    return sign_test_p(diff.values) if no_spread(diff) else t_test_p(diff)


def tost_p(diff: SeedSummary, delta: float) -> float:
    """Two one-sided t-tests (Schuirmann 1987) of |true difference| < ``delta``: the larger of the
    p-values of H0: mean <= -delta and H0: mean >= +delta. p < alpha iff the (1 - 2 alpha) t-interval
    lies inside (-delta, +delta). Without spread the per-seed values are the difference exactly: 0
    when they all lie inside, 1 otherwise. NaN for < 2 seeds."""
    from scipy.stats import t as student_t

    if diff.n < 2:
        return float("nan")
    if no_spread(diff):
        return 0.0 if abs(diff.mean) < delta else 1.0
    se = diff.std / math.sqrt(diff.n)
    df = diff.n - 1
    p_low = float(student_t.sf((diff.mean + delta) / se, df))    # H0: mean <= -delta
    p_high = float(student_t.cdf((diff.mean - delta) / se, df))  # H0: mean >= +delta
    return max(p_low, p_high)


def interval(diff: SeedSummary, level: float) -> tuple[float, float]:
    """The two-sided ``level`` t-interval of the mean difference (NaN for < 2 seeds)."""
    from scipy.stats import t as student_t

    if diff.n < 2:
        return float("nan"), float("nan")
    half = float(student_t.ppf(0.5 + level / 2, diff.n - 1)) * diff.std / math.sqrt(diff.n)
    return diff.mean - half, diff.mean + half


def direction_power(mean: float, std: float, n: int, alpha: float) -> float:
    """Power of the two-sided one-sample t-test at level ``alpha`` with ``n`` seeds when the true
    difference is ``mean`` and the per-seed spread ``std`` (noncentral t)."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    df = n - 1
    c = float(student_t.ppf(1 - alpha / 2, df))
    nc = abs(mean) / std * math.sqrt(n)
    return float(nct.sf(c, df, nc) + nct.cdf(-c, df, nc))


def equivalence_power(mean: float, std: float, n: int, alpha: float, delta: float) -> float:
    """A lower bound on the power of the two one-sided tests at ``alpha`` with ``n`` seeds when the
    true difference is ``mean`` (|mean| < delta): P(reject low) + P(reject high) - 1 (noncentral t)."""
    from scipy.stats import nct
    from scipy.stats import t as student_t

    df = n - 1
    c = float(student_t.ppf(1 - alpha, df))
    root = math.sqrt(n) / std
    low = float(nct.sf(c, df, (mean + delta) * root))
    high = float(nct.cdf(-c, df, (mean - delta) * root))
    return max(0.0, low + high - 1.0)


def seeds_needed(mean: float, std: float, *, alpha: float = ALPHA, power: float = POWER,
                 delta: float | None = None) -> int | None:
    """The fewest seeds (>= 2) at which a paired difference of true size ``mean`` and per-seed spread
    ``std`` reads lower / higher (``delta`` None: the two-sided t-test at ``alpha``), or no difference
    beyond ``delta`` (the two one-sided tests), with probability ``power``. Pass alpha / m for a family
    of m: Holm's first step, so enough for any rank. Without spread: the exact sign test's (or, for
    equivalence, 2 seeds). None when no number up to :data:`MAX_SEEDS` does (a zero mean for a
    direction, |mean| >= delta for equivalence)."""
    if delta is not None and abs(mean) >= delta:
        return None
    if delta is None and mean == 0:
        return None
    if not std > 0:  # no spread: the sign test needs 2^(1-n) < alpha; equivalence holds at once
        if delta is not None:
            return 2
        n = 2
        while 2.0 ** (1 - n) >= alpha:
            n += 1
        return n if n <= MAX_SEEDS else None
    for n in range(2, MAX_SEEDS + 1):
        got = (direction_power(mean, std, n, alpha) if delta is None
               else equivalence_power(mean, std, n, alpha, delta))
        if got >= power:
            return n
    return None


# -- readings ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """One comparison's reading within its family: the word (:data:`READINGS`), the raw and
    Holm-adjusted p of the difference and of the equivalence test, and for an inconclusive reading
    the seeds it would need (to read lower / higher; to read no difference beyond delta)."""

    word: str
    mean: float
    p: float
    p_adjusted: float
    tost: float = float("nan")
    tost_adjusted: float = float("nan")
    family_size: int = 1
    note: str = ""                          # "1 seed", "no spread, sign test"
    seeds_for_direction: int | None = None
    seeds_for_equivalence: int | None = None

    @property
    def text(self) -> str:
        return f"{self.word} ({self.note})" if self.note else self.word

    @property
    def seeds_text(self) -> str:
        """'-' for a settled reading; else 'lower: 7; within delta: 12' (">1000" beyond MAX_SEEDS)."""
        if self.word != INCONCLUSIVE or self.note == "1 seed":
            return "-"
        parts = ([f"{LOWER if self.mean < 0 else HIGHER}: {_seeds(self.seeds_for_direction)}"] if self.mean != 0
                 else [])
        if self.seeds_for_equivalence is not None:
            parts.append(f"within delta: {self.seeds_for_equivalence}")
        return "; ".join(parts) or "-"


def _seeds(n: int | None) -> str:
    return f">{MAX_SEEDS}" if n is None else str(n)


def read_family(diffs: Sequence[SeedSummary], delta: float | None = None, alpha: float = ALPHA,
                pvalues: Sequence[float] | None = None) -> list[Reading]:
    """The readings of one family of paired differences over seeds (Holm within the family).
    ``delta`` None: no equivalence test (a reading is lower, higher or inconclusive). ``pvalues``: the
    raw p-values when they are known more precisely than ``diffs`` carry them (a table printed with
    rounded intervals, see ``benchmarks/reread_verdicts.py``); by default :func:`difference_p`."""
    raw = [difference_p(d) for d in diffs] if pvalues is None else [float(p) for p in pvalues]
    adjusted = holm(raw)
    tosts = [tost_p(d, delta) if delta is not None else float("nan") for d in diffs]
    tosts_adjusted = holm(tosts) if delta is not None else tosts
    m = sum(p == p for p in raw)
    out = []
    for d, p, pa, tp, tpa in zip(diffs, raw, adjusted, tosts, tosts_adjusted):
        if d.n < 2:
            out.append(Reading(INCONCLUSIVE, d.mean, p, pa, tp, tpa, m, "1 seed"))
            continue
        note = "no spread, sign test" if no_spread(d) else ""
        if pa < alpha:
            word = LOWER if d.mean < 0 else HIGHER
        elif delta is not None and tpa < alpha:
            word, note = EQUIVALENT, "no spread" if note else ""
        elif no_spread(d) and abs(d.mean) <= 1e-12 and delta is None:
            word, note = INCONCLUSIVE, "no spread, zero difference"
        else:
            word = INCONCLUSIVE
        for_direction = for_equivalence = None
        if word == INCONCLUSIVE:
            std = 0.0 if no_spread(d) else d.std
            for_direction = seeds_needed(d.mean, std, alpha=alpha / max(m, 1))
            if delta is not None:
                for_equivalence = seeds_needed(d.mean, std, alpha=alpha / max(m, 1), delta=delta)
        out.append(Reading(word, d.mean, p, pa, tp, tpa, m, note, for_direction, for_equivalence))
    return out


def read_values(families: Sequence[Sequence[Sequence[float]]], delta: float | None = None) -> list[list[Reading]]:
    """:func:`read_family` for per-seed differences given as plain lists, one list of lists per family."""
    return [read_family([seed_summary(v) for v in family], delta) for family in families]


def claim_verdict(word: str, predicted: str = LOWER) -> str:
    """A paper's claim that predicts ``predicted`` (lower / higher) for one comparison: reproduced when
    the reading is that direction; not reproduced when it is the other direction or no difference
    beyond delta; inconclusive otherwise."""
    if word == predicted:
        return REPRODUCED
    if word in (LOWER, HIGHER, EQUIVALENT):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combined_verdict(verdicts: Sequence[str]) -> str:
    """A claim made of several predictions (claim 1: max logit and gap both lower): reproduced when
    every part is, not reproduced when any part is not, else inconclusive."""
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE


def fmt_p(p: float) -> str:
    """A p-value as the tables print it ('-' for no test)."""
    return "-" if p != p else f"{p:.3g}"


__all__ = ["LOWER", "HIGHER", "EQUIVALENT", "INCONCLUSIVE", "READINGS", "REPRODUCED", "NOT_REPRODUCED", "VERDICTS",
           "ALPHA", "POWER", "DELTA_ACCURACY", "PRIMARY_METRIC", "FAMILIES", "primary_metric", "holm",
           "difference_p", "tost_p", "interval", "seeds_needed", "Reading", "read_family", "read_values",
           "claim_verdict", "combined_verdict", "fmt_p"]
