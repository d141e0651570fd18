"""--compile (issue 33 item 4): the attacks craft through torch.compile of the model and still judge
every flag with an eager fp32 forward; on a small model the flags equal the eager attacks'."""
from __future__ import annotations

import pytest
import torch

from robdistill.config.recipes import SuiteRecipe
from robdistill.data.datasets import Split
from robdistill.eval.runner import run_suite

pytestmark = [pytest.mark.usefixtures("single_thread"), pytest.mark.slow]  # compiling takes tens of seconds


def test_compiled_attacks_give_the_eager_flags(quick_cnn, digits) -> None:
    model = quick_cnn(0)
    data = Split(digits.test.x[:64], digits.test.y[:64])
    attacks = ({"name": "fgsm"}, {"name": "pgd", "steps": 3}, {"name": "cw", "steps": 3})
    eager = run_suite(model, data, SuiteRecipe(name="t", attack=attacks), 0.1, progress=False)
    compiled = run_suite(model, data, SuiteRecipe(name="t", attack=attacks, compile=True), 0.1, progress=False)
    for key in ("fgsm", "pgd", "cw"):
        assert torch.equal(compiled.robust[key], eager.robust[key]), key
        assert compiled.attack_configs[key]["precision"] == "fp32+compile"
        assert eager.attack_configs[key]["precision"] == "fp32"
    assert compiled.passed, [c for c in compiled.checks if not c.passed]
    from robdistill.core.precision import _COMPILED_ATTR

    assert _COMPILED_ATTR in model.__dict__  # the crafting forwards did go through torch.compile
    assert not any(key.startswith(_COMPILED_ATTR) for key in model.state_dict())  # the weights as they were
    assert 0 < compiled.accuracies()["pgd"].value < 1  # some samples fooled, some not: the flags say something
