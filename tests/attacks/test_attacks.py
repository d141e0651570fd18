"""Attacks, mode/RNG hygiene, the benchmark runner and Wilson intervals (METHODS section 4).

A small CNN, seeded and briefly trained on the embedded ``digits`` set, is attacked on the first 64
test images (eps 0.1 is the dataset default). AutoAttack runs only APGD-CE on 16 samples.
"""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill.attacks import ATTACKS, AttackOutput, build_attack, ce_loss, cw_margin_loss, pgd_perturb
from robdistill.attacks.base import project_linf
from robdistill.data.datasets import Split
from robdistill.core.errors import UserError
from robdistill.eval.checks import perturbation_checks, perturbation_stats
from robdistill.eval.runner import clean_flags, run_suite
from robdistill.core.modes import eval_mode, preserved_global_rng, private_generator
from robdistill.config.recipes import SuiteRecipe
from robdistill.core.stats import Proportion, wilson

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1
TOL = 1e-6
ITERATIVE = ("pgd", "cw")
GRADIENT_ATTACKS = ("fgsm", "pgd", "cw")


# --------------------------------------------------------------------------- fixtures



@pytest.fixture(scope="module")
def model(quick_cnn) -> nn.Module:
    """small-cnn trained for 60 Adam steps, frozen (attacks must not need parameter gradients)."""
    net = quick_cnn(0)
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@pytest.fixture(scope="module")
def batch(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return digits.test.x[:64].clone(), digits.test.y[:64].clone()


@pytest.fixture(scope="module")
def clean(model, batch) -> torch.Tensor:
    x, y = batch
    with torch.no_grad():
        return model(x).argmax(1) == y


def run(name: str, model, x, y, eps: float = EPS, seed: int = 0, **params) -> AttackOutput:
    return build_attack(name, eps, seed=seed, **params).run(model, x, y, progress=False)


def linf(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().flatten(1).amax(1).max().item()


def modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_fixture_model_is_useful(clean, model, batch) -> None:
    assert clean.float().mean().item() > 0.7
    out = run("pgd", model, *batch)
    assert out.robust.sum() < clean.sum(), "PGD at eps 0.1 should fool a standard model on some samples"


# --------------------------------------------------------------------------- threat model

@pytest.mark.parametrize("eps", [0.03, EPS, 0.3])
@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_attack_stays_in_ball_and_box_and_is_subset_of_clean(name, eps, model, batch, clean) -> None:
    x, y = batch
    out = run(name, model, x, y, eps=eps)
    assert out.x_adv.shape == x.shape and out.x_adv.dtype == x.dtype
    assert out.robust.shape == y.shape and out.robust.dtype == torch.bool
    assert linf(out.x_adv, x) <= eps + TOL
    assert out.x_adv.min().item() >= 0.0 and out.x_adv.max().item() <= 1.0
    assert not (out.robust & ~clean).any(), "robust but misclassified clean"
    assert out.robust.sum() <= clean.sum()
    if eps >= 0.3:
        assert out.robust.sum() < clean.sum()
    assert out.warnings == []


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_eps_zero_gives_exactly_clean_accuracy(name, model, batch, clean) -> None:
    x, y = batch
    out = run(name, model, x, y, eps=0.0)
    assert torch.equal(out.robust, clean)
    assert torch.equal(out.x_adv, x)


def test_stronger_eps_is_not_more_robust_for_fgsm_in_aggregate(model, batch) -> None:
    x, y = batch
    accs = [run("fgsm", model, x, y, eps=e).robust.float().mean().item() for e in (0.0, 0.1, 0.3)]
    assert accs[0] >= accs[1] >= accs[2]
    assert accs[2] < accs[0]


@pytest.mark.parametrize("name", ITERATIVE)
def test_more_restarts_is_a_per_sample_subset(name, model, batch) -> None:
    """Worst case over restarts: restart 1 is the same run on the same seed, later ones only remove."""
    x, y = batch
    one = run(name, model, x, y, steps=5, restarts=1)
    four = run(name, model, x, y, steps=5, restarts=4)
    assert not (four.robust & ~one.robust).any()
    assert four.robust.sum() <= one.robust.sum()


@pytest.mark.parametrize("name", ITERATIVE)
def test_more_steps_with_fixed_step_size_is_a_per_sample_subset(name, model, batch) -> None:
    """With the step size fixed, the first iterates coincide, so more steps can only remove samples."""
    x, y = batch
    few = run(name, model, x, y, steps=3, step_size=0.02)
    many = run(name, model, x, y, steps=12, step_size=0.02)
    assert not (many.robust & ~few.robust).any()
    assert many.robust.sum() <= few.robust.sum()


def test_pgd_never_beats_its_own_random_start(model, batch, clean) -> None:
    """steps=1 with step_size=0 checks only the random start (twice): PGD-10 is at most that."""
    x, y = batch
    start = run("pgd", model, x, y, steps=1, step_size=0.0)
    full = run("pgd", model, x, y, steps=10)
    assert not (full.robust & ~start.robust).any()
    assert linf(start.x_adv, x) <= EPS + TOL


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_reported_flags_match_the_returned_images(name, model, batch, clean) -> None:
    """Non-robust clean-correct samples are misclassified at x_adv; robust ones are correct there."""
    x, y = batch
    out = run(name, model, x, y, restarts=2) if name != "fgsm" else run(name, model, x, y)
    with torch.no_grad():
        pred = model(out.x_adv).argmax(1)
    fooled = clean & ~out.robust
    assert fooled.any()
    assert bool((pred[fooled] != y[fooled]).all())
    assert bool((pred[out.robust] == y[out.robust]).all())


def test_pgd_without_random_start_and_zero_steps_size_is_clean(model, batch, clean) -> None:
    x, y = batch
    out = run("pgd", model, x, y, steps=4, step_size=0.0, random_start=False)
    assert torch.equal(out.robust, clean)
    assert torch.equal(out.x_adv, x)


def test_cw_and_pgd_differ_in_loss(model, batch) -> None:
    x, y = batch
    pgd = run("pgd", model, x, y, steps=10)
    cw = run("cw", model, x, y, steps=10)
    assert not torch.equal(pgd.x_adv, cw.x_adv)


def test_fgsm_batching_does_not_change_results(model, batch) -> None:
    x, y = batch
    attack = build_attack("fgsm", EPS)
    whole = attack.run(model, x, y, batch_size=256, progress=False)
    pieces = attack.run(model, x, y, batch_size=7, progress=False)
    assert torch.equal(whole.robust, pieces.robust)
    torch.testing.assert_close(whole.x_adv, pieces.x_adv, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- randomness and modes

@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_same_seed_same_result_and_global_rng_untouched(name, model, batch) -> None:
    x, y = batch
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = run(name, model, x, y, seed=3)
    assert torch.equal(torch.get_rng_state(), state), "the attack touched the global RNG"
    b = run(name, model, x, y, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.robust, b.robust)


@pytest.mark.parametrize("name", ITERATIVE)
def test_different_seed_different_random_start(name, model, batch) -> None:
    x, y = batch
    a = run(name, model, x, y, seed=0, steps=2)
    b = run(name, model, x, y, seed=1, steps=2)
    assert not torch.equal(a.x_adv, b.x_adv)


def test_global_seed_does_not_affect_attacks(model, batch) -> None:
    x, y = batch
    torch.manual_seed(0)
    a = run("pgd", model, x, y, seed=5, steps=3)
    torch.manual_seed(99)
    b = run("pgd", model, x, y, seed=5, steps=3)
    assert torch.equal(a.x_adv, b.x_adv)


class _ModeRecorder:
    """Forward pre-hooks on every module recording whether it ran in training mode."""

    def __init__(self, model: nn.Module):
        self.seen: list[bool] = []
        self.handles = [m.register_forward_pre_hook(self.hook) for m in model.modules()]

    def hook(self, module, inputs):
        self.seen.append(module.training)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_runs_in_eval_mode_and_restores_each_module(name, model, batch) -> None:
    x, y = batch
    recorder = _ModeRecorder(model)
    try:
        model.train()
        run(name, model, x, y, steps=2) if name != "fgsm" else run(name, model, x, y)
        assert all(modes(model)), "train mode was not restored"
        assert recorder.seen and not any(recorder.seen), "some module ran in train mode during the attack"

        # mixed: the backbone in eval, everything else (root, head) in train
        model.train()
        model.backbone.eval()
        before = modes(model)
        assert any(before) and not all(before)
        run(name, model, x, y, steps=2) if name != "fgsm" else run(name, model, x, y)
        assert modes(model) == before
        assert model.training and model.head.training and not model.backbone.training
    finally:
        recorder.remove()
        model.eval()


def test_attack_on_model_with_dropout_is_deterministic_and_rng_free(model, batch) -> None:
    """Dropout in train mode would draw from the global RNG: attacks must switch it off."""
    x, y = batch
    noisy = nn.Sequential(nn.Dropout(0.5), model)
    noisy.train()
    state = torch.get_rng_state()
    out = run("pgd", noisy, x, y, steps=3)
    assert torch.equal(torch.get_rng_state(), state)
    ref = run("pgd", model, x, y, steps=3)
    assert torch.equal(out.robust, ref.robust)
    assert torch.equal(out.x_adv, ref.x_adv)
    assert noisy.training and noisy[0].training


def test_eval_mode_restores_even_after_an_exception(model) -> None:
    model.train()
    model.head.eval()
    before = modes(model)
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            assert not any(modes(model))
            raise RuntimeError("boom")
    assert modes(model) == before
    model.eval()


def test_private_generator_and_preserved_rng() -> None:
    a = torch.rand(5, generator=private_generator(7, "cpu"))
    b = torch.rand(5, generator=private_generator(7, torch.device("cpu")))
    assert torch.equal(a, b)
    state = torch.get_rng_state()
    with preserved_global_rng("cpu"):
        torch.manual_seed(0)
        torch.rand(10)
    assert torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- training-time PGD

def test_pgd_perturb_stays_in_ball_and_increases_loss(model, digits) -> None:
    x, y = digits.test.x[:128], digits.test.y[:128]
    g = torch.Generator().manual_seed(0)
    state = torch.get_rng_state()
    x_adv = pgd_perturb(model, x, y, eps=EPS, step_size=0.025, steps=7, generator=g)
    assert torch.equal(torch.get_rng_state(), state), "a generator was given: the global RNG is not used"
    assert not x_adv.requires_grad
    assert linf(x_adv, x) <= EPS + TOL
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(x), y).item()
        adv_loss = F.cross_entropy(model(x_adv), y).item()
    assert adv_loss > clean_loss + 0.1
    # deterministic for the same generator seed; random start depends on it
    again = pgd_perturb(model, x, y, eps=EPS, step_size=0.025, steps=7,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, again)
    other = pgd_perturb(model, x, y, eps=EPS, step_size=0.025, steps=7,
                        generator=torch.Generator().manual_seed(1))
    assert not torch.equal(x_adv, other)


def test_pgd_perturb_without_random_start_is_deterministic_and_uses_callers_mode(model, digits) -> None:
    x, y = digits.test.x[:32], digits.test.y[:32]
    model.train()
    try:
        a = pgd_perturb(model, x, y, eps=EPS, step_size=0.03, steps=3, random_start=False)
        assert model.training, "pgd_perturb must not change the caller's mode"
    finally:
        model.eval()
    b = pgd_perturb(model, x, y, eps=EPS, step_size=0.03, steps=3, random_start=False)
    assert torch.equal(a, b)
    # zero steps without random start: the clean input
    assert torch.equal(pgd_perturb(model, x, y, eps=EPS, step_size=0.03, steps=0, random_start=False), x)
    # one step from x is exactly one projected signed-gradient step (FGSM with step 0.03)
    x_req = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(ce_loss(model(x_req), y), x_req)
    one = pgd_perturb(model, x, y, eps=EPS, step_size=0.03, steps=1, random_start=False)
    torch.testing.assert_close(one, (x + 0.03 * grad.sign()).clamp(0, 1), rtol=0, atol=1e-7)


def test_pgd_perturb_with_cw_loss_lowers_margin(model, digits) -> None:
    x, y = digits.test.x[:64], digits.test.y[:64]
    x_adv = pgd_perturb(model, x, y, eps=EPS, step_size=0.025, steps=7, loss_fn=cw_margin_loss,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert cw_margin_loss(model(x_adv), y) > cw_margin_loss(model(x), y)
    assert linf(x_adv, x) <= EPS + TOL


def test_project_linf() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0, 0.95]])
    x_adv = torch.tensor([[-0.3, 0.9, 1.2, 0.5]])
    torch.testing.assert_close(project_linf(x_adv, x, 0.1), torch.tensor([[0.0, 0.6, 1.0, 0.85]]))


