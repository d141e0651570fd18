"""Defects an independent review found (issue "Trust", items 1-6): transfer crafting, the eps = 0
check, independent random streams, dataset step sizes, non-finite logits and losses, AutoAttack
with few classes. Each test here failed on the code before its fix."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill.attacks.base import ATTACKS, Attack, AttackOutput, build_attack, project_linf
from robdistill.data.datasets import DATASETS, Split, load_dataset
from robdistill.core.errors import UserError
from robdistill.eval.runner import evaluate, suite_attacks
from robdistill.config.recipes import SuiteRecipe, load_recipe

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1


@pytest.fixture(scope="module")
def batch(digits):
    return digits.test.x[:48].clone(), digits.test.y[:48].clone()


# ------------------------------------------------------------------ 1. transfer: final iterates

def reference_transfer(surrogate: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                       step: float, steps: int, restarts: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Written here, independently of robdistill's PGD: every image, every restart, a plain PGD-k on
    the surrogate's summed cross-entropy from a uniform random start; the final iterate is sent."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        robust = target(x).argmax(1) == y
    finals = []
    for _ in range(restarts):
        noise = torch.rand(x.shape, generator=generator)
        z = torch.min(torch.max(x + (2 * noise - 1) * eps, x - eps), x + eps).clamp(0, 1)
        for _ in range(steps):
            z = z.detach().requires_grad_(True)
            grad, = torch.autograd.grad(F.cross_entropy(surrogate(z), y, reduction="sum"), z)
            z = z.detach() + step * grad.sign()
            z = torch.min(torch.max(z, x - eps), x + eps).clamp(0, 1)
        finals.append(z.detach())
        with torch.no_grad():
            robust &= target(z).argmax(1) == y
    return robust, finals


@pytest.mark.parametrize("restarts", [1, 2])
def test_transfer_sends_the_final_iterate_of_every_restart_for_every_image(quick_cnn, batch, restarts) -> None:
    target, surrogate = quick_cnn(0), quick_cnn(1)
    x, y = batch
    steps, step = 5, 0.025
    out = build_attack("transfer", EPS, seed=7, surrogate=surrogate, steps=steps, step_size=step,
                       restarts=restarts).run(target, x, y, batch_size=len(y), progress=False)
    expected, finals = reference_transfer(surrogate, target, x, y, eps=EPS, step=step, steps=steps,
                                          restarts=restarts, seed=7)
    assert torch.equal(out.robust, expected)
    # robust samples carry the last restart's final iterate, fooled ones the first image that fooled
    with torch.no_grad():
        wrong = [target(f).argmax(1) != y for f in finals]
    for i in range(len(y)):
        first = next((r for r in range(restarts) if wrong[r][i]), restarts - 1)
        assert torch.allclose(out.x_adv[i], finals[first][i], atol=1e-6), i
    # images the surrogate already misclassifies are perturbed too
    with torch.no_grad():
        surrogate_wrong = surrogate(x).argmax(1) != y
    assert surrogate_wrong.any()
    assert ((out.x_adv - x).abs().flatten(1).amax(1)[surrogate_wrong] > 0).all()


def test_transfer_is_never_stronger_than_white_box_pgd_on_the_same_model(quick_cnn, batch) -> None:
    """From the same (clean) start, self-transfer sends the final iterate only while the scoring PGD
    counts every iterate: PGD can only leave fewer samples robust. (With random starts the two draw
    different noise: PGD draws it only for clean-correct samples.)"""
    model = quick_cnn(0)
    x, y = batch
    pgd = build_attack("pgd", EPS, steps=5, random_start=False).run(model, x, y, progress=False)
    self_transfer = build_attack("transfer", EPS, steps=5, surrogate=model,
                                 random_start=False).run(model, x, y, progress=False)
    assert not (pgd.robust & ~self_transfer.robust).any()
    assert int(pgd.robust.sum()) < int(self_transfer.robust.sum())  # it differs: early stop vs final iterate


# ------------------------------------------------------------------ 2. every attack at eps = 0

class _IgnoresEps(Attack):
    """A broken attack: it moves the image by 0.2 whatever eps is."""

    name = "ignores-eps"

    def attack_batch(self, model, x, y, generator):
        x_adv = (x + 0.2).clamp(0, 1)
        with torch.no_grad():
            robust = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
        return AttackOutput(x_adv, robust)


def _zero_check(result):
    return next(c for c in result.checks if c.name == "eps = 0 gives clean accuracy")


def test_eps_zero_check_runs_every_attack_of_the_suite(quick_cnn, batch, monkeypatch) -> None:
    monkeypatch.setitem(ATTACKS._entries, "ignores-eps", _IgnoresEps)
    model = quick_cnn(0)
    x, y = batch
    suite = SuiteRecipe(name="t", attack=({"name": "pgd", "steps": 3}, {"name": "ignores-eps"}))
    result = evaluate(model, Split(x, y), suite, EPS, progress=False)
    check = _zero_check(result)
    assert not check.passed, check.detail
    assert "ignores-eps" in check.detail and "pgd" not in check.detail.split(":", 1)[1]


def test_eps_zero_check_passes_for_every_real_attack(quick_cnn, batch) -> None:
    model = quick_cnn(0)
    x, y = batch
    suite = SuiteRecipe(name="t", attack=(
        {"name": "fgsm"}, {"name": "pgd", "steps": 20, "restarts": 3}, {"name": "cw", "steps": 20},
        {"name": "transfer", "surrogate": quick_cnn(1), "steps": 20},
        {"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", "apgd-t"]}))
    result = evaluate(model, Split(x[:16], y[:16]), suite, EPS, progress=False)
    check = _zero_check(result)
    assert check.passed and "5 attacks at eps = 0 on 16 samples" in check.detail, check.detail


@pytest.mark.parametrize("name,params", [("fgsm", {}), ("pgd", {"steps": 20, "restarts": 4}),
                                         ("cw", {"steps": 20}), ("autoattack", {"version": "standard"}),
                                         ("autoattack", {"version": "custom", "attacks": ["apgd-ce", "square"]})])
def test_zero_eps_probe_is_cheap_and_leaves_the_clean_flags(quick_cnn, batch, name, params) -> None:
    model = quick_cnn(0)
    x, y = batch
    attack = build_attack(name, EPS, seed=2, **params)
    probe = attack.zero_eps_probe(2)
    assert probe.eps == 0.0 and probe.name == attack.name
    if name == "autoattack":
        assert probe._iterations == 2
    else:
        assert probe.params.get("steps", 2) <= 2 and probe.params.get("restarts", 1) <= 2
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    out = probe.run(model, x, y, progress=False)
    assert torch.equal(out.robust, clean)


def test_zero_eps_probe_of_transfer(quick_cnn, batch) -> None:
    model = quick_cnn(0)
    x, y = batch
    probe = build_attack("transfer", EPS, surrogate=quick_cnn(1), steps=20).zero_eps_probe(2)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert probe.eps == 0.0 and probe.params["surrogate_attack"]["steps"] == 2
    assert torch.equal(probe.run(model, x, y, progress=False).robust, clean)


def test_zero_eps_probe_of_a_loaded_surrogate_moves_it_like_the_attack(quick_cnn, tmp_path) -> None:
    """A surrogate loaded from a checkpoint follows the inputs' device in the probe too (on --resume
    the probe can run before the attack itself)."""
    from robdistill.models.checkpoints import save_checkpoint

    path = save_checkpoint(tmp_path / "s.pt", quick_cnn(1), kind="teacher", model_name="small-cnn",
                           dataset="digits", recipe={}, seed=1)
    attack = build_attack("transfer", EPS, surrogate=str(path), steps=3)
    assert attack.zero_eps_probe(2)._owns_surrogate
    assert not build_attack("transfer", EPS, surrogate=quick_cnn(1)).zero_eps_probe(2)._owns_surrogate


def test_an_attack_that_cannot_cross_its_ball_fails_a_check(quick_cnn, batch) -> None:
    """MNIST's paper step 0.01 with too few steps cannot reach eps 0.3: the evaluation says so."""
    x, y = batch
    suite = SuiteRecipe(name="t", attack=({"name": "pgd", "steps": 10, "step_size": 0.01},
                                         {"name": "cw", "steps": 40, "step_size": 0.01}))
    result = evaluate(quick_cnn(0), Split(x[:8], y[:8]), suite, 0.3, progress=False)
    checks = {c.name: c for c in result.checks}
    assert not checks["pgd: steps x step_size >= eps"].passed
    assert checks["cw: steps x step_size >= eps"].passed
    with pytest.warns(UserWarning, match="reach only 0.1 of the eps 0.3"):
        from robdistill.eval.runner import reach_warning

        reach_warning("teacher at: training PGD", 10, 0.01, 0.3)


