"""Distillation (METHODS section 3): the loss, clean inputs only, teacher logits from eval mode."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robdistill.config.recipes import parse_recipe
from robdistill.train.distillation import distill_model, distillation_loss
from robdistill.train.loop import OPTIMIZERS, SCHEDULES, initial_model


def test_distillation_loss_matches_formula() -> None:
    torch.manual_seed(0)
    zs, zt, y = torch.randn(5, 4), torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    t = 3.0
    pt, log_ps = (zt / t).softmax(1), (zs / t).log_softmax(1)
    kl = (pt * (pt.log() - log_ps)).sum(1).mean()
    assert torch.allclose(distillation_loss(zs, zt, t), t * t * kl, atol=1e-6)
    with_ce = distillation_loss(zs, zt, t, y, hard_label_weight=0.3)
    assert torch.allclose(with_ce, t * t * kl + 0.3 * F.cross_entropy(zs, y), atol=1e-6)
    assert distillation_loss(zt, zt, t).abs().item() < 1e-6


def test_optimizers_and_schedules() -> None:
    recipe = parse_recipe("student", "default")
    for name in OPTIMIZERS.names():
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = OPTIMIZERS.get(name)([param], recipe)
        param.sum().backward()
        optimizer.step()
        assert (param < 1).all(), name
    cosine = SCHEDULES.get("cosine")(10)
    assert cosine(0) == 1.0 and cosine(10) == pytest.approx(0.0) and cosine(5) == pytest.approx(0.5)
    assert SCHEDULES.get("constant")(10)(7) == 1.0


@pytest.mark.slow
def test_student_sees_clean_training_inputs_only(digits_teacher) -> None:
    """The student built as ``distill_student`` builds it (the recipe's model from the student's
    init stream), with a hook recording every training-mode input it is given."""
    splits, settings, teacher = digits_teacher
    recipe = parse_recipe("student", "default", ["epochs=1"])

    seen: list[torch.Tensor] = []
    teacher_modes: list[bool] = []
    student = initial_model(recipe.model, splits.info, settings.seed, "student", settings.device)
    student.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].detach().clone())
                                      if m.training else None)
    teacher.model.register_forward_pre_hook(lambda m, inputs: teacher_modes.append(m.training))
    teacher.model.train()  # the engine must switch it to eval mode for the logits
    distill_model(teacher.model, recipe, "nonmax-shuffle", splits, settings.seed, settings.device, student=student,
                  teacher_name="standard", progress=False)

    assert teacher_modes and not any(teacher_modes)
    train_rows = {tuple(row.flatten().tolist()) for row in splits.train.x}
    batches = torch.cat(seen)
    assert len(batches) == len(splits.train)  # one epoch: every training image once, nothing else
    assert all(tuple(row.flatten().tolist()) in train_rows for row in batches)
    assert teacher.model.training  # the teacher's mode is restored


def test_nonmax_shuffle_is_fresh_each_epoch() -> None:
    from robdistill.train.perturbations import PERTURBATIONS

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(1))
    shuffle = PERTURBATIONS.get("nonmax-shuffle")
    first, second = shuffle(logits, generator, 4.0), shuffle(logits, generator, 4.0)
    assert not torch.equal(first, second)
    assert math.isclose(first.sum().item(), logits.sum().item(), rel_tol=1e-5)
