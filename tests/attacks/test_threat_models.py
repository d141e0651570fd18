"""Threat models (METHODS sections 1 and 4): the L2 ball next to L-inf in every attack, the sanity
checks restated for L2, training in L2, and agreement with independent implementations.

The model is the shared ``quick_cnn`` (small-cnn, 60 Adam steps on digits); L2 radius 0.5 is the
dataset's default.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill.attacks import ATTACKS, build_attack, pgd_perturb
from robdistill.config.recipes import SuiteRecipe, parse_recipe
from robdistill.core.errors import UserError
from robdistill.core.threat import NORMS, ThreatModel, norm_of
from robdistill.data.datasets import DATASETS
from robdistill.eval.checks import perturbation_checks, perturbation_stats
from robdistill.eval.runner import run_suite

pytestmark = pytest.mark.usefixtures("single_thread")

L2_EPS = 0.5
#: every registered attack at a small budget (AutoAttack: APGD-CE and Square, few iterations)
BUDGETS = {"fgsm": {}, "pgd": {"steps": 10}, "cw": {"steps": 10},
           "autoattack": {"version": "custom", "attacks": ["apgd-ce", "square"], "square_queries": 100},
           "transfer": {"steps": 10}}


@pytest.fixture(scope="module")
def model(quick_cnn) -> nn.Module:
    net = quick_cnn(0)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def surrogate(quick_cnn) -> nn.Module:
    return quick_cnn(1)


@pytest.fixture(scope="module")
def batch(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.test.x[:96].clone(), digits.test.y[:96].clone()


def l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).flatten(1).norm(dim=1)


def build(name: str, eps: float, surrogate: nn.Module, norm: str = "l2", seed: int = 0):
    params = dict(BUDGETS[name])
    if name == "transfer":
        params["surrogate"] = surrogate
    return build_attack(name, eps, seed=seed, norm=norm, **params)


def test_every_registered_attack_has_a_budget_here() -> None:
    assert set(BUDGETS) == set(ATTACKS.names())


# --------------------------------------------------------------------------- the norms themselves

def test_l2_projection_keeps_inside_ball_and_box_and_leaves_inner_points() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 8, 8, generator=g)
    far = x + 3 * torch.randn(x.shape, generator=g)
    projected = norm_of("l2").project(far, x, 0.7)
    assert float(l2(projected, x).max()) <= 0.7 + 1e-6
    assert float(projected.min()) >= 0.0 and float(projected.max()) <= 1.0
    inner = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(norm_of("l2").project(inner, x, 0.7), inner)


def test_l2_random_start_is_inside_the_ball_at_a_uniform_radius() -> None:
    x = torch.full((2000, 1, 8, 8), 0.5)
    start = norm_of("l2").random_start(x, 0.4, torch.Generator().manual_seed(1))
    radii = l2(start, x)
    assert float(radii.max()) <= 0.4 + 1e-6
    # the radius is uniform in [0, eps] (not on the ball's surface, where uniform-in-ball would put it)
    assert abs(float(radii.median()) - 0.2) < 0.02 and float((radii < 0.1).float().mean()) > 0.2


def test_l2_ascent_is_a_unit_vector_and_zero_stays_zero() -> None:
    grad = torch.randn(5, 1, 8, 8)
    grad[2] = 0
    step = norm_of("l2").ascent(grad)
    norms = step.flatten(1).norm(dim=1)
    assert torch.allclose(norms[[0, 1, 3, 4]], torch.ones(4), atol=1e-6)
    assert float(norms[2]) == 0.0


def test_threat_model_is_one_typed_setting() -> None:
    assert ThreatModel("L2", 0.5) == ThreatModel("l2", 0.5)
    assert ThreatModel("l2", 0.5).label == "L2 eps 0.5" and ThreatModel("linf", 0.1).label == "L-inf eps 0.1"
    ThreatModel("l2", 3.0)  # an L2 radius may exceed 1
    with pytest.raises(UserError, match=r"\[0, 1\] under L-inf"):
        ThreatModel("linf", 3.0)
    with pytest.raises(UserError, match=">= 0 under L2"):
        ThreatModel("l2", -0.1)
    with pytest.raises(UserError, match="unknown threat model 'l1'"):
        ThreatModel("l1", 0.1)
    assert set(NORMS.names()) == {"linf", "l2"}


def test_every_dataset_has_an_l2_radius_and_step() -> None:
    for name in DATASETS.names():
        info = DATASETS.get(name)
        eps, step = info.radius("l2")
        assert eps > 0 and step == pytest.approx(eps / 4), name
        assert info.radius("linf") == (info.eps, info.step_size)


# --------------------------------------------------------------------------- every attack under L2

@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_l2_attack_stays_in_its_ball_and_box_and_is_not_empty(name, model, surrogate, batch) -> None:
    x, y = batch
    attack = build(name, L2_EPS, surrogate)
    assert attack.config()["norm"] == "l2"
    out = attack.run(model, x, y, progress=False)
    assert float(l2(out.x_adv, x).max()) <= L2_EPS * (1 + 1e-5) + 1e-6
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert int(out.robust.sum()) < int(clean.sum()), f"{name} at L2 0.5 fooled nothing"
    assert not bool((out.robust & ~clean).any())


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_l2_attack_at_eps_zero_changes_nothing(name, model, surrogate, batch) -> None:
    x, y = batch
    probe = build(name, L2_EPS, surrogate).zero_eps_probe()
    assert probe.norm == "l2" and probe.eps == 0.0
    out = probe.run(model, x, y, progress=False)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert torch.equal(out.robust, clean)
    assert float(l2(out.x_adv, x).max()) <= 1e-6


def test_l2_strength_order_pgd_beats_fgm(model, batch) -> None:
    x, y = batch
    fgm = build_attack("fgsm", L2_EPS, norm="l2").run(model, x, y, progress=False).robust
    pgd = build_attack("pgd", L2_EPS, norm="l2", steps=20).run(model, x, y, progress=False).robust
    assert int(pgd.sum()) <= int(fgm.sum())


def test_l2_is_a_different_ball_from_linf(model, batch) -> None:
    """At radius 0.1, every L2 perturbation is inside the L-inf ball too but much smaller: the L2
    attack leaves more samples robust than the L-inf one."""
    x, y = batch
    linf = build_attack("pgd", 0.1, steps=20).run(model, x, y, progress=False)
    in_l2 = build_attack("pgd", 0.1, steps=20, norm="l2").run(model, x, y, progress=False)
    assert int(in_l2.robust.sum()) > int(linf.robust.sum())
    assert float((linf.x_adv - x).flatten(1).norm(dim=1).max()) > 0.1 + 1e-3  # L-inf moved further in L2


# --------------------------------------------------------------------------- agreement with independent code

def independent_pgd_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                       step_size: float, seed: int) -> torch.Tensor:
    """PGD-L2 written from the textbook, not from robdistill: start at x + delta with delta a
    Gaussian rescaled to length eps * u, step along grad / ||grad||, renormalise delta to length
    <= eps, clip to [0, 1]. Robust = correct on the clean image and on the final iterate."""
    g = torch.Generator().manual_seed(seed)
    delta = torch.randn(x.shape, generator=g)
    lengths = torch.linalg.vector_norm(delta.flatten(1), dim=1)
    u = torch.rand(len(x), generator=g)
    delta = delta * (eps * u / lengths).view(-1, 1, 1, 1)
    adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        grad, = torch.autograd.grad(loss, adv)
        grad_len = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(1e-12)
        adv = adv.detach() + step_size * grad / grad_len.view(-1, 1, 1, 1)
        delta = torch.renorm((adv - x).flatten(1), p=2, dim=0, maxnorm=eps).view_as(x)
        adv = (x + delta).clamp(0, 1)
    with torch.no_grad():
        return (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)


@pytest.mark.parametrize("eps", [0.2, 0.5])
def test_pgd_l2_agrees_with_an_independent_implementation(eps, model, digits) -> None:
    x, y = digits.test.x[:200], digits.test.y[:200]
    steps, step_size = 20, 2.5 * eps / 20
    ours = build_attack("pgd", eps, steps=steps, step_size=step_size, norm="l2").run(model, x, y, progress=False).robust
    theirs = independent_pgd_l2(model, x, y, eps, steps, step_size, seed=5)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    assert int(theirs.sum()) < int(clean.sum()), "the reference attack must do something at this radius"
    # ours counts the worst iterate (never weaker) and starts elsewhere: within a few samples of 200
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 4, (int(ours.sum()), int(theirs.sum()))
    final = pgd_perturb(model, x, y, eps=eps, step_size=step_size, steps=steps, norm="l2",
                        generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        final_robust = clean & (model(final).argmax(1) == y)
    assert abs(int(final_robust.sum()) - int(theirs.sum())) <= 4


def test_pgd_l2_agrees_with_pyautoattack_apgd_l2(model, digits) -> None:
    """APGD-CE under L2 from pyautoattack (Croce & Hein 2020): a different algorithm on the same
    ball; 100 iterations of it and our PGD-50 leave the same robust accuracy within a few samples."""
    from pyautoattack.autopgd_base import APGDAttack

    from robdistill.core.modes import preserved_global_rng

    x, y = digits.test.x[:200], digits.test.y[:200]
    ours = build_attack("pgd", 0.5, steps=50, norm="l2").run(model, x, y, progress=False).robust
    with preserved_global_rng(x.device):
        apgd = APGDAttack(model, n_iter=100, eps=0.5, norm="L2", loss="ce", seed=0, device=x.device)
        adv = apgd.perturb(x, y)
    assert float(l2(adv.detach(), x).max()) <= 0.5 + 1e-4
    with torch.no_grad():
        theirs = (model(x).argmax(1) == y) & (model(adv).argmax(1) == y)
    assert abs(int(ours.sum()) - int(theirs.sum())) <= 5, (int(ours.sum()), int(theirs.sum()))


# --------------------------------------------------------------------------- suites and sanity checks

def test_l2_suite_runs_every_attack_in_l2_and_checks_the_l2_ball(model, surrogate, batch) -> None:
    x, y = batch
    from robdistill.data.datasets import Split

    suite = SuiteRecipe(name="l2", threat_model="l2", attack=(
        {"name": "fgsm"}, {"name": "pgd", "steps": 10}, {"name": "cw", "steps": 10},
        {"name": "autoattack", "version": "custom", "attacks": ["apgd-ce", "square"], "square_queries": 100}))
    result = run_suite(model, Split(x, y), suite, 0.3, progress=False)
    assert result.norm == "l2" and result.threat_label == "L2 eps 0.3"
    assert {config["norm"] for config in result.attack_configs.values()} == {"l2"}
    names = [c.name for c in result.checks]
    assert "pgd: ||x_adv - x||_2 <= eps" in names
    assert result.passed, [c for c in result.checks if not c.passed]
    assert result.to_json()["norm"] == "l2"


def test_the_l2_ball_check_fails_outside_the_ball() -> None:
    x = torch.zeros(4, 1, 8, 8)
    x_adv = x.clone()
    x_adv[0, 0, 0, :4] = 0.3  # L2 0.6, L-inf 0.3
    stats = perturbation_stats(x, x_adv)
    assert stats["l2"] == pytest.approx(0.6) and stats["linf"] == pytest.approx(0.3)
    assert not perturbation_checks("pgd", [stats], 0.5, "l2")[0].passed
    assert perturbation_checks("pgd", [stats], 0.6, "l2")[0].passed
    assert perturbation_checks("pgd", [stats], 0.3, "linf")[0].passed


def test_a_suite_attack_cannot_set_its_own_norm() -> None:
    with pytest.raises(UserError, match="share its threat_model"):
        SuiteRecipe(attack=({"name": "pgd", "norm": "l2"},)).validate()


def test_recipes_take_a_threat_model_with_radius_checked_by_its_norm() -> None:
    teacher = parse_recipe("teacher", "at", ["threat_model=l2", "eps=1.5"])
    assert teacher.threat_model == "l2" and teacher.eps == 1.5
    with pytest.raises(UserError, match=r"\[0, 1\] under L-inf"):
        parse_recipe("teacher", "at", ["eps=1.5"])
    with pytest.raises(UserError, match="unknown threat model"):
        from robdistill.catalog import checked_recipe as checked

        checked("suite", "fast", ["threat_model=l3"])


# --------------------------------------------------------------------------- training in L2

def test_pgd_perturb_l2_stays_in_the_ball_for_training(model, batch) -> None:
    x, y = batch
    out = pgd_perturb(model, x, y, eps=0.2, step_size=0.05, steps=5, norm="l2",
                      generator=torch.Generator().manual_seed(0))
    assert float(l2(out, x).max()) <= 0.2 + 1e-6
    start = torch.clamp(x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), 0, 1)
    trades_like = pgd_perturb(model, x, y, eps=0.2, step_size=0.05, steps=5, norm="l2", start=start)
    assert float(l2(trades_like, x).max()) <= 0.2 + 1e-6


@pytest.mark.parametrize("objective", ["at", "trades", "alp", "aalp"])
def test_teacher_objectives_train_under_l2(objective, digits) -> None:
    from robdistill.train.teacher import resolved_teacher, train_teacher_model

    recipe = parse_recipe("teacher", objective, ["threat_model=l2", "epochs=1", "train_subset=128", "attack_steps=4"])
    resolved = resolved_teacher(recipe, digits.info)
    assert resolved["eps"] == 0.5 and resolved["attack_step_size"] == pytest.approx(0.125)
    model = train_teacher_model(recipe, digits, seed=0, device="cpu", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(key.endswith("pgd_acc") for key in model.history[-1]), model.history[-1]


@pytest.mark.parametrize("method", ["ard", "rslad"])
def test_robust_distillation_baselines_train_under_l2(method, digits, quick_cnn) -> None:
    from robdistill.train.distillation import distill_model, resolved_student

    recipe = parse_recipe("student", "default", [f"method={method}", "threat_model=l2", "epochs=1",
                                                "train_subset=128", "attack_steps=4"])
    resolved = resolved_student(recipe, "keep", digits.info)
    assert resolved["eps"] == 0.5 and resolved["val_attack"].startswith("L2 PGD-10, eps 0.5")
    student = distill_model(quick_cnn(0), recipe, "keep", digits, seed=0, device="cpu", progress=False)
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_linf_recipes_keep_their_cache_keys() -> None:
    """Adding the threat model must not move a single cached teacher or student: at its default
    (linf) it is left out of every key, and an L2 recipe gets a key of its own."""
    from robdistill.config.recipes import key_fields

    linf = key_fields({"objective": "at", "threat_model": "linf", "eps": 0.1})
    assert "threat_model" not in linf
    assert key_fields({"objective": "at", "threat_model": "l2", "eps": 0.2})["threat_model"] == "l2"