def test_non_finite_teacher_logits_name_the_teacher(digits) -> None:
    from robdistill.train.perturbations import PERTURBATIONS
    from robdistill.experiments.stages import TeacherTargets

    with pytest.raises(UserError, match="teacher 'broken' gives non-finite logits"):
        TeacherTargets(_NaNModel(), digits.train, load_recipe("student", "default"), PERTURBATIONS.get("keep"), 0,
                       "broken")


# ------------------------------------------------------------------ 3. independent random streams

def test_stream_seeds_never_collide_across_seeds_stages_purposes_and_ranks() -> None:
    from robdistill.core.streams import PURPOSES, STAGES, stream_seed

    seen = {}
    for seed, stage, purpose, rank in itertools.product(range(40), STAGES, PURPOSES, range(4)):
        value = stream_seed(seed, stage, purpose, rank)
        assert value not in seen, (seed, stage, purpose, rank, seen.get(value))
        seen[value] = (seed, stage, purpose, rank)
    assert stream_seed(3, "teacher", "init") == stream_seed(3, "teacher", "init")  # reproducible


def test_negative_seed_is_a_user_error() -> None:
    from robdistill.core.streams import stream_seed

    with pytest.raises(UserError, match="--seed"):
        stream_seed(-1, "teacher", "init")