# --------------------------------------------------------------------------- losses by hand

LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
LABELS = torch.tensor([0, 2])


def test_ce_loss_by_hand() -> None:
    row0 = math.log(1 + math.exp(-1) + math.exp(-2))          # -log softmax([2,1,0])[0]
    row1 = math.log(math.exp(0) + math.exp(3) + math.exp(1)) - 1.0  # -log softmax([0,3,1])[2]
    assert row0 == pytest.approx(0.4076059644, abs=1e-8)
    assert row1 == pytest.approx(2.1698460196, abs=1e-8)
    assert ce_loss(LOGITS, LABELS).item() == pytest.approx(row0 + row1, rel=1e-6)
    # summed, not averaged: each sample's loss is independent of the batch
    assert ce_loss(LOGITS[:1], LABELS[:1]).item() == pytest.approx(row0, rel=1e-6)


def test_cw_margin_loss_by_hand() -> None:
    # row 0: max(1, 0) - 2 = -1; row 1: max(0, 3) - 1 = 2
    assert cw_margin_loss(LOGITS, LABELS).item() == pytest.approx(1.0, abs=1e-7)
    assert cw_margin_loss(LOGITS[1:], LABELS[1:]).item() == pytest.approx(2.0, abs=1e-7)
    assert cw_margin_loss(LOGITS[:1], LABELS[:1]).item() == pytest.approx(-1.0, abs=1e-7)
    # the true class is excluded even when it holds the max
    assert cw_margin_loss(torch.tensor([[5.0, 5.0, -1.0]]), torch.tensor([0])).item() == 0.0
    # gradient: +1 on the runner-up, -1 on the true class
    z = LOGITS.clone().requires_grad_(True)
    cw_margin_loss(z, LABELS).backward()
    assert z.grad.tolist() == [[-1.0, 1.0, 0.0], [0.0, 1.0, -1.0]]
    assert LOGITS.tolist() == [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]], "input logits modified"


