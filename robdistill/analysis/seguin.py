"""Seguin et al. (2021) claims (1) and (2) about adversarially trained teachers, measured across
seeds (SPEC section 5):

(1) AT lowers the mean max logit and the mean logit gap (largest minus second largest) compared
    with standard training;
(2) AT and standard models differ on *which* samples are high or low confidence: Spearman rank
    correlation of per-sample max probability, set beside the same correlation between two
    standard models of different seeds (the agreement one should expect without AT), and the
    images with the largest confidence difference.

Claim (3), the student under keep / nonmax-shuffle / nonmax-flatten, is `robdistill.experiments.sweep.paired_rows`.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch

from robdistill.analysis.logits import logit_statistics
from robdistill.core.stats import direction, seed_summary

TeacherLogits = dict[tuple[str, int], torch.Tensor]  # (teacher, seed) -> (N, C) test logits


def max_prob(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1).amax(1)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().cpu().numpy(), b.double().cpu().numpy()).statistic)


def _interval(values: list[float], signed: bool = False, bounds: tuple[float, float] | None = None) -> str:
    """'mean [95% t-interval]' over seeds (just the mean for one), the interval clipped to ``bounds``."""
    s = seed_summary(values)
    fmt = "+.3f" if signed else ".3f"
    if s.n < 2:
        return f"{s.mean:{fmt}}"
    low, high = (max(s.low, bounds[0]), min(s.high, bounds[1])) if bounds else (s.low, s.high)
    return f"{s.mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


@dataclass
class ClaimTables:
    logits_header: list[str]
    logits_rows: list[list[str]]
    agreement_header: list[str]
    agreement_rows: list[list[str]]


def teacher_claims(logits: TeacherLogits, reference: str = "standard") -> ClaimTables:
    """Tables for claims (1) and (2); numbers are means over seeds with 95% t-intervals (where there
    are >= 2 seeds). Differences and correlations pair each teacher with ``reference`` of the same seed."""
    teachers = list(dict.fromkeys(t for t, _ in logits))
    stats = {key: {k: v.mean().item() for k, v in logit_statistics(z).items()} for key, z in logits.items()}
    logits_header = ["teacher", "seeds", "mean max logit", "mean logit gap",
                     f"max logit - {reference}", f"gap - {reference}", "reading"]
    logits_rows = []
    for teacher in teachers:
        seeds = sorted(s for t, s in logits if t == teacher)
        row = [teacher, ",".join(map(str, seeds)),
               _interval([stats[(teacher, s)]["max_logit"] for s in seeds]),
               _interval([stats[(teacher, s)]["logit_gap"] for s in seeds])]
        paired = [s for s in seeds if (reference, s) in logits]
        if teacher == reference or not paired:
            logits_rows.append(row + ["-", "-", "reference" if teacher == reference else "-"])
            continue
        d_max = [stats[(teacher, s)]["max_logit"] - stats[(reference, s)]["max_logit"] for s in paired]
        d_gap = [stats[(teacher, s)]["logit_gap"] - stats[(reference, s)]["logit_gap"] for s in paired]
        logits_rows.append(row + [_interval(d_max, signed=True), _interval(d_gap, signed=True),
                                  _claim1_reading(d_max, d_gap)])
    agreement_header = ["pair", "seeds", "Spearman rho of max probability"]
    agreement_rows = []
    conf = {key: max_prob(z) for key, z in logits.items()}
    for teacher in teachers:
        if teacher == reference:
            continue
        paired = sorted(s for t, s in logits if t == teacher and (reference, s) in logits)
        if paired:
            agreement_rows.append([f"{teacher} vs {reference} (same seed)", ",".join(map(str, paired)),
                                   _interval([spearman(conf[(teacher, s)], conf[(reference, s)]) for s in paired],
                                             bounds=(-1.0, 1.0))])
    for teacher in teachers:  # the no-AT baseline and each teacher's own seed-to-seed agreement
        seeds = sorted(s for t, s in logits if t == teacher)
        pairs = list(combinations(seeds, 2))
        if pairs:  # the pairs share models: not independent, so their mean and range, no interval
            rhos = [spearman(conf[(teacher, a)], conf[(teacher, b)]) for a, b in pairs]
            spread = f" (range {min(rhos):.3f} to {max(rhos):.3f})" if len(rhos) > 1 else ""
            agreement_rows.append([f"{teacher} vs {teacher} (different seeds)",
                                   "; ".join(f"{a}-{b}" for a, b in pairs), f"{sum(rhos) / len(rhos):.3f}{spread}"])
    return ClaimTables(logits_header, logits_rows, agreement_header, agreement_rows)


def _claim1_reading(d_max: list[float], d_gap: list[float]) -> str:
    """'lower' / 'higher' when a test over seeds says so (:func:`robdistill.core.stats.direction`), else
    'inconclusive'."""
    words = []
    for name, values in (("max logit", d_max), ("gap", d_gap)):
        s = seed_summary(values)
        if s.n < 2:
            words.append(f"{name} {'lower' if s.mean < 0 else 'higher'} (1 seed)")
        else:
            words.append(f"{name} {direction(s)}")
    return ", ".join(words)


def plot_confidence_difference_grid(x: torch.Tensor, y: torch.Tensor, logits_a: torch.Tensor,
                                    logits_b: torch.Tensor, name_a: str, name_b: str, path: Path,
                                    per_side: int = 8) -> Path:
    """Seguin et al. Fig. 3-style grid: the ``per_side`` test images where model a is most
    confident relative to model b (top row) and the reverse (bottom row), with both max probabilities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf_a, conf_b = max_prob(logits_a), max_prob(logits_b)
    diff = (conf_a - conf_b).cpu()
    rows = {f"{name_a} >> {name_b}": diff.argsort(descending=True)[:per_side],
            f"{name_b} >> {name_a}": diff.argsort()[:per_side]}
    fig, axes = plt.subplots(2, per_side, figsize=(1.3 * per_side, 3.4), squeeze=False)
    for r, (title, idx) in enumerate(rows.items()):
        for c in range(per_side):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(idx):
                continue
            i = int(idx[c])
            image = x[i].detach().cpu()
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if image.shape[0] == 1 else None,
                      vmin=0.0, vmax=1.0)
            ax.set_title(f"y={int(y[i])}\n{conf_a[i]:.2f} / {conf_b[i]:.2f}", fontsize=7)
        axes[r, 0].text(-0.3, 0.5, title, transform=axes[r, 0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=8)
    fig.suptitle(f"Largest max-probability differences ({name_a} / {name_b})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confidence_difference_grids(x: torch.Tensor, y: torch.Tensor, logits: TeacherLogits, reference: str,
                                out_dir: Path) -> list[Path]:
    """One :func:`plot_confidence_difference_grid` per teacher against ``reference``, both of the
    reference's lowest seed, written to ``out_dir``; returns the files."""
    seeds = sorted(s for t, s in logits if t == reference)
    if not seeds:
        return []
    paths = []
    for teacher, seed in logits:
        if teacher != reference and seed == seeds[0]:
            path = Path(out_dir) / f"confidence_difference_{teacher}_vs_{reference}.png"
            paths.append(plot_confidence_difference_grid(x, y, logits[(teacher, seed)], logits[(reference, seed)],
                                                         teacher, reference, path))
    return paths
