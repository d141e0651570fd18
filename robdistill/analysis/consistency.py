"""The AALP paper's measurements (METHODS section 5; Wu et al. 2020, Sec. 2.2 and 4):
consistent / inconsistent sets with their table (Tables 1 and 4), the clean-vs-adversarial
confidence scatter (Fig. 11), and per-feature contributions C_j = mean |dL/dA_j| (Eq. 5, Fig. 1, 7)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from robdistill.attacks.base import pgd_perturb
from robdistill.core.modes import eval_mode, private_generator
from robdistill.core.tracker import Tracker
from robdistill.data.datasets import Split
from robdistill.models.zoo import Classifier

SETS = ("consistent", "inconsistent")


@dataclass
class ConsistencyReport:
    """Per-sample quantities on clean and adversarial inputs, and the two sets."""

    clean_prob: torch.Tensor        # softmax(f(x))[y]
    adv_prob: torch.Tensor          # softmax(f(x~))[y]
    clean_ce: torch.Tensor
    adv_ce: torch.Tensor
    pairing: torch.Tensor           # ||f(x) - f(x~)||^2
    consistent: torch.Tensor        # clean and adversarial both correct
    inconsistent: torch.Tensor      # clean correct, adversarial wrong

    def table(self) -> dict[str, dict[str, float]]:
        """Per set: share of the evaluated samples, mean clean / adversarial ground-truth
        probability, mean clean / adversarial CE, mean pairing loss (AALP Tables 1 and 4)."""
        n = len(self.clean_prob)
        out = {}
        for name in SETS:
            mask = getattr(self, name)
            count = int(mask.sum())
            mean = (lambda t: t[mask].mean().item() if count else float("nan"))  # noqa: E731
            out[name] = {"count": count, "share": count / n if n else float("nan"),
                         "clean_prob": mean(self.clean_prob), "adv_prob": mean(self.adv_prob),
                         "clean_ce": mean(self.clean_ce), "adv_ce": mean(self.adv_ce),
                         "pairing_loss": mean(self.pairing)}
        return out


def consistency_report(model: Classifier, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                       batch_size: int = 512) -> ConsistencyReport:
    with eval_mode(model), torch.no_grad():
        clean = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        adv = torch.cat([model(x_adv[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    gt = y[:, None]
    clean_ok, adv_ok = clean.argmax(1) == y, adv.argmax(1) == y
    return ConsistencyReport(
        clean_prob=clean.softmax(1).gather(1, gt).squeeze(1), adv_prob=adv.softmax(1).gather(1, gt).squeeze(1),
        clean_ce=F.cross_entropy(clean, y, reduction="none"), adv_ce=F.cross_entropy(adv, y, reduction="none"),
        pairing=(clean - adv).pow(2).sum(1), consistent=clean_ok & adv_ok, inconsistent=clean_ok & ~adv_ok)


def has_features(model: torch.nn.Module) -> bool:
    """Whether ``model`` exposes its penultimate activation (``features``) and logits layer
    (``head``), as robdistill's models do; an external model (RobustBench, TorchScript) may not."""
    return callable(getattr(model, "features", None)) and callable(getattr(model, "head", None))


def feature_contributions(model: Classifier, x: torch.Tensor, y: torch.Tensor,
                          batch_size: int = 512) -> torch.Tensor | None:
    """C_j = mean over samples of |dL/dA_j| for the penultimate activation A (AALP Eq. 5), with L
    the per-sample cross-entropy (so each sample's gradient is its own); None for a model without
    ``features`` / ``head`` (:func:`has_features`)."""
    if not has_features(model):
        return None
    total = None
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            features = model.features(x[i:i + batch_size]).detach().requires_grad_(True)
            loss = F.cross_entropy(model.head(features), y[i:i + batch_size], reduction="sum")
            grad, = torch.autograd.grad(loss, features)
            part = grad.abs().sum(0)
            total = part if total is None else total + part
    assert total is not None
    return total / len(x)


def plot_confidence_scatter(reports: dict[str, ConsistencyReport], path: Path) -> Path:
    """Clean vs adversarial ground-truth probability per sample, coloured by set (AALP Fig. 11)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4), squeeze=False)
    for ax, (name, report) in zip(axes[0], reports.items()):
        wrong = ~(report.consistent | report.inconsistent)
        for mask, label, colour in ((report.consistent, "consistent", "tab:green"),
                                    (report.inconsistent, "inconsistent", "tab:red"),
                                    (wrong, "clean wrong", "tab:gray")):
            ax.scatter(report.clean_prob[mask].cpu(), report.adv_prob[mask].cpu(), s=6, alpha=0.6,
                       c=colour, label=f"{label} ({int(mask.sum())})")
        ax.set(title=name, xlabel="clean p(y|x)", ylabel="adversarial p(y|x~)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_feature_contributions(contributions: dict[str, torch.Tensor | None], path: Path) -> Path:
    """Histogram of per-feature contributions C_j per model (AALP Fig. 1 and 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in contributions.items():
        if values is None:  # a model without penultimate features (an external one)
            continue
        data = values.cpu().numpy()
        ax.hist(data, bins=40, alpha=0.55, label=f"{name} (mean {data.mean():.3g}, max {data.max():.3g})")
    ax.set(xlabel="feature contribution C_j = mean |dL/dA_j|", ylabel="features",
           title="Penultimate feature contributions (AALP Eq. 5)")
    if any(values is not None for values in contributions.values()):
        ax.legend(fontsize=7, loc="upper right")  # histograms of |dL/dA| pile up on the left
    else:
        ax.text(0.5, 0.5, "no model exposes penultimate features", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class Analysis:
    """AALP's measurements for one model (METHODS section 5)."""

    consistency: ConsistencyReport
    contributions: torch.Tensor | None  # None for a model without penultimate features (has_features)


ANALYSIS_PGD_STEPS = 20


def analyze_model(model: Classifier, test: Split, eps: float, seed: int,
                  steps: int = ANALYSIS_PGD_STEPS, step_size: float | None = None, norm: str = "linf") -> Analysis:
    """Consistent / inconsistent sets under plain PGD-k in the ball of ``norm`` (last iterate, as the
    adversarial examples of AALP Sec. 2.2; ``step_size`` default 2.5 eps / k, the dataset's step
    where the caller knows the dataset) and the feature contributions of AALP Eq. 5."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    with eval_mode(model):
        x_adv = pgd_perturb(model, test.x, test.y, eps=eps, step_size=step_size, steps=steps,
                            generator=private_generator(seed, test.x.device), norm=norm)
    return Analysis(consistency_report(model, test.x, test.y, x_adv), feature_contributions(model, test.x, test.y))


def log_analysis(tracker: Tracker, analysis: Analysis) -> None:
    """The analysis as metrics (``consistency/<set>_<quantity>``, ``features/...``) and a table."""
    table = analysis.consistency.table()
    contributions = analysis.contributions
    tracker.log_metrics({f"consistency/{name}_{key}": value for name, row in table.items()
                         for key, value in row.items()})
    if contributions is not None:
        tracker.log_metrics({"features/contribution_mean": contributions.mean().item(),
                             "features/contribution_max": contributions.max().item()})
    tracker.log_table({"set": list(table), **{key: [row[key] for row in table.values()]
                                              for key in next(iter(table.values()))}}, "consistency_table.json")