# --------------------------------------------------------------------------- bad parameters

@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw", "autoattack"])
@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_eps_outside_unit_interval_is_user_error(name, eps) -> None:
    # (for pgd/cw with eps < 0 the error names the derived step_size rather than eps)
    with pytest.raises(UserError):
        build_attack(name, eps)


@pytest.mark.parametrize("name", ITERATIVE)
@pytest.mark.parametrize("params", [{"steps": 0}, {"steps": -3}, {"restarts": 0}, {"step_size": -0.01}])
def test_bad_iterative_params_are_user_errors(name, params) -> None:
    with pytest.raises(UserError):
        build_attack(name, EPS, **params)


def test_unknown_attack_name_is_user_error() -> None:
    with pytest.raises(UserError, match="unknown attack 'pgdd'"):
        build_attack("pgdd", EPS)


@pytest.mark.parametrize("name", ["pgd", "cw", "autoattack"])
def test_unknown_kwarg_is_user_error(name) -> None:
    with pytest.raises(UserError, match="bad parameters"):
        build_attack(name, EPS, stpes=10)


def test_unknown_kwarg_for_fgsm_is_user_error() -> None:
    with pytest.raises(UserError, match="bad parameters"):
        build_attack("fgsm", EPS, steps=10)


def test_valid_edges_and_config() -> None:
    for eps in (0.0, 1.0):
        build_attack("pgd", eps)
    cfg = build_attack("pgd", 0.1, seed=4, steps=8).config()
    assert cfg == {"attack": "pgd", "norm": "linf", "eps": 0.1, "seed": 4, "steps": 8, "step_size": pytest.approx(2.5 * 0.1 / 8),
                   "restarts": 1, "random_start": True, "precision": "fp32"}
    assert build_attack("cw", 0.2).config()["attack"] == "cw"
    assert build_attack("fgsm", 0.2).config() == {"attack": "fgsm", "norm": "linf", "eps": 0.2, "seed": 0, "precision": "fp32"}
    assert build_attack("pgd", 0.1, precision="bf16").config()["precision"] == "bf16"
    assert {"fgsm", "pgd", "cw", "autoattack"} <= set(ATTACKS.names())


