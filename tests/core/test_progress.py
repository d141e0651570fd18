"""The one-line-per-step progress of long jobs without a terminal (robdistill.core.progress)."""
from __future__ import annotations

import pytest

from robdistill.attacks import build_attack
from robdistill.core import progress
from robdistill.core.progress import StepLog
from robdistill.eval.runner import relative_costs


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    monkeypatch.setattr(progress, "bars_drawn", lambda: False)
    return fake


def lines_of(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_equal_steps_estimate_the_rest_from_the_average(clock, capsys) -> None:
    log = StepLog("teacher", 4, "epoch")
    clock.now = 10.0
    log.step(1)
    assert lines_of(capsys) == ["teacher: epoch 1/4 done in 10 s, 10 s elapsed, about 30 s left"]


def test_weighted_steps_estimate_the_rest_from_their_weights(clock, capsys) -> None:
    """Two cheap attacks then an expensive one: the time left after the first is the cost of the
    other two at the first one's rate, not one step's average."""
    log = StepLog("eval m", 3, "attack", weights=[1.0, 1.0, 8.0])
    clock.now = 10.0
    log.step(1, "fgsm")
    clock.now = 20.0
    log.step(2, "pgd")
    clock.now = 100.0
    log.step(3, "autoattack")
    assert lines_of(capsys) == ["eval m: fgsm done in 10 s, 10 s elapsed, about 1.5 min left",
                                "eval m: pgd done in 10 s, 20 s elapsed, about 80 s left",
                                "eval m: autoattack done in 80 s, 1.7 min elapsed"]


def test_a_resumed_job_estimates_from_the_steps_it_ran_itself(clock, capsys) -> None:
    log = StepLog("eval m", 3, "attack", done=2, weights=[1.0, 1.0, 8.0])
    log.step(1, "fgsm")
    log.step(2, "pgd")  # restored from the state file: nothing ran here yet, no estimate
    clock.now = 40.0
    log.step(3, "autoattack")
    assert [line.split(" done")[0] for line in lines_of(capsys)] == ["eval m: fgsm", "eval m: pgd",
                                                                     "eval m: autoattack"]


def test_weights_must_be_one_positive_number_a_step() -> None:
    with pytest.raises(ValueError, match="3 positive numbers"):
        StepLog("eval m", 3, "attack", weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="3 positive numbers"):
        StepLog("eval m", 3, "attack", weights=[1.0, 0.0, 2.0])


def test_attack_weights_follow_their_pass_budgets() -> None:
    """FGSM, PGD-20 and AutoAttack standard on 10 classes: AutoAttack weighs more than the two others
    together many times over, and PGD-20 about 20 times FGSM."""
    attacks = {"fgsm": build_attack("fgsm", 0.1), "pgd": build_attack("pgd", 0.1, steps=20, step_size=0.025),
               "autoattack": build_attack("autoattack", 0.1, version="standard")}
    fgsm, pgd, autoattack = relative_costs(attacks, 10)
    assert 15 < pgd / fgsm < 25
    assert autoattack > 10 * (fgsm + pgd)


def test_an_attack_without_a_budget_gives_equal_steps() -> None:
    class NoBudget:
        def budget(self, num_classes: int):
            raise NotImplementedError

    assert relative_costs({"a": NoBudget(), "b": NoBudget()}, 10) is None  # type: ignore[dict-item]
