"""How a student learns from its teacher's (perturbed) logits (SPEC section 3).

``clean`` is the study's method: clean training inputs only. ``ard`` and ``rslad`` are the
robust-distillation *baselines* the SPEC welcomes as extras: they train the student on its own
adversarial examples, so they are not clean-only distillation, and every run that uses one is
labelled so (``inputs`` parameter and ``student_inputs`` tag).

Every method is ``(student, x, y, teacher_logits, recipe, ctx) -> LossOutput``; the teacher logits
are those of the clean inputs, already perturbed (keep / nonmax-shuffle / ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robdistill.attacks.base import pgd_perturb
from robdistill.core.modes import eval_mode
from robdistill.train.objectives import LossOutput
from robdistill.config.recipes import StudentRecipe
from robdistill.core.registry import Registry


@dataclass
class AttackContext:
    """The student's training attack (ARD, RSLAD): L-inf PGD radius, steps, step size, generator."""

    eps: float
    steps: int
    step_size: float
    generator: torch.Generator


Method = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, StudentRecipe, AttackContext], LossOutput]
STUDENT_METHODS: Registry[Method] = Registry("student method")
ADVERSARIAL_INPUTS = {"ard", "rslad"}  # methods that train on perturbed inputs (labelled as such)


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)) over classes."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction=reduction, log_target=True)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                      labels: torch.Tensor | None = None, hard_label_weight: float = 0.0) -> torch.Tensor:
    """T^2 KL(softmax(z_t'/T) || softmax(z_s/T)), mean over the batch, + a CE(z_s, y) (SPEC section 3)."""
    loss = temperature ** 2 * soft_kl(student_logits, teacher_logits, temperature)
    if hard_label_weight and labels is not None:
        loss = loss + hard_label_weight * F.cross_entropy(student_logits, labels)
    return loss


def _agreement(logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    return (logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


@STUDENT_METHODS.register("clean")
def clean(student, x, y, teacher_logits, recipe, ctx) -> LossOutput:
    """Clean inputs only: T^2 KL(p_t'/T || p_s/T) + a CE(z_s, y) (the study's method)."""
    logits = student(x)
    loss = distillation_loss(logits, teacher_logits, recipe.temperature, y, recipe.hard_label_weight)
    return LossOutput(loss, logits.detach(), {"teacher_agreement": _agreement(logits, teacher_logits)})


def _student_attack(student: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, ctx: AttackContext,
                    start: torch.Tensor | None = None) -> torch.Tensor:
    with eval_mode(student):
        return pgd_perturb(student, x, y, eps=ctx.eps, step_size=ctx.step_size, steps=ctx.steps,
                           loss_fn=loss_fn, generator=ctx.generator, start=start)


@STUDENT_METHODS.register("ard")
def ard(student, x, y, teacher_logits, recipe, ctx) -> LossOutput:
    """ARD (Goldblum et al. 2020, Eq. 3): a T^2 KL(p_t(x)/T || p_s(x+d)/T) + (1 - a) CE(z_s(x), y),
    d = PGD on CE(z_s(x + d), y). Adversarial inputs: a robust-distillation baseline, not clean-only."""
    x_adv = _student_attack(student, x, y, lambda logits, labels: F.cross_entropy(logits, labels, reduction="sum"), ctx)
    adv_logits, clean_logits = student(x_adv), student(x)
    a = recipe.adv_weight
    loss = a * recipe.temperature ** 2 * soft_kl(adv_logits, teacher_logits, recipe.temperature) + \
        (1 - a) * F.cross_entropy(clean_logits, y)
    return LossOutput(loss, clean_logits.detach(), {"teacher_agreement": _agreement(clean_logits, teacher_logits)})


@STUDENT_METHODS.register("rslad")
def rslad(student, x, y, teacher_logits, recipe, ctx) -> LossOutput:
    """RSLAD (Zi et al. 2021, Eq. 6): (1 - a) KL(p_t(x) || p_s(x)) + a KL(p_t(x) || p_s(x + d)), the
    teacher's soft labels at T = 1 replacing hard labels everywhere, d = PGD on
    KL(p_t(x) || p_s(x + d)) started at x + 0.001 N(0, I) as in the paper. Adversarial inputs: a robust-distillation baseline, not clean-only."""
    target = teacher_logits.detach()
    start = x + 0.001 * torch.randn(x.shape, generator=ctx.generator, device=ctx.generator.device).to(x.device)
    x_adv = _student_attack(student, x, y, lambda logits, _: soft_kl(logits, target, reduction="sum"), ctx, start)
    adv_logits, clean_logits = student(x_adv), student(x)
    a = recipe.adv_weight
    loss = (1 - a) * soft_kl(clean_logits, target) + a * soft_kl(adv_logits, target)
    return LossOutput(loss, clean_logits.detach(), {"teacher_agreement": _agreement(clean_logits, teacher_logits)})
