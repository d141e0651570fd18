"""The Square-versus-white-box gap check (METHODS section 4) and AutoAttack's per-component flags.

A small CNN trained briefly on ``digits``, and the same CNN behind a rounding step (x -> round(16 x)
/ 16, exact on digits' 17 grey levels) whose input gradient is zero everywhere: gradient attacks
see nothing, Square does. 32 test images, Square with 100 queries.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robdistill.attacks import build_attack
from robdistill.data.datasets import Split
from robdistill.core.errors import UserError
from robdistill.eval.checks import square_gap_checks
from robdistill.eval.results import EvaluationResult, result_from_json
from robdistill.eval.runner import run_suite
from robdistill.config.recipes import SuiteRecipe

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1
N = 32




class Rounded(nn.Module):
    """Quantises its input to 17 levels first: the same predictions, a zero input gradient."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


@pytest.fixture(scope="module")
def model(quick_cnn) -> nn.Module:
    return quick_cnn(0)


@pytest.fixture(scope="module")
def data(digits) -> Split:
    return Split(digits.test.x[:N].clone(), digits.test.y[:N].clone())


def suite(attacks: list[str]) -> SuiteRecipe:
    return SuiteRecipe(name="gap", attack=({"name": "pgd", "steps": 5},
                                           {"name": "autoattack", "version": "custom", "attacks": attacks,
                                            "square_queries": 100}))


def gap_check(result: EvaluationResult):
    [check] = [c for c in result.checks if "Square-versus-white-box" in c.name]
    return check


@pytest.mark.slow
def test_masked_model_is_flagged(model, data) -> None:
    masked = Rounded(model)
    with torch.no_grad():
        assert torch.equal(masked(data.x).argmax(1), model(data.x).argmax(1)), "rounding is exact on digits"
    result = run_suite(masked, data, suite(["apgd-ce", "square"]), EPS, progress=False)
    check = gap_check(result)
    assert not check.passed, check.detail
    parts = result.fooled_by["autoattack"]
    assert set(parts) == {"apgd-ce", "square"}
    assert int(parts["square"].sum()) > 5 and f"square {int(parts['square'].sum())}" in check.detail
    assert any("gradient masking" in w for w in result.warnings["autoattack"])
    # the flags JSON keeps the per-component samples
    again = result_from_json(json.loads(json.dumps(result.to_json())))
    assert {k: torch.equal(v, parts[k]) for k, v in again.fooled_by["autoattack"].items()} == \
        {"apgd-ce": True, "square": True}


@pytest.mark.slow
def test_normal_model_is_not_flagged(model, data) -> None:
    result = run_suite(model, data, suite(["apgd-ce", "square"]), EPS, progress=False)
    check = gap_check(result)
    assert check.passed, check.detail
    assert check.detail.startswith("Square fooled 0 of")
    parts = result.fooled_by["autoattack"]
    # the components' fooled samples and the library's robust flags partition the clean-correct ones
    assert torch.equal(result.robust["autoattack"], result.clean & ~parts["apgd-ce"] & ~parts["square"])
    assert not (parts["apgd-ce"] & parts["square"]).any()


@pytest.mark.slow
def test_components_after_square_run_on_what_square_fooled(model, data) -> None:
    """Square first: the library never gives its fooled samples to APGD-CE; the wrapper does, so
    the gap counts only samples that survive the white-box attack too."""
    out = build_attack("autoattack", EPS, version="custom", attacks=["square", "apgd-ce"],
                       square_queries=100).run(model, data.x, data.y, progress=False)
    square, apgd = out.fooled_by["square"], out.fooled_by["apgd-ce"]
    assert square.any()
    assert (square & apgd).any(), "APGD-CE should also fool samples Square fooled on a plain model"
    with torch.no_grad():
        clean = model(data.x).argmax(1) == data.y
    assert torch.equal(out.robust, clean & ~square & ~apgd)
    result = run_suite(model, data, suite(["square", "apgd-ce"]), EPS, progress=False)
    assert gap_check(result).passed


def _synthetic(square_only: int, survivors: int, fooled_by_pgd_too: int = 0) -> EvaluationResult:
    n = survivors + fooled_by_pgd_too + 10
    clean = torch.ones(n, dtype=torch.bool)
    pgd = torch.zeros(n, dtype=torch.bool)
    pgd[:survivors] = True
    square = torch.zeros(n, dtype=torch.bool)
    square[:square_only] = True
    square[survivors:survivors + fooled_by_pgd_too] = True  # fooled by PGD as well: not a gap
    apgd = ~pgd & ~square
    robust = pgd & ~square
    return EvaluationResult("m", EPS, torch.zeros(n, dtype=torch.long), clean,
                            {"pgd": pgd, "autoattack": robust},
                            {"pgd": {"attack": "pgd"}, "autoattack": {"attack": "autoattack"}}, {},
                            fooled_by={"autoattack": {"apgd-ce": apgd, "square": square}})


def test_gap_rule_tolerates_noise_and_flags_material_gaps() -> None:
    # 1000 white-box survivors: 3 (below the 0.5% tolerance) is noise, 15 is not
    assert square_gap_checks(_synthetic(3, 1000))[0].passed
    flagged = _synthetic(15, 1000)
    [check] = square_gap_checks(flagged)
    assert not check.passed and "Square fooled 15 of 1000" in check.detail
    assert flagged.warnings["autoattack"]
    # samples PGD fools too are no gap
    assert square_gap_checks(_synthetic(0, 1000, fooled_by_pgd_too=50))[0].passed
    # small evaluations: 2 of 30 survivors is material
    assert not square_gap_checks(_synthetic(2, 30))[0].passed
    assert square_gap_checks(_synthetic(1, 30))[0].passed


def test_no_square_no_gap_check() -> None:
    result = _synthetic(0, 10)
    del result.fooled_by["autoattack"]["square"]
    assert square_gap_checks(result) == []


def test_square_queries_is_validated_and_logged() -> None:
    with pytest.raises(UserError, match="square_queries"):
        build_attack("autoattack", EPS, square_queries=0)
    assert build_attack("autoattack", EPS, square_queries=50).config()["square_queries"] == 50
    assert "square_queries" not in build_attack("autoattack", EPS).config()