@pytest.mark.parametrize("params", [{"version": "custom"}, {"version": "custom", "attacks": []},
                                    {"version": "fast"}, {"version": "custom", "attacks": ["apgd-xx"]},
                                    {"version": "standard", "attacks": ["apgd-ce"]}])
def test_bad_autoattack_params_are_user_errors(params) -> None:
    with pytest.raises(UserError):
        build_attack("autoattack", EPS, **params)


# --------------------------------------------------------------------------- AutoAttack

AA_N = 16


@pytest.fixture(scope="module")
def autoattack_run(model, batch):
    """Our wrapper on 16 samples (apgd-ce), with the model in train mode and global RNG recorded."""
    x, y = batch[0][:AA_N], batch[1][:AA_N]
    torch.manual_seed(321)
    state = torch.get_rng_state()
    model.train()
    try:
        out = build_attack("autoattack", EPS, seed=0, version="custom", attacks=["apgd-ce"]).run(
            model, x, y, batch_size=AA_N, progress=False)
        after_modes = modes(model)
    finally:
        model.eval()
    return out, state, torch.get_rng_state(), after_modes


@pytest.mark.slow
def test_autoattack_flags_ball_rng_and_mode(autoattack_run, batch, clean) -> None:
    out, before, after, after_modes = autoattack_run
    x = batch[0][:AA_N]
    assert torch.equal(before, after), "autoattack changed the caller's global RNG"
    assert all(after_modes), "train mode not restored after autoattack"
    assert out.robust.shape == (AA_N,) and out.robust.dtype == torch.bool
    assert not (out.robust & ~clean[:AA_N]).any()
    assert out.robust.sum() < clean[:AA_N].sum(), "APGD-CE at eps 0.1 should fool a standard model"
    assert linf(out.x_adv, x) <= EPS + TOL
    assert out.x_adv.min().item() >= 0.0 and out.x_adv.max().item() <= 1.0


