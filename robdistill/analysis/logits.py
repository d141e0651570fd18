"""Logit statistics (METHODS section 5; Seguin et al. 2021): max logit, logit gap, max softmax
probability and entropy per sample, their means, and a histogram figure comparing models."""
from __future__ import annotations

from pathlib import Path

import torch

from robdistill.models.inference import logits_of  # noqa: F401  (re-exported: the analyses' input)

STATISTICS = ("max_logit", "logit_gap", "max_prob", "entropy")


def logit_statistics(logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample statistics of a (N, C) logit matrix."""
    top2 = logits.topk(2, dim=1).values
    log_p = logits.log_softmax(1)
    return {
        "max_logit": top2[:, 0],
        "logit_gap": top2[:, 0] - top2[:, 1],
        "max_prob": log_p.exp().amax(1),
        "entropy": -(log_p.exp() * log_p).sum(1),
    }


def mean_statistics(logits: torch.Tensor) -> dict[str, float]:
    return {f"logits/{k}_mean": v.mean().item() for k, v in logit_statistics(logits).items()}


def plot_logit_statistics(per_model: dict[str, torch.Tensor], path: Path, title: str = "") -> Path:
    """2x2 histograms (one panel per statistic), one overlaid distribution per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    stats = {name: logit_statistics(logits) for name, logits in per_model.items()}
    for ax, key in zip(axes.flat, STATISTICS):
        for name, values in stats.items():
            data = values[key].cpu().numpy()
            ax.hist(data, bins=30, alpha=0.55, label=f"{name} (mean {data.mean():.2f})")
        ax.set_title(key.replace("_", " "))
        ax.legend(fontsize=7)
    fig.suptitle(title or "Logit statistics on the test set")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
