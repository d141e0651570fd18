"""Augmentations for distillation and the teacher run per augmented view (METHODS section 3)."""
from __future__ import annotations

import pytest
import torch

from robdistill import catalog
from robdistill.train.augment import AUGMENTATIONS, random_translate
from robdistill.core.errors import UserError
from robdistill.config.recipes import parse_recipe
from robdistill.train.distillation import distill_model
from robdistill.train.loop import initial_model


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", [n for n in AUGMENTATIONS.names() if n != "none"])
def test_augmentations_are_pure_seeded_and_in_range(name: str) -> None:
    x = torch.rand(16, 3, 8, 8)
    before = x.clone()
    fn = AUGMENTATIONS.get(name)
    out = fn(x, gen(0))
    assert torch.equal(x, before) and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, fn(x, gen(0))) and not torch.equal(out, fn(x, gen(1)))
    state = torch.get_rng_state()
    fn(x, gen(2))
    assert torch.equal(torch.get_rng_state(), state)


def test_translate_is_a_shift_with_zero_fill() -> None:
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).repeat(200, 1, 1, 1)
    out = random_translate(x, gen(0), pad=1)
    seen = set()
    for image in out[:, 0]:
        matches = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   if torch.equal(image, _shift(x[0, 0], dy, dx))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) == 9  # every shift occurs


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = image[i + dy, j + dx], zero outside."""
    out = torch.zeros_like(image)
    h, w = image.shape
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[i, j] = image[i + dy, j + dx]
    return out


def test_unknown_augmentation_is_a_recipe_error() -> None:
    with pytest.raises(UserError, match="unknown augmentation 'nope'"):
        catalog.checked_recipe("student", "default", ["augment=nope"])


@pytest.mark.slow
def test_augmented_distillation_runs_the_teacher_on_each_view(digits_teacher) -> None:
    splits, settings, teacher = digits_teacher
    recipe = parse_recipe("student", "default", ["epochs=1", "augment=shift1", "batch_size=128"])
    teacher_inputs: list[torch.Tensor] = []
    student_inputs: list[torch.Tensor] = []
    teacher.model.register_forward_pre_hook(lambda m, inputs: teacher_inputs.append(inputs[0].clone()))
    # the student distill_student would build (the student's init stream), recording its training inputs
    student = initial_model(recipe.model, splits.info, settings.seed, "student", settings.device)
    student.register_forward_pre_hook(lambda m, inputs: student_inputs.append(inputs[0].clone())
                                      if m.training else None)
    distill_model(teacher.model, recipe, "nonmax-shuffle", splits, settings.seed, settings.device, student=student,
                  teacher_name="standard", progress=False)
    batches = -(-len(splits.train) // 128)
    assert len(student_inputs) == batches
    # the teacher saw exactly the student's (augmented) batches, one call each
    assert len(teacher_inputs) == batches
    assert all(torch.equal(t, s) for t, s in zip(teacher_inputs, student_inputs))
    shifted = torch.cat(student_inputs)
    originals = {tuple(r.flatten().tolist()) for r in splits.train.x}
    assert sum(tuple(r.flatten().tolist()) not in originals for r in shifted) > len(shifted) // 2