@pytest.mark.slow
def test_autoattack_matches_direct_pyautoattack(autoattack_run, model, batch) -> None:
    from pyautoattack import AutoAttack

    out = autoattack_run[0]
    x, y = batch[0][:AA_N], batch[1][:AA_N]
    with torch.random.fork_rng(devices=[]):
        adversary = AutoAttack(model, eps=EPS, norm="Linf", version="custom", attacks=["apgd-ce"], seed=0,
                               device="cpu")
        x_direct, y_direct = adversary.run_standard_evaluation(x, y, batch_size=AA_N)
    assert torch.equal(out.robust, y_direct == y)
    torch.testing.assert_close(out.x_adv, x_direct, rtol=0, atol=0)


@pytest.mark.slow
def test_autoattack_captures_library_warnings(model, batch) -> None:
    """A model that outputs probabilities triggers pyautoattack's range check; all samples are wrong
    clean (labels shifted) so no attack has to run."""
    x = batch[0][:8]
    probs = nn.Sequential(model, nn.Softmax(dim=1))
    with torch.no_grad():
        y = (model(x).argmax(1) + 1) % 10
    logger = logging.getLogger("auto-attack")
    handlers = list(logger.handlers)
    out = build_attack("autoattack", EPS, version="custom", attacks=["apgd-ce"]).run(probs, x, y, progress=False)
    assert logger.handlers == handlers, "the warning collector was left on the logger"
    assert not out.robust.any()
    assert any("probability distribution" in w for w in out.warnings), out.warnings


# --------------------------------------------------------------------------- benchmark runner

SUITE = SuiteRecipe(name="t", attack=({"name": "fgsm"}, {"name": "pgd", "steps": 3}))


@pytest.fixture(scope="module")
def evaluation(model, batch):
    x, y = batch
    model.train()
    try:
        state = torch.get_rng_state()
        result = run_suite(model, Split(x, y), SUITE, EPS, name="tiny", progress=False)
        assert torch.equal(torch.get_rng_state(), state)
        assert all(modes(model))
    finally:
        model.eval()
    return result


def test_evaluate_worst_is_and_of_clean_and_attacks(evaluation, model, batch, clean) -> None:
    r = evaluation
    assert r.n == 64 and r.model == "tiny" and r.eps == EPS
    assert set(r.robust) == {"fgsm", "pgd"}
    assert torch.equal(r.clean, clean)
    assert torch.equal(r.worst, clean & r.robust["fgsm"] & r.robust["pgd"])
    # the flags are the attacks' own flags with the suite's seed
    x, y = batch
    assert torch.equal(r.robust["fgsm"], run("fgsm", model, x, y).robust)
    assert torch.equal(r.robust["pgd"], run("pgd", model, x, y, seed=SUITE.seed, steps=3).robust)
    # worst does not mutate the clean flags it starts from
    assert torch.equal(r.clean, clean)
    assert r.worst.sum() <= min(r.robust["fgsm"].sum(), r.robust["pgd"].sum())
    assert r.attack_configs["pgd"]["steps"] == 3 and r.attack_configs["fgsm"]["attack"] == "fgsm"
    assert set(r.seconds) == {"clean", "fgsm", "pgd"}


