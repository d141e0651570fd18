"""A study's statistics (METHODS section 6): the cells of a teacher x perturbation x seed grid,
each metric's summary over seeds, and the paired comparisons of every perturbation against ``keep``
for the same teacher and seed (Seguin et al. 2021, claim 3) with their readings under one family per
metric (:mod:`robdistill.analysis.verdicts`). Plain data in, rows out: `sweep` logs them,
`sweep-report` and `report` render them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from robdistill.analysis.verdicts import DELTA_ACCURACY, Reading, fmt_p, primary_metric, read_family
from robdistill.core.stats import SeedSummary, mcnemar_exact, no_spread, seed_summary
from robdistill.eval.results import EvaluationResult

TEACHER_ROW = "(teacher)"  # the perturbation column of a teacher's own cells


@dataclass
class Cell:
    """One evaluated model of the grid: a student (teacher, perturb, seed) or a teacher (perturb
    = TEACHER_ROW)."""

    teacher: str
    perturb: str
    seed: int
    result: EvaluationResult
    run_id: str


def metrics_of(cells: Sequence[Cell]) -> list[str]:
    """Clean, every attack of the suite in the suite's order (FGSM and a transfer attack included),
    the worst case last."""
    attacks = list(dict.fromkeys(key for cell in cells for key in cell.result.robust))
    present = {key for cell in cells for key in cell.result.accuracies()}
    return [m for m in ("clean", *attacks, "worst") if m in present]


def cell_text(cells: Sequence[Cell], metric: str) -> str:
    """Accuracy % of one metric over seeds: 'mean ± std [t-interval clipped to 0-100]' for several
    seeds, 'acc [Wilson]' for one."""
    if len(cells) == 1:
        p = cells[0].result.accuracies()[metric]
        return f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"
    s = seed_summary([c.result.accuracies()[metric].value for c in cells])
    low, high = max(s.low, 0.0), min(s.high, 1.0)  # an accuracy interval lies in [0, 1]
    return f"{100 * s.mean:.1f} ± {100 * s.std:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def groups_of(cells: Sequence[Cell]) -> dict[tuple[str, str], list[Cell]]:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.teacher, cell.perturb), []).append(cell)
    return groups


def summary_rows(cells: Sequence[Cell]) -> tuple[list[str], list[list[str]]]:
    """Per teacher and perturbation (the teacher itself first), each metric over seeds."""
    metrics = metrics_of(cells)
    header = ["teacher", "perturb", "seeds", "n"] + metrics
    rows = []
    for (teacher, perturb), group in groups_of(cells).items():
        ordered = sorted(group, key=lambda c: c.seed)
        rows.append([teacher, perturb, ",".join(str(c.seed) for c in ordered), str(ordered[0].result.n)]
                    + [cell_text(ordered, m) if all(m in c.result.accuracies() for c in ordered) else "-"
                       for m in metrics])
    rows.sort(key=lambda r: (r[0], r[1] != TEACHER_ROW))
    return header, rows


def sweep_markdown(cells: Sequence[Cell]) -> str:
    """A sweep parent's description: the summary and paired tables (as ``--out x.md`` writes them)."""
    from robdistill.eval.tables import markdown_table

    paired = paired_rows(cells)
    return ("Sweep summary (accuracy %; mean ± std over seeds [95% t-interval], or [95% Wilson] for one seed)"
            "\n\n" + markdown_table(*summary_rows(cells))
            + "\n\nEach perturbation against keep, same teacher and seed (Seguin et al. claim 3)\n\n"
            + (markdown_table(*paired) if paired[1] else "(no keep cells to compare against)"))


PAIRED_HEADER = ["teacher", "comparison", "metric", "family", "seeds", "difference (points)", "paired t p", "p",
                 "Holm p", "TOST p (Holm)", "McNemar p per seed", "reading", "seeds needed"]


@dataclass(frozen=True)
class PairedComparison:
    """One perturbation minus the reference for one teacher and metric: the per-seed differences, the
    McNemar p per seed, and the reading within its metric's family."""

    teacher: str
    perturb: str
    metric: str
    primary: bool
    seeds: list[int]
    diff: SeedSummary
    mcnemar: list[float]
    reading: Reading


