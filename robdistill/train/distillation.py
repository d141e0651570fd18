"""How a student learns from its teacher's (perturbed) logits (METHODS section 3).

``clean`` is the study's method: clean training inputs only. ``ard`` and ``rslad`` are the
robust-distillation *baselines* METHODS section 3 lists as extras: they train the student on its own
adversarial examples, so they are not clean-only distillation, and every run that uses one is
labelled so (``inputs`` parameter and ``student_inputs`` tag).

Every method is ``(student, x, y, teacher_logits, recipe, ctx) -> LossOutput``; the teacher logits
are those of the clean inputs, already perturbed (keep / nonmax-shuffle / ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from robdistill.attacks.base import pgd_perturb
from robdistill.config.recipes import StudentRecipe, to_dict
from robdistill.core import distributed
from robdistill.core.modes import eval_mode, private_generator
from robdistill.core.registry import Registry
from robdistill.core.streams import rank_stream, stream_seed
from robdistill.core.tracker import Tracker, tracker_or_null
from robdistill.data.datasets import DatasetInfo, Split, Splits
from robdistill.attacks.base import reach_warning
from robdistill.core.errors import check_finite
from robdistill.models.inference import logits_of
from robdistill.train.augment import AUGMENTATIONS
from robdistill.train.loop import TrainingState, fit, initial_model, pgd_validator
from robdistill.train.objectives import LossOutput
from robdistill.train.perturbations import PERTURBATIONS


@dataclass
class AttackContext:
    """The student's training attack (ARD, RSLAD): PGD radius, steps, step size, generator, norm."""

    eps: float
    steps: int
    step_size: float
    generator: torch.Generator
    norm: str = "linf"


Method = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, StudentRecipe, AttackContext], LossOutput]
# Every entry is registered with ``adversarial_inputs``: whether it trains on perturbed inputs
# (a robust-distillation baseline, labelled as such) rather than on clean inputs only.
STUDENT_METHODS: Registry[Method] = Registry("student method")
STUDENT_VAL_PGD_STEPS = 10  # the student's per-epoch validation PGD-10 (at the dataset's eps and step)


def adversarial_inputs(method: str) -> bool:
    """Whether the registered student method ``method`` trains on adversarial inputs."""
    return bool(getattr(STUDENT_METHODS.get(method), "adversarial_inputs"))


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(z_t/T) || softmax(z_s/T)) over classes."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction=reduction, log_target=True)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                      labels: torch.Tensor | None = None, hard_label_weight: float = 0.0) -> torch.Tensor:
    """T^2 KL(softmax(z_t'/T) || softmax(z_s/T)), mean over the batch, + a CE(z_s, y) (METHODS section 3)."""
    loss = temperature ** 2 * soft_kl(student_logits, teacher_logits, temperature)
    if hard_label_weight and labels is not None:
        loss = loss + hard_label_weight * F.cross_entropy(student_logits, labels)
    return loss