def test_evaluate_accuracies_have_wilson_intervals(evaluation) -> None:
    accs = evaluation.accuracies()
    assert set(accs) == {"clean", "fgsm", "pgd", "worst"}
    flags = {"clean": evaluation.clean, **evaluation.robust, "worst": evaluation.worst}
    for key, p in accs.items():
        assert isinstance(p, Proportion)
        assert p.n == 64 and p.k == int(flags[key].sum())
        assert p.low <= p.value <= p.high
        assert p.low < p.high
        assert (p.low, p.high) == pytest.approx((wilson(p.k, 64).low, wilson(p.k, 64).high))
    assert accs["worst"].value <= accs["pgd"].value <= accs["clean"].value
    metrics = evaluation.metrics()
    assert metrics["acc/pgd"] == accs["pgd"].value
    assert metrics["acc/worst_ci_low"] == accs["worst"].low
    assert len(metrics) == 12


def test_evaluate_sanity_checks_pass(evaluation) -> None:
    names = [c.name for c in evaluation.checks]
    assert all(c.passed for c in evaluation.checks), [vars(c) for c in evaluation.checks if not c.passed]
    for key in ("fgsm", "pgd"):
        assert f"{key}: ||x_adv - x||_inf <= eps" in names
        assert f"{key}: x_adv in [0, 1]" in names
        assert f"{key}: robust only where clean is correct" in names
    assert "eps = 0 gives clean accuracy" in names


def test_perturbation_checks_can_fail() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    bad = x.clone()
    bad[0, 0, 0, 0] = 0.7
    bad[1, 0, 0, 0] = 1.0 + 1e-3
    checks = perturbation_checks("a", [perturbation_stats(x, bad)], 0.1)
    assert [c.passed for c in checks] == [False, False]
    good = perturbation_checks("a", [perturbation_stats(x, x + 0.1)], 0.1)
    assert [c.passed for c in good] == [True, True]
    # merged over pieces (chunks, ranks): one bad piece fails the check
    merged = perturbation_checks("a", [perturbation_stats(x, x + 0.1), perturbation_stats(x, bad)], 0.1)
    assert [c.passed for c in merged] == [False, False]


def test_evaluate_to_json_roundtrip(evaluation) -> None:
    doc = json.loads(json.dumps(evaluation.to_json()))
    assert doc["n"] == 64 and doc["model"] == "tiny"
    per = doc["per_sample"]
    assert set(per) == {"label", "clean", "fgsm", "pgd"}
    assert per["label"] == evaluation.labels.tolist()
    for key in ("clean", "fgsm", "pgd"):
        assert len(per[key]) == 64 and set(per[key]) <= {0, 1}
        assert sum(per[key]) / 64 == pytest.approx(doc["accuracy"][key]["acc"])
        assert doc["accuracy"][key]["k"] == sum(per[key])
    worst = [c & f & p for c, f, p in zip(per["clean"], per["fgsm"], per["pgd"])]
    assert sum(worst) / 64 == pytest.approx(doc["accuracy"]["worst"]["acc"])
    assert all(c["passed"] for c in doc["sanity_checks"])
    assert doc["attacks"]["pgd"]["steps"] == 3


def test_evaluate_with_keys_and_batches(model, batch) -> None:
    x, y = batch
    suite = SuiteRecipe(name="k", batch_size=10, seed=2,
                        attack=({"name": "pgd", "steps": 2, "key": "pgd2"},
                                {"name": "pgd", "steps": 4, "key": "pgd4"}))
    r = run_suite(model, Split(x, y), suite, EPS, progress=False)
    assert set(r.robust) == {"pgd2", "pgd4"}
    assert r.attack_configs["pgd4"]["seed"] == 2 and r.attack_configs["pgd4"]["steps"] == 4
    assert torch.equal(r.clean, clean_flags(model, x, y, 256))
    assert all(c.passed for c in r.checks)


# --------------------------------------------------------------------------- Wilson intervals

