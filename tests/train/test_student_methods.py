"""Robust-distillation baselines (ARD, RSLAD): their losses against the papers' formulas, their
attack inside the eps ball, and runs labelled as not clean-only."""
from __future__ import annotations

import mlflow
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill import catalog
from robdistill.core.errors import UserError
from robdistill.config.recipes import parse_recipe
from robdistill.experiments.stages import distill_student
from robdistill.train.distillation import STUDENT_METHODS, AttackContext


def kl(teacher_logits, student_logits, t=1.0):
    pt, log_ps = (teacher_logits / t).softmax(1), (student_logits / t).log_softmax(1)
    return (pt * (pt.log() - log_ps)).sum(1).mean()


def _setup(eps: float):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 3, 4, 0])
    teacher_logits = torch.randn(6, 5)
    ctx = AttackContext(eps, 3, 0.05, torch.Generator().manual_seed(1))
    return student, x, y, teacher_logits, ctx


def test_at_eps_zero_the_losses_are_the_papers_formulas_on_clean_inputs() -> None:
    student, x, y, zt, ctx = _setup(0.0)
    z = student(x)
    ard = parse_recipe("student", "ard", ["adv_weight=0.7", "temperature=3"])
    out = STUDENT_METHODS.get("ard")(student, x, y, zt, ard, ctx)
    expected = 0.7 * 9 * kl(zt, z, 3.0) + 0.3 * F.cross_entropy(z, y)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    rslad = parse_recipe("student", "rslad", ["adv_weight=0.6"])
    out = STUDENT_METHODS.get("rslad")(student, x, y, zt, rslad, ctx)
    torch.testing.assert_close(out.loss, kl(zt, z), rtol=1e-5, atol=1e-6)  # 0.4 KL + 0.6 KL, same inputs


@pytest.mark.parametrize("name", ["ard", "rslad"])
def test_the_student_attack_stays_in_the_ball_and_raises_its_loss(name: str, monkeypatch) -> None:
    """ARD's attack ascends CE(z_s(x'), y); RSLAD's ascends KL(p_t(x) || p_s(x'))."""
    student, x, y, zt, ctx = _setup(0.1)
    seen = []
    from robdistill.train import distillation as student_methods

    real = student_methods.pgd_perturb

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out)
        return out

    monkeypatch.setattr(student_methods, "pgd_perturb", spy)
    recipe = parse_recipe("student", name, ["adv_weight=1.0"])
    state = torch.get_rng_state()
    student.train()
    adversarial = STUDENT_METHODS.get(name)(student, x, y, zt, recipe, ctx).loss
    assert torch.equal(torch.get_rng_state(), state) and student.training
    (x_adv,) = seen
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        if name == "ard":
            assert F.cross_entropy(student(x_adv), y) > F.cross_entropy(student(x), y)
        else:  # with adv_weight 1 the loss is the adversarial KL term
            assert adversarial > kl(zt, student(x))


def test_bad_student_method_values() -> None:
    with pytest.raises(UserError, match="unknown student method 'nope'"):
        catalog.checked_recipe("student", "default", ["method=nope"])
    with pytest.raises(UserError, match="adv_weight must lie in"):
        parse_recipe("student", "ard", ["adv_weight=2"])


def test_a_baseline_run_is_labelled_as_not_clean_only(digits_teacher) -> None:
    splits, settings, teacher = digits_teacher
    recipe = parse_recipe("student", "rslad", ["epochs=1", "train_subset=128", "attack_steps=2"])
    with mlflow.start_run():
        _, path, _ = distill_student(teacher, recipe, "keep", splits, settings, "standard")
    run = next(r for r in mlflow.search_runs(experiment_names=["robdistill"], output_format="list")
               if r.data.tags.get("stage") == "student")
    assert run.data.tags["student_inputs"] == "adversarial"
    assert run.data.params["student.inputs"].startswith("ADVERSARIAL examples of the student (rslad")
    assert run.data.params["student.eps"] == "0.1"
    payload = torch.load(path, weights_only=True)
    assert payload["recipe"]["method"] == "rslad"
