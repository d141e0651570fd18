"""Teacher training (METHODS section 2): a registered objective (standard, AT, ALP, AALP, TRADES, ...)
under the recipe's PGD, validated each epoch on clean and PGD accuracy. Writes nothing: metrics go
to the tracker it is given, the training state to ``state`` when given (resumable)."""
from __future__ import annotations

from typing import Any

import torch

from robdistill.config.recipes import TeacherRecipe, to_dict
from robdistill.core.modes import private_generator
from robdistill.core.streams import rank_stream, stream_seed
from robdistill.core.tracker import Tracker, tracker_or_null
from robdistill.data.datasets import DatasetInfo, Splits
from robdistill.attacks.base import reach_warning
from robdistill.models.zoo import Classifier
from robdistill.train.augment import AUGMENTATIONS
from robdistill.train.loop import TrainingState, fit, initial_model, pgd_validator
from robdistill.train.objectives import OBJECTIVES, LossOutput, TrainContext


def teacher_eps(recipe: TeacherRecipe, info: DatasetInfo) -> float:
    """The training attack's radius: the recipe's, else the dataset's under the recipe's threat model
    (METHODS section 1)."""
    return info.eps_for(recipe.threat_model) if recipe.eps is None else recipe.eps


def teacher_step_size(recipe: TeacherRecipe, info: DatasetInfo) -> float:
    """The recipe's step size, else the dataset's (METHODS section 1) scaled to the recipe's eps."""
    eps = teacher_eps(recipe, info)
    return recipe.attack_step_size if recipe.attack_step_size is not None else info.step_for(eps, recipe.threat_model)


def resolved_teacher(recipe: TeacherRecipe, info: DatasetInfo) -> dict[str, Any]:
    """The recipe with dataset defaults filled in: what is logged and what the cache key hashes."""
    values = to_dict(recipe)
    values["eps"] = teacher_eps(recipe, info)
    values["attack_step_size"] = teacher_step_size(recipe, info)
    values["pairing_convention"] = "sum over classes, mean over batch (AALP Eq. 1)"
    values["guided_dropout_rescale"] = False
    return values


def train_teacher_model(recipe: TeacherRecipe, splits: Splits, seed: int, device: str | torch.device, *,
                        progress: bool = True, tracker: Tracker | None = None,
                        state: TrainingState | None = None, resume: bool = False) -> Classifier:
    """Train a teacher from its init stream; its per-epoch metrics are logged to ``tracker`` and
    kept in ``model.history``."""
    info = splits.info
    tracker = tracker_or_null(tracker)
    model = initial_model(recipe.model, info, seed, "teacher", device)
    eps, step_size = teacher_eps(recipe, info), teacher_step_size(recipe, info)
    reach_warning(f"teacher {recipe.name}: training PGD", recipe.attack_steps, step_size, eps)
    ctx = TrainContext(eps=eps, step_size=step_size, steps=recipe.attack_steps,
                       generator=private_generator(rank_stream(seed, "teacher", "attack"), device),
                       pairing_weight=recipe.pairing_weight, alpha=recipe.alpha, beta=recipe.beta,
                       norm=recipe.threat_model)
    objective = OBJECTIVES.get(recipe.objective)
    precision = recipe.precision_mode
    augment = AUGMENTATIONS.get(recipe.augment)  # None for "none": no generator, nothing drawn
    augment_generator = (None if augment is None else
                         private_generator(rank_stream(seed, "teacher", "augment"), splits.train.x.device))
    if state is not None:
        state.generators.update({"attack": ctx.generator,
                                 **({} if augment_generator is None else {"augment": augment_generator})})

    def step(m, idx, x, y) -> LossOutput:
        if augment is not None:  # the clean batch, augmented before the objective crafts its attack
            x = augment(x, augment_generator)
        with precision.autocast(x.device):  # the objective's PGD and forwards; backward outside
            return objective(m, x, y, ctx)

    history = fit(model, recipe.training_split(splits.train), recipe, step,
                  seed=stream_seed(seed, "teacher", "order"), desc=f"teacher {recipe.name}",
                  validate=pgd_validator(eps, recipe.attack_steps, step_size, splits.val,
                                         stream_seed(seed, "teacher", "validation"), precision, recipe.threat_model),
                  on_epoch_end=lambda epoch, metrics: tracker.log_metrics(metrics, step=epoch),
                  progress=progress, state=state, resume=resume)
    model.history = history  # type: ignore[attr-defined]
    return model