def test_wilson_known_values() -> None:
    """Reference values: the roots of (p - k/n)^2 = z^2 p (1 - p) / n, solved independently."""
    p = wilson(8, 10)
    assert (p.low, p.high) == pytest.approx((0.4901625, 0.9433178), abs=1e-6)
    assert p.value == 0.8 and p.k == 8 and p.n == 10
    p = wilson(5, 10)
    assert (p.low, p.high) == pytest.approx((0.2365931, 0.7634069), abs=1e-6)
    p = wilson(1, 20)
    assert (p.low, p.high) == pytest.approx((0.0088815, 0.2361312), abs=1e-6)
    p = wilson(30, 64)
    assert (p.low, p.high) == pytest.approx((0.3517599, 0.5892791), abs=1e-6)
    assert wilson(0, 10).low == pytest.approx(0.0, abs=1e-12)
    assert wilson(0, 10).high == pytest.approx(0.2775328, abs=1e-6)
    assert wilson(10, 10).high == pytest.approx(1.0, abs=1e-12)
    assert wilson(10, 10).low == pytest.approx(0.7224672, abs=1e-6)
    # a wider interval at 99%
    wide = wilson(8, 10, z=2.5758293)
    assert wide.low < 0.4901625 and wide.high > 0.9433178


def test_wilson_empty_is_nan() -> None:
    p = wilson(0, 0)
    assert math.isnan(p.value) and math.isnan(p.low) and math.isnan(p.high)
    d = p.as_dict()
    assert d["n"] == 0 and math.isnan(d["acc"])


def test_wilson_symmetry_and_monotonicity() -> None:
    for n in (1, 7, 10, 64, 359):
        for k in range(n + 1):
            p, q = wilson(k, n), wilson(n - k, n)
            assert p.low == pytest.approx(1 - q.high, abs=1e-12)
            assert 0.0 <= p.low <= p.high <= 1.0
            if k:
                assert p.low > wilson(k - 1, n).low and p.high > wilson(k - 1, n).high
            assert p.low <= p.value + 1e-12 and p.value - 1e-12 <= p.high


def test_wilson_extremes_are_exact_and_contain_the_estimate() -> None:
    for n in range(1, 201):
        lo, hi = wilson(0, n), wilson(n, n)
        assert lo.low == 0.0, (n, lo.low)
        assert hi.high == 1.0, (n, hi.high)
        assert lo.low <= lo.value and hi.value <= hi.high


def test_strength_checks_flag_a_stronger_attack_scoring_higher() -> None:
    from robdistill.eval.checks import strength_checks
    from robdistill.eval.results import EvaluationResult

    n = 40
    clean = torch.ones(n, dtype=torch.bool)
    weak = torch.zeros(n, dtype=torch.bool)
    weak[:10] = True                                  # fgsm: 10 robust
    strong = torch.zeros(n, dtype=torch.bool)
    strong[:30] = True                                # "pgd": 30 robust, 20 of them fooled by fgsm
    configs = {"fgsm": {"attack": "fgsm"}, "pgd": {"attack": "pgd"}}
    masked = EvaluationResult("m", 0.1, torch.zeros(n, dtype=torch.long), clean, {"fgsm": weak, "pgd": strong},
                              configs, {})
    [check] = strength_checks(masked)
    assert check.name == "pgd not above fgsm" and not check.passed and "McNemar" in check.detail
    noisy = strong.clone()
    noisy[10:30] = False
    noisy[10:12] = True                               # 12 vs 10: within noise
    ok = EvaluationResult("m", 0.1, torch.zeros(n, dtype=torch.long), clean, {"fgsm": weak, "pgd": noisy},
                          configs, {})
    assert all(c.passed for c in strength_checks(ok))


def test_square_alone_is_not_expected_to_beat_pgd() -> None:
    """A custom AutoAttack of Square only (black-box) may leave more samples robust than PGD on an
    honest model; one with an APGD component may not."""
    from robdistill.eval.checks import strength_checks
    from robdistill.eval.results import EvaluationResult

    n = 40
    clean = torch.ones(n, dtype=torch.bool)
    pgd, square = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
    pgd[:10], square[:30] = True, True
    for attacks, judged in ((["square"], False), (["apgd-ce", "square"], True)):
        configs = {"pgd": {"attack": "pgd"}, "aa": {"attack": "autoattack", "version": "custom", "attacks": attacks}}
        result = EvaluationResult("m", 0.1, torch.zeros(n, dtype=torch.long), clean, {"pgd": pgd, "aa": square},
                                  configs, {})
        checks = strength_checks(result)
        assert (any(c.name == "aa not above pgd" for c in checks)) == judged
        assert all(c.passed for c in checks) != judged
