"""The ``transfer`` attack (METHODS section 4): PGD crafted on a surrogate, evaluated on the target.

Two small CNNs trained briefly on the embedded ``digits`` set (different seeds), 48 test images.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robdistill.attacks import ATTACKS, build_attack
from robdistill.models.checkpoints import save_checkpoint
from robdistill.data.datasets import Split
from robdistill.core.errors import UserError
from robdistill.eval.runner import run_suite, load_surrogate, suite_attacks
from robdistill.config.recipes import SuiteRecipe

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1




@pytest.fixture(scope="module")
def target(quick_cnn) -> nn.Module:
    return quick_cnn(0)


@pytest.fixture(scope="module")
def surrogate_path(quick_cnn, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("surrogate") / "surrogate.pt"
    return save_checkpoint(path, quick_cnn(1), kind="teacher", model_name="small-cnn", dataset="digits",
                           recipe={}, seed=1)


@pytest.fixture(scope="module")
def batch(digits):
    return digits.test.x[:48].clone(), digits.test.y[:48].clone()


def test_transfer_is_registered() -> None:
    assert "transfer" in ATTACKS.names()


def test_transfer_flags_subset_of_clean_and_in_ball(target, surrogate_path, batch) -> None:
    x, y = batch
    with torch.no_grad():
        clean = target(x).argmax(1) == y
    torch.manual_seed(5)
    state = torch.get_rng_state()
    target.train()
    try:
        out = build_attack("transfer", EPS, steps=5, surrogate=load_surrogate(surrogate_path)).run(
            target, x, y, progress=False)
        assert target.training, "the target's mode was not restored"
    finally:
        target.eval()
    assert torch.equal(torch.get_rng_state(), state)
    assert out.robust.dtype == torch.bool and out.robust.shape == y.shape
    assert not (out.robust & ~clean).any()
    assert (out.x_adv - x).abs().max().item() <= EPS + 1e-6
    assert 0.0 <= out.x_adv.min().item() and out.x_adv.max().item() <= 1.0
    with torch.no_grad():
        assert torch.equal(out.robust, clean & (target(out.x_adv).argmax(1) == y))
    # a black-box attack from another model is weaker than white-box PGD on these models
    pgd = build_attack("pgd", EPS, steps=5).run(target, x, y, progress=False)
    assert out.robust.sum() >= pgd.robust.sum()


def test_transfer_config_in_evaluation(target, surrogate_path, batch) -> None:
    x, y = batch
    suite = SuiteRecipe(name="t", attack=({"name": "pgd", "steps": 3},
                                         {"name": "transfer", "surrogate": str(surrogate_path), "steps": 3}))
    result = run_suite(target, Split(x, y), suite, EPS, progress=False)
    config = result.attack_configs["transfer"]
    assert config["attack"] == "transfer" and config["surrogate"] == str(surrogate_path)
    assert config["surrogate_attack"] == {"attack": "pgd", "steps": 3, "step_size": pytest.approx(2.5 * EPS / 3),
                                          "restarts": 1, "random_start": True}
    assert all(c.passed for c in result.checks), [vars(c) for c in result.checks if not c.passed]
    assert any(c.name == "pgd not above transfer" for c in result.checks)
    module_cfg = build_attack("transfer", EPS, surrogate=target).config()
    assert module_cfg["surrogate"] == f"<{type(target).__name__} module>"


@pytest.mark.parametrize("surrogate", [None, "", "missing/teacher.pt", Path("teacher.pt"), 3])
def test_bad_surrogate_is_one_line_user_error(surrogate, workdir) -> None:
    """The attack takes a module; anything else (a path included) is a one-line error."""
    with pytest.raises(UserError) as info:
        build_attack("transfer", EPS, surrogate=surrogate)
    assert "\n" not in str(info.value) and "surrogate" in str(info.value)


@pytest.mark.parametrize("path", ["", "missing/teacher.pt"])
def test_bad_surrogate_path_in_a_suite_is_one_line_user_error(path, workdir) -> None:
    suite = SuiteRecipe(name="t", attack=({"name": "transfer", "surrogate": path, "steps": 3},))
    with pytest.raises(UserError) as info:
        suite_attacks(suite, EPS)
    assert "\n" not in str(info.value) and "surrogate" in str(info.value)


def test_non_checkpoint_surrogate_is_user_error(workdir) -> None:
    path = workdir / "junk.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(UserError, match="transfer surrogate"):
        load_surrogate(path)


def test_transfer_bad_pgd_params_are_user_errors(target) -> None:
    with pytest.raises(UserError):
        build_attack("transfer", EPS, surrogate=target, steps=0)
    with pytest.raises(UserError, match="bad parameters"):
        build_attack("transfer", EPS, surrogate=target, stpes=3)