@pytest.mark.slow
def test_student_starts_independently_of_its_teacher(workdir, monkeypatch) -> None:
    """Same --seed, same architecture: the student's initial weights and batch order differ from
    its teacher's (before the fix they were identical), and are reproducible."""
    import mlflow

    from robdistill.experiments import stages
    from robdistill.experiments.stages import Settings, distill_student, obtain_teacher

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("robdistill")
    initial: list[dict[str, torch.Tensor]] = []
    first_batches: list[torch.Tensor] = []
    original = stages.initial_model

    def recording(*args, **kwargs):
        model = original(*args, **kwargs)
        initial.append({k: v.clone() for k, v in model.state_dict().items()})
        seen: list[torch.Tensor] = []

        def hook(module, inputs):
            if module.training and not seen:
                seen.append(inputs[0].clone())
                first_batches.append(seen[0])
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(stages, "initial_model", recording)
    splits = load_dataset("digits")
    settings = Settings(cache_dir=workdir / "cache", progress=False, use_registry=False)
    teacher = obtain_teacher(load_recipe("teacher", "standard", ["epochs=1"]), splits, settings)
    distill_student(teacher, load_recipe("student", "default", ["epochs=1"]), "keep", splits, settings, "standard")
    assert len(initial) == 2 and len(first_batches) == 2
    teacher_init, student_init = initial
    assert teacher_init.keys() == student_init.keys()
    assert not any(torch.equal(teacher_init[k], student_init[k]) for k in teacher_init if k.endswith("weight"))
    assert not torch.equal(first_batches[0], first_batches[1])
    # reproducible: the same seed and stage give the same initial weights
    again = original("small-cnn", splits.info, 0, "student", "cpu").state_dict()
    assert all(torch.equal(again[k], student_init[k]) for k in again)


# ------------------------------------------------------------------ 4. dataset step sizes

def test_teacher_training_uses_the_dataset_step_size() -> None:
    from robdistill.experiments.stages import resolved_teacher, teacher_step_size

    at = load_recipe("teacher", "at")
    assert teacher_step_size(at, DATASETS.get("fashion-mnist")) == pytest.approx(0.01)
    assert teacher_step_size(at, DATASETS.get("mnist")) == pytest.approx(0.01)
    assert teacher_step_size(at, DATASETS.get("cifar10")) == pytest.approx(2 / 255)
    assert teacher_step_size(at, DATASETS.get("svhn")) == pytest.approx(3 / 255)
    assert resolved_teacher(at, DATASETS.get("mnist"))["attack_step_size"] == pytest.approx(0.01)  # logged
    # a recipe's own step wins; a recipe's own eps scales the dataset's step
    assert teacher_step_size(load_recipe("teacher", "at", ["attack_step_size=0.03"]),
                             DATASETS.get("mnist")) == pytest.approx(0.03)
    assert teacher_step_size(load_recipe("teacher", "at", ["eps=0.15"]), DATASETS.get("mnist")) == pytest.approx(0.005)


def test_suites_use_the_dataset_step_size_unless_they_set_one() -> None:
    from robdistill.experiments.stages import dataset_step_ratio

    suite = load_recipe("suite", "paper")
    ratio = dataset_step_ratio("mnist")
    attacks = suite_attacks(suite, 0.3, ratio)
    assert attacks["pgd"].params["step_size"] == pytest.approx(0.01)
    assert attacks["cw"].params["step_size"] == pytest.approx(0.01)
    assert suite_attacks(suite, 0.15, ratio)["pgd"].params["step_size"] == pytest.approx(0.005)  # scaled with eps
    own = SuiteRecipe(name="own", attack=({"name": "pgd", "steps": 10, "step_size": 0.05},))
    assert suite_attacks(own, 0.3, ratio)["pgd"].params["step_size"] == pytest.approx(0.05)


def test_list_says_which_step_size_applies() -> None:
    from click.testing import CliRunner

    from robdistill.cli.main import main

    datasets = CliRunner().invoke(main, ["list", "datasets"]).output
    assert "attack step 0.01" in datasets and "attack step 0.025" in datasets
    suites = CliRunner().invoke(main, ["list", "suites"]).output
    assert "[step size: the dataset's, scaled to eps]" in suites