def paired_comparisons(cells: Sequence[Cell], reference: str = "keep") -> list[PairedComparison]:
    """Each perturbation minus ``reference`` for the same teacher and seed, per metric but clean (clean
    when it is the only one). Each metric's comparisons are one family (Holm within it); the primary
    metric's (AutoAttack, else the worst case) is claim 3's family, the others are secondary."""
    groups = groups_of(cells)
    metrics = [m for m in metrics_of(cells) if m != "clean"] or ["clean"]
    primary = primary_metric(metrics)
    found: list[tuple[str, str, str, list[int], SeedSummary, list[float]]] = []
    teachers = list(dict.fromkeys(c.teacher for c in cells))
    perturbs = list(dict.fromkeys(c.perturb for c in cells if c.perturb != TEACHER_ROW))
    for teacher in teachers:
        base = {c.seed: c for c in groups.get((teacher, reference), [])}
        for perturb in perturbs:
            if perturb == reference or not base:
                continue
            other = {c.seed: c for c in groups.get((teacher, perturb), [])}
            seeds = sorted(set(base) & set(other))
            if not seeds:
                continue
            for metric in metrics:
                if not all(metric in c.result.accuracies() for c in (*other.values(), *base.values())):
                    continue  # an attack the suite runs on some perturbations only (its table's ``only``)
                a = [other[s].result.accuracies()[metric].value for s in seeds]
                b = [base[s].result.accuracies()[metric].value for s in seeds]
                per_seed = [mcnemar_exact(_flags(other[s].result, metric), _flags(base[s].result, metric))
                            for s in seeds]
                found.append((teacher, perturb, metric, seeds, seed_summary([x - y for x, y in zip(a, b)]), per_seed))
    readings: dict[int, Reading] = {}
    for metric in metrics:  # one family per metric
        family = [i for i, f in enumerate(found) if f[2] == metric]
        readings.update(zip(family, read_family([found[i][4] for i in family], DELTA_ACCURACY)))
    return [PairedComparison(teacher, perturb, metric, metric == primary, seeds, diff, per_seed, readings[i])
            for i, (teacher, perturb, metric, seeds, diff, per_seed) in enumerate(found)]


def paired_rows(cells: Sequence[Cell], reference: str = "keep") -> tuple[list[str], list[list[str]]]:
    """Each perturbation minus ``reference`` for the same teacher and seed (Seguin et al. claim 3),
    from :func:`paired_comparisons`. The seed is the experimental unit: the difference in points has a
    95% t-interval over seeds and a paired t-test (>= 2 seeds). When the per-seed differences have no
    spread (see ``no_spread``) the t-test is undefined: "paired t p" is then "-" and an exact sign test
    over seeds gives "p". "Holm p" is "p" Holm-adjusted within the metric's family, "TOST p" the
    Holm-adjusted two one-sided tests against +-``DELTA_ACCURACY``; the reading and the seeds an
    inconclusive reading needs come from :func:`robdistill.analysis.verdicts.read_family`. McNemar's
    exact test per seed is shown too; it is conditional on those trained models (test-image noise only)."""
    rows = []
    for c in paired_comparisons(cells, reference):
        spread = c.diff.n > 1 and not no_spread(c.diff)
        interval = f" [{100 * c.diff.low:+.1f}, {100 * c.diff.high:+.1f}]" if spread else ""
        r = c.reading
        rows.append([c.teacher, f"{c.perturb} - {reference}", c.metric, "primary" if c.primary else "secondary",
                     str(len(c.seeds)), f"{100 * c.diff.mean:+.1f}{interval}", fmt_p(r.p) if spread else "-",
                     fmt_p(r.p), fmt_p(r.p_adjusted), fmt_p(r.tost_adjusted),
                     ", ".join(f"{p:.2g}" for p in c.mcnemar), r.text, r.seeds_text])
    return list(PAIRED_HEADER), rows


def paired_reading(diff: SeedSummary) -> str:
    """The reading of one paired difference over seeds as a family of one
    (:func:`robdistill.analysis.verdicts.read_family`, equivalence margin ``DELTA_ACCURACY``)."""
    return read_family([diff], DELTA_ACCURACY)[0].text


def _flags(result: EvaluationResult, metric: str) -> list[bool]:
    flags = {"clean": result.clean, "worst": result.worst, **result.robust}[metric]
    return flags.tolist()
