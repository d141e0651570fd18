"""Seguin et al. claims (1) and (2): logit statistics against the standard teacher, and sample-wise
confidence agreement with its seed-to-seed baseline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robdistill.analysis.seguin import plot_confidence_difference_grid, spearman, teacher_claims


def test_claim1_differences_and_reading_by_hand() -> None:
    # standard: max logits 4 and 6 (gap 2 and 4) per seed; at: every logit halved
    standard = {0: torch.tensor([[4.0, 2.0, 0.0]]), 1: torch.tensor([[6.0, 2.0, 0.0]])}
    logits = {("standard", s): z for s, z in standard.items()}
    logits.update({("at", s): z / 2 for s, z in standard.items()})
    claims = teacher_claims(logits)
    rows = {r[0]: r for r in claims.logits_rows}
    assert rows["standard"][7] == "reference"
    # at: max logit 2 and 3 (mean 2.5); differences -2 and -3 (mean -2.5, std 0.707, t 12.706)
    assert rows["at"][2].startswith("2.500 [")
    assert rows["at"][4].startswith("-2.500 [")
    assert rows["at"][7] == "max logit inconclusive, gap inconclusive"   # 2 seeds, t = 12.7: too wide
    assert rows["at"][8].startswith("max logit lower: ")                # and the seeds that would resolve it
    # a third seed (a copy of seed 1): differences -2, -3, -3 -> the interval excludes 0
    logits.update({("at", 2): standard[1] / 2, ("standard", 2): standard[1]})
    rows = {r[0]: r for r in teacher_claims(logits).logits_rows}
    # paired t p: max logit t = -8 (p 0.0153), gap -1, -2, -2: t = -5 (p 0.0377); Holm over the family of
    # two: 2 x 0.01527 = 0.0305 and 0.0377, both below 0.05
    assert rows["at"][6] == "max logit 0.0153 (0.0305); gap 0.0377 (0.0377)"
    assert rows["at"][7] == "max logit lower, gap lower" and rows["at"][8] == "-"


def test_claim2_agreement_rows() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 10, generator=g) * 3
    noise = lambda: torch.randn(200, 10, generator=g) * 0.3  # noqa: E731
    logits = {("standard", 0): base + noise(), ("standard", 1): base + noise(),
              ("at", 0): torch.randn(200, 10, generator=g), ("at", 1): torch.randn(200, 10, generator=g)}
    rows = {r[0]: r for r in teacher_claims(logits).agreement_rows}
    assert set(rows) == {"at vs standard (same seed)", "standard vs standard (different seeds)",
                         "at vs at (different seeds)", "at vs standard minus standard seed-to-seed (paired by seed)"}
    same = float(rows["standard vs standard (different seeds)"][2])
    assert same > 0.8                                        # two standard seeds agree
    assert abs(float(rows["at vs standard (same seed)"][2].split()[0])) < 0.3  # unrelated confidences


def test_claim2_reads_the_difference_from_the_reference_paired_by_seed() -> None:
    """Claim 2 compares AT-vs-standard agreement with standard-vs-standard agreement through the
    per-seed difference and its interval, not against a plain mean: an unrelated teacher reads
    lower, a near-copy of the standard teacher of each seed does not."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(300, 10, generator=g) * 3
    noise = lambda scale: torch.randn(300, 10, generator=g) * scale  # noqa: E731
    logits = {("standard", s): base + noise(0.3) for s in range(4)}
    logits.update({("at", s): torch.randn(300, 10, generator=g) for s in range(4)})
    logits.update({("copy", s): logits[("standard", s)] + noise(0.05) for s in range(4)})
    claims = teacher_claims(logits)
    at_summary, at_reading = claims.claim2["at"]
    assert at_summary.n == 4 and at_summary.high < 0 and at_reading.word == "lower"
    copy_summary, copy_reading = claims.claim2["copy"]
    assert copy_summary.mean > 0 and copy_reading.word != "lower"   # agrees more than two standard seeds
    rows = {r[0]: r for r in claims.agreement_rows}
    assert rows["at vs standard minus standard seed-to-seed (paired by seed)"][4] == "lower"


def test_spearman_known_values() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_confidence_difference_grid_is_written(tmp_path: Path) -> None:
    x = torch.rand(20, 1, 8, 8)
    y = torch.arange(20) % 10
    path = plot_confidence_difference_grid(x, y, torch.randn(20, 10), torch.randn(20, 10), "at", "standard",
                                           tmp_path / "grid.png")
    assert path.stat().st_size > 1000