# ------------------------------------------------------------------ 5. non-finite logits and losses

class _NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.full((len(x), 10), float("nan")) * self.scale


def test_non_finite_logits_stop_the_evaluation_naming_the_model(batch) -> None:
    x, y = batch
    suite = SuiteRecipe(name="t", attack=({"name": "fgsm"},))
    with pytest.raises(UserError) as info:
        evaluate(_NaNModel(), Split(x, y), suite, EPS, name="broken-teacher", progress=False)
    message = str(info.value)
    assert "\n" not in message and "broken-teacher" in message and "non-finite" in message and "batch 0" in message


def test_non_finite_training_loss_stops_training_naming_epoch_and_batch(digits) -> None:
    from robdistill.train.objectives import LossOutput
    from robdistill.train.loop import fit

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    recipe = load_recipe("teacher", "standard", ["epochs=2", "batch_size=256"])
    calls = []

    def step(m, idx, x, y):
        calls.append(1)
        logits = m(x)
        loss = F.cross_entropy(logits, y) * (float("inf") if len(calls) == 3 else 1.0)
        return LossOutput(loss, logits.detach(), {})

    with pytest.raises(UserError) as info:
        fit(model, digits.train, recipe, step, seed=0, desc="teacher broken", progress=False)
    message = str(info.value)
    assert "\n" not in message and "teacher broken" in message and "epoch 1, batch 3" in message


# ------------------------------------------------------------------ 6. AutoAttack with few classes

def _linear(classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, classes)).eval()


def test_autoattack_standard_adapts_its_target_classes_to_the_model(batch) -> None:
    x, y = batch
    model = _linear(5)
    y = y % 5
    attack = build_attack("autoattack", EPS, version="standard", square_queries=20)
    out = attack.run(model, x[:12], y[:12], progress=False)
    with torch.no_grad():
        clean = model(x[:12]).argmax(1) == y[:12]
    assert not (out.robust & ~clean).any()
    assert attack.target_classes(5) == 4 and attack.target_classes(10) == 9 and attack.target_classes(100) == 9
    assert not any("target classes" in w for w in out.warnings), out.warnings


@pytest.mark.parametrize("version,classes", [("standard", 2), ("standard", 3), ("plus", 2)])
def test_autoattack_refuses_dlr_components_with_too_few_classes(batch, version, classes) -> None:
    x, y = batch
    with pytest.raises(UserError) as info:
        build_attack("autoattack", EPS, version=version).run(_linear(classes), x[:8], y[:8] % classes, progress=False)
    message = str(info.value)
    assert "\n" not in message and f"has {classes}" in message and "custom" in message


def test_autoattack_without_dlr_runs_on_two_classes(batch) -> None:
    x, y = batch
    model = _linear(2)
    out = build_attack("autoattack", EPS, version="custom", attacks=["apgd-ce", "fab-t", "square"],
                       square_queries=20).run(model, x[:8], y[:8] % 2, progress=False)
    with torch.no_grad():
        clean = model(x[:8]).argmax(1) == y[:8] % 2
    assert not (out.robust & ~clean).any()


# ------------------------------------------------------------------ long jobs without a terminal

def test_epochs_and_attacks_print_a_line_each_when_no_bar_is_drawn(digits, quick_cnn, batch, capsys) -> None:
    """Under nohup / tee / a scheduler stderr is no terminal and tqdm draws nothing: each epoch and
    each attack still says it finished, with the elapsed time and an estimate of what is left."""
    from robdistill.train.objectives import LossOutput
    from robdistill.train.loop import fit

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    recipe = load_recipe("teacher", "standard", ["epochs=3", "batch_size=512"])

    def step(m, idx, x, y):
        logits = m(x)
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})

    fit(model, digits.train, recipe, step, seed=0, desc="teacher tiny", progress=True)
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if line.startswith("teacher tiny: epoch")]
    assert len(epochs) == 3 and "about" in epochs[0] and "left" in epochs[0] and "left" not in epochs[-1]
    x, y = batch
    evaluate(quick_cnn(0), Split(x[:16], y[:16]), SuiteRecipe(name="t", attack=({"name": "fgsm"}, {"name": "pgd",
                                                                                                  "steps": 2})),
             EPS, name="m", progress=True)
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in err.splitlines() if line.startswith("eval m:")] == ["eval m: fgsm",
                                                                                               "eval m: pgd"]
    fit(model, digits.train, recipe, step, seed=0, desc="teacher quiet", progress=False)
    assert "teacher quiet" not in capsys.readouterr().err
