"""Duration estimates (robdistill.experiments.estimate): attack budgets are upper bounds of the passes
an attack really spends, `--estimate` prints every stage and writes nothing, and a run prints its
estimate before it starts."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robdistill.attacks.base import Budget, build_attack, counted_passes
from robdistill.cli.main import main
from robdistill.experiments.estimate import Estimate, StageEstimate

TINY = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--suite", "smoke", "--n-eval", "16"]


def survivors(n: int = 6, classes: int = 10) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small model and images labelled with its own predictions: at eps = 0 no attack can fool a
    sample, so each spends its whole budget on every one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes))
    x = torch.rand(n, 1, 4, 4)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("name, params", [("fgsm", {}), ("pgd", {"steps": 7, "restarts": 3}),
                                          ("cw", {"steps": 5, "restarts": 2})])
def test_a_gradient_attack_spends_exactly_its_budget_on_a_surviving_sample(name, params) -> None:
    model, x, y = survivors()
    attack = build_attack(name, 0.0, **params)
    with counted_passes(model) as count:
        assert attack.run(model, x, y, progress=False).robust.all()
    budget = attack.budget(10)
    assert count.backward / len(y) == budget.gradient
    assert count.forward / len(y) <= budget.gradient + budget.forward


def test_autoattacks_budget_bounds_what_it_spends_and_is_not_loose() -> None:
    """AutoAttack (all four standard components, iterations capped as in the eps = 0 probe)."""
    model, x, y = survivors(n=4)
    attack = build_attack("autoattack", 0.1, version="standard").zero_eps_probe(steps=3)
    with counted_passes(model) as count:
        assert attack.run(model, x, y, progress=False).robust.all()
    budget = attack.budget(10)
    backward, forward = count.backward / len(y), count.forward / len(y)
    assert backward <= budget.gradient and forward <= budget.gradient + budget.forward, (count, budget)
    assert backward >= 0.5 * budget.gradient and forward >= 0.5 * (budget.gradient + budget.forward), (count, budget)


def test_budgets_follow_the_configuration() -> None:
    assert build_attack("pgd", 0.1, steps=40, restarts=5).budget(10) == Budget(200, 6)
    standard = build_attack("autoattack", 0.1, version="standard").budget(10)
    # APGD-CE 1 + 100 + APGD-T 9 x (1 + 100) + FAB-T 9 x 100 gradients; Square's 5000 queries are forwards
    assert standard.gradient == 101 + 909 + 900 and standard.forward >= 5000
    assert build_attack("autoattack", 0.1, version="standard").budget(5).gradient < standard.gradient  # 4 targets


def test_estimate_text_gives_ranges_only_where_the_bounds_differ() -> None:
    estimate = Estimate([StageEstimate("teacher at", 120.0, 120.0, "20 epochs"),
                         StageEstimate("attacks on the student", 1.0, 600.0)])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        text = estimate.text()
    finally:
        torch.set_num_threads(threads)
    assert text.splitlines()[0] == ("estimated duration on this machine: 2.0 min to 12.0 min, 0.1 to 0.4 core-hours "
                                    "at 2 threads per process (one process; N processes of one thread each share "
                                    "the core-hours)")
    assert "  teacher at 2.0 min (20 epochs)" in text and "  attacks on the student 1 s to 10.0 min" in text
    assert estimate.times(3).high == 3 * estimate.high


def test_run_estimate_prints_every_stage_and_writes_nothing(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--teacher", "at", "--perturb", "keep", "--estimate", *TINY])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert result.stderr.startswith("estimating the duration: timing a few batches")  # said before it times
    assert lines[0].startswith("estimated duration on this machine: ")
    assert [line.split()[0:2] for line in lines[1:]] == [["teacher", "at"], ["student", "[keep]"],
                                                        ["attacks", "on"], ["attacks", "on"]]
    assert sorted(p.name for p in workdir.iterdir()) == []  # no store, no cache, no checkpoint


def test_sweep_estimate_counts_teachers_per_seed_and_students_per_cell(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["sweep", "--teachers", "standard,at", "--perturbs", "keep,nonmax-shuffle",
                                       "--seeds", "0,1", "--estimate", *TINY])
    assert result.exit_code == 0, result.output
    text = result.stdout
    time = r"[\d.]+ (?:s|min|h)"
    stages = dict(re.fullmatch(rf"  (.+?) {time}(?: to {time})? \((.*)\)", line).groups()  # type: ignore[union-attr]
                  for line in text.splitlines()[1:])
    assert stages["teacher standard"].startswith("2 seed(s) to train, each ") and "teacher at" in stages
    assert stages["students of at"].startswith("4 cell(s), each ")
    assert stages["attacks on teacher at"].startswith("2 seed(s), each ")
    assert stages["attacks on the students of standard"].startswith("4 cell(s), each ")
    assert sorted(p.name for p in workdir.iterdir()) == []


@pytest.mark.slow
def test_run_prints_its_estimate_before_it_starts(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--teacher", "standard", "--perturb", "keep", *TINY])
    assert result.exit_code == 0, result.output
    assert result.stderr.index("estimated duration on this machine: ") < result.stderr.index("teacher standard: epoch 1/1")
    quiet = CliRunner().invoke(main, ["run", "--teacher", "standard", "--perturb", "keep", "--quiet", *TINY])
    assert quiet.exit_code == 0 and "estimated duration" not in quiet.stderr + quiet.stdout


def test_an_estimate_leaves_the_global_rng_and_every_modules_mode_alone(workdir: Path) -> None:
    """Estimating must not change what the process computes next (same seed, same numbers)."""
    from robdistill.config.settings import Settings
    from robdistill.data.datasets import load_dataset
    from robdistill.experiments.estimate import attacks_estimate
    from robdistill.config.overrides import Overrides
    from robdistill.experiments.pipeline import experiment_estimate, make_plan

    settings = Settings(cache_dir=workdir / "cache", progress=False)
    plan = make_plan(settings, teacher="at", student="default", perturb="keep", suite="smoke", n_eval=16,
                     overrides=Overrides.parse(["teacher.epochs=1", "student.epochs=1"]))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    experiment_estimate(plan, settings, "keep")
    assert torch.equal(torch.get_rng_state(), before)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10))
    model.train()
    model[1].eval()  # a submodule in its own mode
    assert plan.suite is not None
    attacks_estimate("student", model, plan.suite, 0.1, 16, load_dataset("digits").info, "cpu")
    assert [m.training for m in model.modules()] == [True, True, False, True]


def test_a_mixed_grid_with_teacher_overrides_is_estimated(digits_teacher, workdir: Path) -> None:
    """A published or file teacher's cells take every override but teacher.* (as the sweep runs them)."""
    _, _, handle = digits_teacher
    result = CliRunner().invoke(main, ["sweep", "--teachers", f"at,{handle.path}", "--perturbs", "keep",
                                       "--seeds", "0", "--estimate", *TINY])
    assert result.exit_code == 0, result.output
    assert "teacher at " in result.stdout and f"students of {handle.path.stem}" in result.stdout
    assert f"\n  teacher {handle.path.stem}" not in result.stdout  # a file teacher is never trained