def _agreement(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The share of samples whose argmax agrees with the teacher's, on the device (read per epoch)."""
    return (logits.argmax(1) == teacher_logits.argmax(1)).float().mean()


@STUDENT_METHODS.register("clean", adversarial_inputs=False)
def clean(student, x, y, teacher_logits, recipe, ctx) -> LossOutput:
    """Clean inputs only: T^2 KL(p_t'/T || p_s/T) + a CE(z_s, y) (the study's method)."""
    logits = student(x)
    loss = distillation_loss(logits, teacher_logits, recipe.temperature, y, recipe.hard_label_weight)
    return LossOutput(loss, logits.detach(), {"teacher_agreement": _agreement(logits, teacher_logits)})


def _student_attack(student: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, ctx: AttackContext,
                    start: torch.Tensor | None = None) -> torch.Tensor:
    with eval_mode(student):
        return pgd_perturb(student, x, y, eps=ctx.eps, step_size=ctx.step_size, steps=ctx.steps,
                           loss_fn=loss_fn, generator=ctx.generator, start=start, norm=ctx.norm)


@STUDENT_METHODS.register("ard", adversarial_inputs=True)
def ard(student, x, y, teacher_logits, recipe, ctx) -> LossOutput:
    """ARD (Goldblum et al. 2020, Eq. 3): a T^2 KL(p_t(x)/T || p_s(x+d)/T) + (1 - a) CE(z_s(x), y),
    d = PGD on CE(z_s(x + d), y). Adversarial inputs: a robust-distillation baseline, not clean-only."""
    x_adv = _student_attack(student, x, y, lambda logits, labels: F.cross_entropy(logits, labels, reduction="sum"), ctx)
    adv_logits, clean_logits = student(x_adv), student(x)
    a = recipe.adv_weight
    loss = a * recipe.temperature ** 2 * soft_kl(adv_logits, teacher_logits, recipe.temperature) + \
        (1 - a) * F.cross_entropy(clean_logits, y)
    return LossOutput(loss, clean_logits.detach(), {"teacher_agreement": _agreement(clean_logits, teacher_logits)})


@STUDENT_METHODS.register("rslad", adversarial_inputs=True)
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


class TeacherTargets:
    """The (perturbed) teacher logits a student learns from. Without augmentation the teacher's
    logits are computed once (eval mode) and perturbed afresh each epoch; with augmentation the
    batch is augmented and the teacher is run on that same view, then perturbed (METHODS section 3)."""

    def __init__(self, teacher: nn.Module, train: Split, recipe: StudentRecipe, perturbation, seed: int,
                 name: str = "teacher"):
        self.teacher, self.recipe, self.perturbation = teacher, recipe, perturbation
        self.augment = AUGMENTATIONS.get(recipe.augment)
        # cached logits are perturbed whole, identically on every rank; per-view logits per rank
        perturb_seed = (stream_seed(seed, "student", "perturb") if self.augment is None
                        else rank_stream(seed, "student", "perturb"))
        self.generator = private_generator(perturb_seed, train.x.device)
        self.augment_generator = private_generator(rank_stream(seed, "student", "augment"), train.x.device)
        self.cached = None if self.augment is not None else distributed.map_rows(
            lambda rows: logits_of(teacher, rows), train.x)  # each rank computes its share
        if self.cached is not None:  # gathered on every rank: every rank stops alike
            check_finite(self.cached, f"teacher '{name}' gives non-finite logits on the training images")
        self.current: torch.Tensor | None = None

    def new_epoch(self, epoch: int) -> None:  # a fresh perturbation each epoch (matters for shuffle)
        if self.cached is not None:
            self.current = self.perturbation(self.cached, self.generator, self.recipe.temperature)

    def batch(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is None:
            assert self.current is not None
            return x, self.current[idx]
        view = self.augment(x, self.augment_generator)
        return view, self.perturbation(logits_of(self.teacher, view), self.generator, self.recipe.temperature)


def student_attack_eps(recipe: StudentRecipe, info: DatasetInfo) -> tuple[float, float]:
    """The student's training-attack radius and step (ARD, RSLAD): the recipe's, else the dataset's
    under the recipe's threat model."""
    eps = info.eps_for(recipe.threat_model) if recipe.eps is None else recipe.eps
    return eps, (recipe.attack_step_size if recipe.attack_step_size is not None
                 else info.step_for(eps, recipe.threat_model))


def student_validation_attack(recipe: StudentRecipe, info: DatasetInfo) -> tuple[float, float]:
    """The student's per-epoch validation PGD: the dataset's radius and step under the recipe's
    threat model."""
    eps = info.eps_for(recipe.threat_model)
    return eps, info.step_for(eps, recipe.threat_model)


def resolved_student(recipe: StudentRecipe, perturb: str, info: DatasetInfo | None = None) -> dict[str, Any]:
    """The recipe with the perturbation and dataset defaults filled in: what is logged and hashed."""
    values = to_dict(recipe)
    values["perturb"] = perturb
    if adversarial_inputs(recipe.method):
        values["inputs"] = (f"ADVERSARIAL examples of the student ({recipe.method}: a robust-distillation "
                            f"baseline, not clean-only distillation)")
        if info is not None:
            values["eps"], values["attack_step_size"] = student_attack_eps(recipe, info)
    else:
        values["inputs"] = "clean training inputs only" + ("" if recipe.augment == "none" else
                                                            f", augmented ({recipe.augment}); teacher run per view")
    if info is not None:
        val_eps, val_step = student_validation_attack(recipe, info)
        norm = "" if recipe.threat_model == "linf" else f"{recipe.threat_model.upper()} "
        values["val_attack"] = f"{norm}PGD-{STUDENT_VAL_PGD_STEPS}, eps {val_eps:g}, step {val_step:g}"
    return values


def distill_model(teacher: nn.Module, recipe: StudentRecipe, perturb: str, splits: Splits, seed: int,
                  device: str | torch.device, *, student: nn.Module | None = None, teacher_name: str = "teacher",
                  progress: bool = True, tracker: Tracker | None = None, state: TrainingState | None = None,
                  resume: bool = False) -> nn.Module:
    """Distill on clean inputs only (or, for ARD / RSLAD, the student's adversarial inputs) from the
    teacher's logits, computed in eval mode and perturbed by ``perturb`` (METHODS section 3). ``student``
    is any module mapping [0, 1] images to logits; by default the recipe's model, initialised from
    the student's init stream. Per-epoch metrics go to ``tracker`` and ``model.history``."""
    info = splits.info
    tracker = tracker_or_null(tracker)
    perturbation = PERTURBATIONS.get(perturb)
    train = recipe.training_split(splits.train)
    targets = TeacherTargets(teacher, train, recipe, perturbation, seed, teacher_name)
    method = STUDENT_METHODS.get(recipe.method)
    eps, step_size = student_attack_eps(recipe, info)  # ard / rslad only
    if adversarial_inputs(recipe.method):
        reach_warning(f"student {recipe.name}: training PGD", recipe.attack_steps, step_size, eps)
    attack = AttackContext(eps, recipe.attack_steps, step_size,
                           private_generator(rank_stream(seed, "student", "attack"), device), recipe.threat_model)
    val_eps, val_step = student_validation_attack(recipe, info)

    precision = recipe.precision_mode

    def step(model, idx, x, y) -> LossOutput:
        x, target = targets.batch(idx, x)  # the teacher's logits: fp32, outside the autocast region
        with precision.autocast(x.device):
            return method(model, x, y, target, recipe, attack)

    model = initial_model(recipe.model, info, seed, "student", device) if student is None else student
    if state is not None:
        state.generators.update({"perturb": targets.generator, "augment": targets.augment_generator,
                                 "student_attack": attack.generator})
    history = fit(model, train, recipe, step, seed=stream_seed(seed, "student", "order"),
                  desc=f"student [{perturb}]", on_epoch_start=targets.new_epoch,
                  validate=pgd_validator(val_eps, STUDENT_VAL_PGD_STEPS, val_step, splits.val,
                                         stream_seed(seed, "student", "validation"), precision, recipe.threat_model),
                  on_epoch_end=lambda epoch, metrics: tracker.log_metrics(metrics, step=epoch),
                  progress=progress, resume=resume, state=state)
    model.history = history  # type: ignore[attr-defined]
    return model
