"""Per-class robust accuracy, the worst class, and inheritance per sample on synthetic cells whose
answers are known by construction."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from robdistill.analysis.inheritance import (class_rows, class_table, inheritance_rows, inheritance_table,
                                             kept_fraction, per_class_accuracy)
from robdistill.eval.results import EvaluationResult


@dataclass
class FakeCell:
    teacher: str
    perturb: str
    seed: int
    result: EvaluationResult


def _result(labels, pgd, clean=None) -> EvaluationResult:
    labels = torch.tensor(labels)
    clean = torch.ones(len(labels), dtype=torch.bool) if clean is None else torch.tensor(clean, dtype=torch.bool)
    return EvaluationResult("m", 0.1, labels, clean, {"pgd": torch.tensor(pgd, dtype=torch.bool)}, {}, {})


def test_per_class_accuracy_and_kept_fraction_by_hand() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    flags = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool)
    assert per_class_accuracy(labels, flags, 3) == [0.5, 1.0, 0.0]
    assert per_class_accuracy(labels, flags[:4], 3)[:2] == [0.5, 1.0]  # a prefix: class 2 has no image there
    teacher = torch.tensor([1, 1, 1, 0], dtype=torch.bool)
    student = torch.tensor([1, 0, 1, 1], dtype=torch.bool)
    assert kept_fraction(teacher, student) == pytest.approx(2 / 3)
    assert kept_fraction(teacher, student, torch.tensor([1, 1, 0, 0], dtype=torch.bool)) == 0.5
    assert kept_fraction(torch.zeros(4, dtype=torch.bool), student) != kept_fraction(teacher, student)  # NaN


def _study(seeds=(0, 1, 2, 3, 4), inherit: float = 0.9, reference: float = 0.5) -> list[FakeCell]:
    """100 images of 2 classes; the AT teacher keeps the first 60; its student keeps a fraction
    ``inherit`` of them (seed-dependent by one image), the standard teacher's student ``reference``."""
    labels = [k % 2 for k in range(100)]
    cells = []
    for seed in seeds:
        teacher = [k < 60 for k in range(100)]
        kept = int(60 * inherit) + (seed % 2)
        student = [k < kept for k in range(100)]
        ref = [k < int(60 * reference) + (seed % 3) for k in range(100)]
        cells += [FakeCell("at", "(teacher)", seed, _result(labels, teacher)),
                  FakeCell("at", "keep", seed, _result(labels, student)),
                  FakeCell("standard", "(teacher)", seed, _result(labels, [False] * 100)),
                  FakeCell("standard", "keep", seed, _result(labels, ref))]
    return cells


def test_inheritance_reads_a_large_inherited_share_as_higher() -> None:
    cells = _study()
    rows = inheritance_rows(cells)
    assert [(r.teacher, r.perturb, r.seeds) for r in rows] == [("at", "keep", (0, 1, 2, 3, 4))]
    assert rows[0].teacher_kept == (60,) * 5
    assert rows[0].student[0] == pytest.approx(54 / 60) and rows[0].reference[0] == pytest.approx(30 / 60)
    header, table = inheritance_table(cells)
    assert table[0][header.index("reading")] == "higher"
    same = inheritance_table(_study(inherit=0.5))[1]
    assert same[0][header.index("reading")] != "higher"


def test_class_rows_find_the_worst_class() -> None:
    labels = [k % 2 for k in range(10)]
    pgd = [k % 2 == 0 or k < 3 for k in range(10)]  # class 0 all robust, class 1 one of five
    cells = [FakeCell("at", "keep", s, _result(labels, pgd)) for s in (0, 1)]
    (row,) = class_rows(cells, "pgd")
    assert row.per_class == (1.0, 0.2) and row.worst_class == 1 and row.worst_values == (0.2, 0.2)
    header, table = class_table(cells, "pgd", ["top", "trouser"])
    assert header[3:5] == ["top", "trouser"] and table[0][5] == "trouser"
