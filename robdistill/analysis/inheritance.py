"""Beyond the papers: robust accuracy per class and the worst class (Fair-ARD, Yue et al. 2023, asks
this of robust distillation), and **inheritance per sample**: of the test images a teacher keeps
under an attack, the fraction its student keeps, against the same fraction for the student of the
standard (non-robust) teacher with the same perturbation and seed. A student that merely learned
the task keeps some of the teacher's robust images anyway; the difference is what it inherited.

Everything here is computed from the per-sample flags an evaluation stores (``results.json``), so a
stored sweep can be re-read without attacking anything again. The cells are
:class:`robdistill.analysis.study.Cell`-like: ``teacher``, ``perturb``, ``seed`` and ``result``
(an :class:`~robdistill.eval.results.EvaluationResult`); a teacher's own evaluation has ``perturb``
equal to ``teacher_row``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from robdistill.analysis.study import TEACHER_ROW
from robdistill.core.stats import seed_summary



def metric_flags(result: Any, metric: str) -> torch.Tensor:
    """Per-sample flags of ``metric`` (clean, an attack key or worst), on the images it ran on."""
    if metric == "clean":
        return result.clean
    if metric == "worst":
        return result.worst
    return result.robust[metric]


def per_class_accuracy(labels: torch.Tensor, flags: torch.Tensor, num_classes: int) -> list[float]:
    """Accuracy per class over the images ``flags`` covers (the first ``len(flags)`` labels); NaN
    for a class without images there."""
    labels = labels[:len(flags)]
    out = []
    for c in range(num_classes):
        mask = labels == c
        out.append(int(flags[mask].sum()) / int(mask.sum()) if bool(mask.any()) else float("nan"))
    return out


def kept_fraction(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Of the images the teacher keeps (within ``mask``), the fraction the student keeps too; NaN
    when the teacher keeps none of them."""
    n = min(len(teacher), len(student))
    keep = teacher[:n].clone() if mask is None else teacher[:n] & mask[:n]
    total = int(keep.sum())
    return float((keep & student[:n]).sum()) / total if total else float("nan")


@dataclass(frozen=True)
class ClassRow:
    """A (teacher, perturb)'s per-class accuracy under one metric, mean over seeds, and its worst class."""

    teacher: str
    perturb: str
    seeds: tuple[int, ...]
    per_class: tuple[float, ...]
    worst_class: int
    worst_values: tuple[float, ...]  # the worst class's accuracy per seed (the worst of each seed's model)


def class_rows(cells: Sequence[Any], metric: str, num_classes: int | None = None) -> list[ClassRow]:
    """Per (teacher, perturb), teacher rows included: per-class accuracy of ``metric`` averaged over
    seeds, the class worst on average, and each seed's own worst-class accuracy."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for cell in cells:
        if metric == "clean" or metric == "worst" or metric in cell.result.robust:
            groups.setdefault((cell.teacher, cell.perturb), []).append(cell)
    rows = []
    for (teacher, perturb), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] != TEACHER_ROW)):
        group = sorted(group, key=lambda c: c.seed)
        classes = num_classes or int(max(int(c.result.labels.max()) for c in group)) + 1
        per_seed = [per_class_accuracy(c.result.labels, metric_flags(c.result, metric), classes) for c in group]
        mean = [sum(v[k] for v in per_seed) / len(per_seed) for k in range(classes)]
        worst = min(range(classes), key=lambda k: mean[k] if mean[k] == mean[k] else float("inf"))
        rows.append(ClassRow(teacher, perturb, tuple(c.seed for c in group), tuple(mean), worst,
                             tuple(min(x for x in v if x == x) for v in per_seed)))
    return rows


@dataclass(frozen=True)
class InheritanceRow:
    """One (teacher, perturb): per seed, the fraction of the teacher's robust images its student
    keeps, the same fraction for the standard teacher's student, and their difference."""

    teacher: str
    perturb: str
    seeds: tuple[int, ...]
    teacher_kept: tuple[int, ...]  # images the teacher keeps, per seed
    student: tuple[float, ...]
    reference: tuple[float, ...]

    @property
    def differences(self) -> tuple[float, ...]:
        return tuple(a - b for a, b in zip(self.student, self.reference))


