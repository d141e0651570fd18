"""What the command line says (issue "Trust", item 4, and long jobs without a terminal): which step
size applies, and a line per epoch and per attack when no progress bar is drawn. Each test here
failed on the code before its fix."""
from __future__ import annotations

import pytest
import torch.nn.functional as F
from torch import nn

from robdistill.config.recipes import SuiteRecipe, parse_recipe
from robdistill.data.datasets import Split
from robdistill.eval.runner import run_suite

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1


@pytest.fixture(scope="module")
def batch(digits):
    return digits.test.x[:48].clone(), digits.test.y[:48].clone()


# ------------------------------------------------------------------ 4. dataset step sizes

def test_list_says_which_step_size_applies() -> None:
    from click.testing import CliRunner

    from robdistill.cli.main import main

    datasets = CliRunner().invoke(main, ["list", "datasets"]).output
    assert "attack step 0.01" in datasets and "attack step 0.025" in datasets
    suites = CliRunner().invoke(main, ["list", "suites"]).output
    assert "[step size: the dataset's, scaled to eps]" in suites


# ------------------------------------------------------------------ long jobs without a terminal

def test_epochs_and_attacks_print_a_line_each_when_no_bar_is_drawn(digits, quick_cnn, batch, capsys) -> None:
    """Under nohup / tee / a scheduler stderr is no terminal and tqdm draws nothing: each epoch and
    each attack still says it finished, with the elapsed time and an estimate of what is left."""
    from robdistill.train.loop import fit
    from robdistill.train.objectives import LossOutput

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    recipe = parse_recipe("teacher", "standard", ["epochs=3", "batch_size=512"])

    def step(m, idx, x, y):
        logits = m(x)
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})

    fit(model, digits.train, recipe, step, seed=0, desc="teacher tiny", progress=True)
    err = capsys.readouterr().err
    epochs = [line for line in err.splitlines() if line.startswith("teacher tiny: epoch")]
    assert len(epochs) == 3 and "about" in epochs[0] and "left" in epochs[0] and "left" not in epochs[-1]
    x, y = batch
    run_suite(quick_cnn(0), Split(x[:16], y[:16]), SuiteRecipe(name="t", attack=({"name": "fgsm"}, {"name": "pgd",
                                                                                                  "steps": 2})),
             EPS, name="m", progress=True)
    err = capsys.readouterr().err
    assert [line.split(" (")[0] for line in err.splitlines() if line.startswith("eval m:")] == ["eval m: fgsm",
                                                                                               "eval m: pgd"]
    fit(model, digits.train, recipe, step, seed=0, desc="teacher quiet", progress=False)
    assert "teacher quiet" not in capsys.readouterr().err
