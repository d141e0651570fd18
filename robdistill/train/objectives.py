"""Teacher training objectives (METHODS section 2). z = f(x) are logits, x~ a PGD adversarial example.

Each objective maps (model, clean batch, context) to a scalar loss and a few numbers to log.
Adversarial examples are generated with the model in eval mode; the model is back in training
mode when the objective's own forward pass runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from robdistill.attacks.base import pgd_perturb
from robdistill.models.zoo import Classifier
from robdistill.core.modes import eval_mode
from robdistill.core.registry import Registry


@dataclass
class TrainContext:
    """What an objective needs besides the batch: the training attack and the loss weights."""

    eps: float
    step_size: float
    steps: int
    generator: torch.Generator
    pairing_weight: float = 0.5   # lambda of ALP (AALP Eq. 1 convention: sum over classes, mean over batch)
    alpha: float = 1.0            # weight of the adaptive ALP term (AALP Eq. 10)
    beta: float = 6.0             # TRADES weight of the robust KL term
    norm: str = "linf"            # the training attack's ball (robdistill.core.threat): linf or l2

    def adversarial(self, model: Classifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """PGD-k on CE with random start in the context's ball, generated in eval mode (METHODS section 2)."""
        with eval_mode(model):
            return pgd_perturb(model, x, y, eps=self.eps, step_size=self.step_size, steps=self.steps,
                               generator=self.generator, norm=self.norm)

    def kl_adversarial(self, model: Classifier, x: torch.Tensor) -> torch.Tensor:
        """TRADES' inner maximisation: PGD-k on KL(softmax f(x) || softmax f(x~)) from
        x + 0.001 N(0, I) (the reference implementation's start), generated in eval mode."""
        with eval_mode(model):
            with torch.no_grad():
                target = model(x).softmax(1)
            noise = torch.randn(x.shape, generator=self.generator, device=self.generator.device).to(x.device)
            return pgd_perturb(model, x, target, eps=self.eps, step_size=self.step_size, steps=self.steps,
                               loss_fn=lambda logits, p: trades_kl(logits, p).sum(),
                               start=(x + 0.001 * noise).clamp(0.0, 1.0), norm=self.norm)


@dataclass
class LossOutput:
    loss: torch.Tensor
    logits: torch.Tensor            # clean logits, for training accuracy
    logs: dict[str, torch.Tensor | float]  # per-sample means, on the device: read once per epoch


Objective = Callable[[Classifier, torch.Tensor, torch.Tensor, TrainContext], LossOutput]
OBJECTIVES: Registry[Objective] = Registry("objective")