def inheritance_rows(cells: Sequence[Any], metric: str = "pgd", reference: str = "standard",
                     klass: int | None = None) -> list[InheritanceRow]:
    """For every non-reference teacher and perturbation with cells for both the teacher itself
    (its evaluation) and the reference teacher's student of the same perturbation and seed: the
    kept fractions per seed (restricted to class ``klass`` if given)."""
    by_key = {(c.teacher, c.perturb, c.seed): c for c in cells}
    teachers = list(dict.fromkeys(c.teacher for c in cells if c.teacher != reference))
    perturbs = list(dict.fromkeys(c.perturb for c in cells if c.perturb != TEACHER_ROW))
    rows = []
    for teacher in teachers:
        for perturb in perturbs:
            seeds, kept, student, ref = [], [], [], []
            for seed in sorted({c.seed for c in cells}):
                t = by_key.get((teacher, TEACHER_ROW, seed))
                s = by_key.get((teacher, perturb, seed))
                r = by_key.get((reference, perturb, seed))
                if t is None or s is None or r is None or metric not in t.result.robust:
                    continue
                flags = metric_flags(t.result, metric)
                mask = None if klass is None else t.result.labels[:len(flags)] == klass
                a = kept_fraction(flags, metric_flags(s.result, metric), mask)
                b = kept_fraction(flags, metric_flags(r.result, metric), mask)
                if a != a or b != b:
                    continue
                seeds.append(seed)
                kept.append(int(flags.sum() if mask is None else (flags & mask).sum()))
                student.append(a)
                ref.append(b)
            if seeds:
                rows.append(InheritanceRow(teacher, perturb, tuple(seeds), tuple(kept), tuple(student), tuple(ref)))
    return rows


def _pct(values: Sequence[float]) -> str:
    s = seed_summary(values)
    if s.n < 2:
        return f"{100 * s.mean:.1f}"
    return f"{100 * s.mean:.1f} [{100 * s.low:.1f}, {100 * s.high:.1f}]"


def inheritance_table(cells: Sequence[Any], metric: str = "pgd",
                      reference: str = "standard") -> tuple[list[str], list[list[str]]]:
    """The inheritance rows as a table, each difference read in one family (Holm; equivalence
    against the accuracy margin) by :mod:`robdistill.analysis.verdicts`."""
    from robdistill.analysis.verdicts import DELTA_ACCURACY, fmt_p, read_family

    rows = inheritance_rows(cells, metric, reference)
    readings = read_family([seed_summary(r.differences) for r in rows], DELTA_ACCURACY)
    header = ["teacher", "perturb", "seeds", f"teacher keeps (images, {metric})", "student keeps %",
              f"{reference} teacher's student keeps %", "difference (points)", "p", "Holm p", "reading",
              "seeds needed"]
    out = []
    for row, reading in zip(rows, readings):
        diff = seed_summary(row.differences)
        interval = f" [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]" if diff.n > 1 else ""
        out.append([row.teacher, row.perturb, ",".join(map(str, row.seeds)),
                    f"{sum(row.teacher_kept) / len(row.teacher_kept):.0f}", _pct(row.student), _pct(row.reference),
                    f"{100 * diff.mean:+.1f}{interval}", fmt_p(reading.p), fmt_p(reading.p_adjusted), reading.text,
                    reading.seeds_text])
    return header, out


def class_table(cells: Sequence[Any], metric: str, class_names: Sequence[str] | None = None
                ) -> tuple[list[str], list[list[str]]]:
    """Per-class accuracy % (mean over seeds) of ``metric`` per (teacher, perturb), the worst class,
    and the worst-class accuracy as mean [t-interval] over seeds."""
    rows = class_rows(cells, metric, len(class_names) if class_names else None)
    if not rows:
        return [], []
    classes = len(rows[0].per_class)
    names = list(class_names) if class_names else [str(k) for k in range(classes)]
    header = ["teacher", "perturb", "seeds", *names, "worst class", "worst-class accuracy %"]
    out = [[r.teacher, r.perturb, ",".join(map(str, r.seeds)), *[f"{100 * v:.1f}" for v in r.per_class],
            names[r.worst_class], _pct(r.worst_values)] for r in rows]
    return header, out


__all__ = ["per_class_accuracy", "kept_fraction", "class_rows", "inheritance_rows", "inheritance_table",
           "class_table", "ClassRow", "InheritanceRow"]
