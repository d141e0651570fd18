"""Seguin et al. (2021) claims (1) and (2) about adversarially trained teachers, measured across
seeds (METHODS section 5):

(1) AT lowers the mean max logit and the mean logit gap (largest minus second largest) compared
    with standard training;
(2) AT and standard models differ on *which* samples are high or low confidence: Spearman rank
    correlation of per-sample max probability, set beside the same correlation between two
    standard models of different seeds (the agreement one should expect without AT) through the
    difference of the two, paired by seed, with its interval; and the images with the largest
    confidence difference.

Readings are Holm-corrected within each claim's family (:mod:`robdistill.analysis.verdicts`).

Claim (3), the student under keep / nonmax-shuffle / nonmax-flatten, is `robdistill.analysis.study.paired_rows`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import torch

from robdistill.analysis.logits import logit_statistics
from robdistill.analysis.verdicts import Reading, fmt_p, read_family
from robdistill.core.stats import SeedSummary, seed_summary

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
    # the readings the rows print, for verdicts: claim 1 teacher -> {"max logit": .., "gap": ..}; claim 2
    # teacher -> (the per-seed differences of agreement, their reading)
    claim1: dict[str, dict[str, Reading]] = field(default_factory=dict)
    claim2: dict[str, tuple[SeedSummary, Reading]] = field(default_factory=dict)


def agreement_differences(logits: TeacherLogits, reference: str = "standard") -> dict[str, list[float]]:
    """Claim 2's evidence, paired by seed: for each teacher and each seed s it shares with the
    reference, rho(teacher_s, reference_s) minus the mean of rho(reference_s, reference_s') over the
    reference's other seeds s'. Empty with fewer than two reference seeds. The reference terms of
    different seeds share models (rho(ref_0, ref_1) enters seeds 0 and 1), so the t-interval over seeds
    of these differences carries the reference's seed-to-seed uncertainty but not all of it; it is the
    paired-by-seed reading the study plans for, not an exact one."""
    conf = {key: max_prob(z) for key, z in logits.items()}
    ref_seeds = sorted(s for t, s in logits if t == reference)
    if len(ref_seeds) < 2:
        return {}
    pair = {(a, b): spearman(conf[(reference, a)], conf[(reference, b)]) for a, b in combinations(ref_seeds, 2)}
    own = {s: [rho for (a, b), rho in pair.items() if s in (a, b)] for s in ref_seeds}
    out: dict[str, list[float]] = {}
    for teacher in dict.fromkeys(t for t, _ in logits):
        if teacher == reference:
            continue
        seeds = sorted(s for t, s in logits if t == teacher and s in own)
        if seeds:
            out[teacher] = [spearman(conf[(teacher, s)], conf[(reference, s)]) - sum(own[s]) / len(own[s])
                            for s in seeds]
    return out


def teacher_claims(logits: TeacherLogits, reference: str = "standard") -> ClaimTables:
    """Tables for claims (1) and (2); numbers are means over seeds with 95% t-intervals (where there
    are >= 2 seeds). Differences and correlations pair each teacher with ``reference`` of the same seed.
    Claim 1's family: every teacher but the reference x {max logit, gap}; claim 2's: every teacher but
    the reference (Holm within each, :func:`robdistill.analysis.verdicts.read_family`)."""
    teachers = list(dict.fromkeys(t for t, _ in logits))
    stats = {key: {k: v.mean().item() for k, v in logit_statistics(z).items()} for key, z in logits.items()}
    logits_header = ["teacher", "seeds", "mean max logit", "mean logit gap",
                     f"max logit - {reference}", f"gap - {reference}", "p (Holm p)", "reading", "seeds needed"]
    diffs: dict[str, dict[str, list[float]]] = {}
    for teacher in teachers:
        paired = sorted(s for t, s in logits if t == teacher and (reference, s) in logits)
        if teacher != reference and paired:
            diffs[teacher] = {name: [stats[(teacher, s)][key] - stats[(reference, s)][key] for s in paired]
                              for name, key in (("max logit", "max_logit"), ("gap", "logit_gap"))}
    family = [(teacher, name) for teacher, by in diffs.items() for name in by]
    claim1: dict[str, dict[str, Reading]] = {}
    for (teacher, name), reading in zip(family, read_family([seed_summary(diffs[t][n]) for t, n in family])):
        claim1.setdefault(teacher, {})[name] = reading
    logits_rows = []
    for teacher in teachers:
        seeds = sorted(s for t, s in logits if t == teacher)
        row = [teacher, ",".join(map(str, seeds)),
               _interval([stats[(teacher, s)]["max_logit"] for s in seeds]),
               _interval([stats[(teacher, s)]["logit_gap"] for s in seeds])]
        if teacher not in claim1:
            logits_rows.append(row + ["-", "-", "-", "reference" if teacher == reference else "-", "-"])
            continue
        readings = claim1[teacher]
        logits_rows.append(row + [_interval(diffs[teacher]["max logit"], signed=True),
                                  _interval(diffs[teacher]["gap"], signed=True),
                                  "; ".join(f"{name} {fmt_p(r.p)} ({fmt_p(r.p_adjusted)})" for name, r in readings.items()),
                                  ", ".join(f"{name} {r.text}" for name, r in readings.items()),
                                  "; ".join(f"{name} {r.seeds_text}" for name, r in readings.items()
                                            if r.seeds_text != "-") or "-"])
    agreement_header = ["pair", "seeds", "Spearman rho of max probability", "p (Holm p)", "reading", "seeds needed"]
    agreement_rows = []
    conf = {key: max_prob(z) for key, z in logits.items()}
    for teacher in teachers:
        if teacher == reference:
            continue
        paired = sorted(s for t, s in logits if t == teacher and (reference, s) in logits)
        if paired:
            agreement_rows.append([f"{teacher} vs {reference} (same seed)", ",".join(map(str, paired)),
                                   _interval([spearman(conf[(teacher, s)], conf[(reference, s)]) for s in paired],
                                             bounds=(-1.0, 1.0)), "-", "-", "-"])
    for teacher in teachers:  # the no-AT baseline and each teacher's own seed-to-seed agreement
        seeds = sorted(s for t, s in logits if t == teacher)
        pairs = list(combinations(seeds, 2))
        if pairs:  # the pairs share models: not independent, so their mean and range, no interval
            rhos = [spearman(conf[(teacher, a)], conf[(teacher, b)]) for a, b in pairs]
            spread = f" (range {min(rhos):.3f} to {max(rhos):.3f})" if len(rhos) > 1 else ""
            agreement_rows.append([f"{teacher} vs {teacher} (different seeds)",
                                   "; ".join(f"{a}-{b}" for a, b in pairs), f"{sum(rhos) / len(rhos):.3f}{spread}",
                                   "-", "-", "-"])
    differences = agreement_differences(logits, reference)
    summaries = {teacher: seed_summary(values) for teacher, values in differences.items()}
    claim2 = {teacher: (summaries[teacher], reading)
              for teacher, reading in zip(summaries, read_family(list(summaries.values())))}
    for teacher, (s, reading) in claim2.items():
        seeds = sorted(k for t, k in logits if t == teacher and (reference, k) in logits)
        agreement_rows.append([f"{teacher} vs {reference} minus {reference} seed-to-seed (paired by seed)",
                               ",".join(map(str, seeds)), _interval(list(s.values), signed=True),
                               f"{fmt_p(reading.p)} ({fmt_p(reading.p_adjusted)})", reading.text, reading.seeds_text])
    return ClaimTables(logits_header, logits_rows, agreement_header, agreement_rows, claim1, claim2)


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