def pairing_distance(clean: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 distance ||f(x) - f(x~)||^2 (summed over classes)."""
    return (clean - adv).pow(2).sum(1)


@OBJECTIVES.register("standard")
def standard(model, x, y, ctx) -> LossOutput:
    """Standard training: CE(f(x), y)."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return LossOutput(loss, logits.detach(), {"ce_clean": loss.detach()})


@OBJECTIVES.register("at")
def adversarial_training(model, x, y, ctx) -> LossOutput:
    """PGD adversarial training (Madry et al. 2018): CE(f(x~), y)."""
    x_adv = ctx.adversarial(model, x, y)
    loss = F.cross_entropy(model(x_adv), y)
    return LossOutput(loss, clean_logits(model, x), {"ce_adv": loss.detach()})


def clean_logits(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """Clean logits for the training-accuracy log only (eval mode, no gradient), so objectives that
    train on other inputs keep their batch-norm statistics to those inputs."""
    with torch.no_grad(), eval_mode(model):
        return model(x)


def _logit_pairing_loss(logits: torch.Tensor, y: torch.Tensor, pairing: str,
                        ctx: TrainContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mixed-minibatch CE (Kannan et al. 2018) plus an optional logit-pairing term.

    ``none`` (mpgd): 0.5 CE(f(x)) + 0.5 CE(f(x~)).
    ``alp`` (AALP Eq. 1): + lambda (1/B) sum_i ||f(x_i) - f(x~_i)||^2.
    ``adaptive`` (AALP Eq. 9-10): + alpha (1/B) sum_i w_i ||f(x_i) - f(x~_i)||^2 with
    w_i = softmax(f(x_i))[y_i], the clean ground-truth probability, detached."""
    clean, adv = logits.chunk(2)
    ce_clean, ce_adv = F.cross_entropy(clean, y), F.cross_entropy(adv, y)
    distance = pairing_distance(clean, adv)
    if pairing == "adaptive":
        weights = clean.softmax(1).gather(1, y[:, None]).squeeze(1).detach()
        pair_term = ctx.alpha * (weights * distance).mean()
    elif pairing == "alp":
        pair_term = ctx.pairing_weight * distance.mean()
    else:
        pair_term = torch.zeros((), device=logits.device)
    loss = 0.5 * ce_clean + 0.5 * ce_adv + pair_term
    return loss, {"ce_clean": ce_clean.detach(), "ce_adv": ce_adv.detach(), "pairing": distance.mean().detach()}


def guided_dropout_mask(features: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Guided Dropout (AALP Eq. 7-8): R_j = mean over the batch of |dL/dA_j * A_j|; keep the
    features with R_j >= median(R) (torch.quantile's median, so exactly half when R has no ties).

    Kept features are *not* rescaled (the paper describes a 0/1 mask, not inverted dropout)."""
    grad, = torch.autograd.grad(loss, features, retain_graph=True)
    contribution = (grad * features).abs().mean(0)
    return (contribution >= torch.quantile(contribution, 0.5)).to(features.dtype)


def _mixed_batch_objective(pairing: str, guided_dropout: bool) -> Objective:
    """Objectives that train on the clean and adversarial halves of one forward pass."""

    def objective(model, x, y, ctx) -> LossOutput:
        x_adv = ctx.adversarial(model, x, y)
        features = model.features(torch.cat([x, x_adv]))
        if guided_dropout and not features.requires_grad:  # a parameter-free backbone
            features.requires_grad_(True)
        logits = model.head(features)
        loss, logs = _logit_pairing_loss(logits, y, pairing, ctx)
        if guided_dropout:
            mask = guided_dropout_mask(features, loss)
            logits = model.head(features * mask)
            loss, logs = _logit_pairing_loss(logits, y, pairing, ctx)
            logs["gd_kept_fraction"] = mask.mean().detach()
        return LossOutput(loss, logits.chunk(2)[0].detach(), logs)

    return objective


for _name, _pairing, _gd, _help in [
    ("mpgd", "none", False, "Kannan's mixed minibatch: 0.5 CE(f(x)) + 0.5 CE(f(x~))"),
    ("alp", "alp", False, "Adversarial Logit Pairing (Kannan et al. 2018; AALP Eq. 1)"),
    ("aalp-gd", "alp", True, "ALP + Guided Dropout (AALP Eq. 7-8; the paper's AALP_gd)"),
    ("aalp-sw", "adaptive", False, "ALP with adaptive sample weighting (AALP Eq. 9-10; AALP_sw)"),
    ("aalp", "adaptive", True, "Adaptive ALP: Guided Dropout + sample weighting (Wu et al. 2020)"),
]:
    OBJECTIVES.register(_name, help=_help)(_mixed_batch_objective(_pairing, _gd))


@OBJECTIVES.register("clp")
def clean_logit_pairing(model, x, y, ctx) -> LossOutput:
    """Clean logit pairing (Kannan et al. 2018, Sec. 3.3): CE(f(x), y) + lambda (2/B)
    sum_{i<B/2} ||f(x_i) - f(x_{i+B/2})||^2, pairing the two halves of the (shuffled) batch.
    With an odd batch the last sample is left unpaired; the mean runs over the floor(B/2) pairs."""
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    half = len(x) // 2
    distance = pairing_distance(logits[:half], logits[half:2 * half])
    pair = distance.mean() if half else torch.zeros((), device=logits.device)
    return LossOutput(ce + ctx.pairing_weight * pair, logits.detach(),
                      {"ce_clean": ce.detach(), "pairing": pair.detach()})


@OBJECTIVES.register("lsq")
def logit_squeezing(model, x, y, ctx) -> LossOutput:
    """Logit squeezing (Kannan et al. 2018, Sec. 3.3): CE(f(x), y) + lambda (1/B) sum_i ||f(x_i)||_2
    (the L2 norm itself, not its square)."""
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    norm = logits.norm(dim=1).mean()
    return LossOutput(ce + ctx.pairing_weight * norm, logits.detach(), {"ce_clean": ce.detach(), "logit_norm": norm.detach()})


def trades_kl(adv_logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) summed over classes, per sample."""
    return (clean_probs * (clean_probs.clamp_min(1e-12).log() - adv_logits.log_softmax(1))).sum(1)


@OBJECTIVES.register("trades")
def trades(model, x, y, ctx) -> LossOutput:
    """TRADES (Zhang et al. 2019, Eq. 5): CE(f(x), y) + beta KL(softmax f(x) || softmax f(x~)),
    KL summed over classes and averaged over the batch; x~ maximises that KL by PGD-k from
    x + 0.001 N(0, I) (the reference code's start), generated in eval mode.

    The clean and adversarial batches go through the model as two separate training-mode forwards,
    clean first, as in the reference implementation, so batch-norm statistics are never computed
    over a mixed clean + adversarial batch (the reference code forwards x a second time inside its
    KL term; here the one clean forward serves both terms)."""
    x_adv = ctx.kl_adversarial(model, x)
    clean = model(x)
    adv = model(x_adv)
    ce = F.cross_entropy(clean, y)
    kl = trades_kl(adv, clean.softmax(1)).mean()
    return LossOutput(ce + ctx.beta * kl, clean.detach(), {"ce_clean": ce.detach(), "kl": kl.detach()})
