"""An attack of a suite on fewer images than the evaluation (an ``[[attack]]`` table's ``n_eval``), and
the transfer attack crafted on the student's teacher (``surrogate = "teacher"``): the Fashion-MNIST
study's suite runs PGD-20 and CW-20 on all test images and AutoAttack and the transfer attack on a
prefix."""
from __future__ import annotations

import pytest
import torch

from robdistill.config.recipes import SuiteRecipe, parse_recipe
from robdistill.core.errors import UserError
from robdistill.data.datasets import Split
from robdistill.eval.results import merge_shards, result_from_json
from robdistill.eval.runner import run_suite, suite_attacks
from robdistill.eval.tables import results_table

pytestmark = pytest.mark.usefixtures("single_thread")

EPS = 0.1


@pytest.fixture(scope="module")
def split(digits):
    return Split(digits.test.x[:90].clone(), digits.test.y[:90].clone())


def test_an_attack_with_its_own_n_eval_runs_on_that_prefix_only(quick_cnn, split) -> None:
    model = quick_cnn(0)
    suite = SuiteRecipe(name="t", batch_size=512, attack=({"name": "fgsm"}, {"name": "pgd", "steps": 5, "n_eval": 40}))
    result = run_suite(model, split, suite, EPS, progress=False)
    assert len(result.robust["fgsm"]) == 90 and len(result.robust["pgd"]) == 40
    assert result.common_n == 40 and len(result.worst) == 40
    acc = result.accuracies()
    assert acc["pgd"].n == 40 and acc["fgsm"].n == 90 and acc["clean"].n == 90
    # the same flags as the attack run alone on those images (the batch holds them all, same seed)
    alone = run_suite(model, Split(split.x[:40], split.y[:40]),
                     SuiteRecipe(name="t", batch_size=512, attack=({"name": "pgd", "steps": 5},)), EPS, progress=False)
    assert torch.equal(alone.robust["pgd"], result.robust["pgd"])
    assert result.passed, [c for c in result.checks if not c.passed]
    assert "pgd (first 40)" in results_table({"m": result}) and "fgsm (first" not in results_table({"m": result})
    back = result_from_json(result.to_json())
    assert {k: len(v) for k, v in back.robust.items()} == {"fgsm": 90, "pgd": 40}
    assert back.accuracies() == result.accuracies()
    result.rows = list(range(90))
    with pytest.raises(UserError, match="cannot be split into shards"):
        merge_shards([result])


def test_n_eval_of_an_attack_is_checked() -> None:
    with pytest.raises(UserError, match="n_eval of attack 'pgd' must be an integer >= 0"):
        SuiteRecipe(name="t", attack=({"name": "pgd", "n_eval": -3},)).validate()
    suite = SuiteRecipe(name="t", attack=({"name": "pgd", "n_eval": 500}, {"name": "cw"}))
    assert suite.attack_samples(200) == {"pgd": 200, "cw": 200}
    assert suite.attack_samples(2000) == {"pgd": 500, "cw": 2000}


def test_a_transfer_attack_from_the_teacher_crafts_on_the_module_it_is_given(quick_cnn, split) -> None:
    teacher, student = quick_cnn(0), quick_cnn(1)
    suite = SuiteRecipe(name="t", attack=({"name": "transfer", "surrogate": "teacher", "steps": 5},))
    with pytest.raises(UserError, match="only `run` and `sweep` know"):
        suite_attacks(suite, EPS)
    attack = suite_attacks(suite, EPS, surrogates={"teacher": teacher})["transfer"]
    assert attack.surrogate is teacher
    # the teacher's own examples sent to the teacher itself are a final-iterate PGD: not above white-box PGD-5
    on_teacher = run_suite(teacher, split, suite, EPS, progress=False, surrogates={"teacher": teacher})
    on_student = run_suite(student, split, suite, EPS, progress=False, surrogates={"teacher": teacher})
    assert on_teacher.passed and on_student.passed
    assert not torch.equal(on_teacher.robust["transfer"], on_student.robust["transfer"])


def test_the_fashion_mnist_study_suite_loads_and_sizes_its_attacks() -> None:
    suite = parse_recipe("suite", "fmnist-study")
    assert suite.attack_samples(10000) == {"pgd": 10000, "cw": 10000, "autoattack": 2000, "transfer": 2000,
                                           "aa_standard": 500}
    assert suite.analysis_n_eval == 2000
    assert [e.get("key", e["name"]) for e in suite.for_subject("teacher").attack] == list(suite.attack_samples(1))
    assert "aa_standard" in [e.get("key") for e in suite.for_subject("keep").attack]
    assert "aa_standard" not in [e.get("key") for e in suite.for_subject("nonmax-shuffle").attack]
    assert suite.for_subject(None) is suite


def test_an_attack_for_some_models_only_stays_out_of_the_worst_case(quick_cnn, split) -> None:
    model = quick_cnn(0)
    suite = SuiteRecipe(name="t", attack=({"name": "fgsm"}, {"name": "pgd", "steps": 5, "only": ["keep"]}))
    with pytest.raises(UserError, match="only of attack 'cw' must be a non-empty list"):
        SuiteRecipe(name="t", attack=({"name": "cw", "only": "keep"},)).validate()
    keep = run_suite(model, split, suite.for_subject("keep"), EPS, progress=False)
    other = run_suite(model, split, suite.for_subject("onehot"), EPS, progress=False)
    assert set(keep.robust) == {"fgsm", "pgd"} and set(other.robust) == {"fgsm"}
    assert keep.not_in_worst == ("pgd",) and torch.equal(keep.worst, other.worst)  # worst over fgsm alone
    assert result_from_json(keep.to_json()).not_in_worst == ("pgd",)


def test_the_square_check_runs_on_the_images_every_attack_ran_on(quick_cnn, split) -> None:
    """An AutoAttack with Square on fewer images than a white-box attack outside it, for some models only."""
    model = quick_cnn(0)
    suite = SuiteRecipe(name="t", attack=({"name": "pgd", "steps": 5, "n_eval": 60},
                                          {"name": "autoattack", "key": "aa", "version": "custom",
                                           "attacks": ["apgd-ce", "square"], "square_queries": 50, "n_eval": 30,
                                           "only": ["keep"]}))
    result = run_suite(model, split, suite.for_subject("keep"), EPS, progress=False)
    square = next(c for c in result.checks if c.name == "aa: no Square-versus-white-box gap")
    assert square.passed and len(result.robust["aa"]) == 30 and len(result.worst) == 60
