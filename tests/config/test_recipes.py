"""Recipes: every shipped recipe loads and validates; overrides, unknown fields and bad values."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robdistill import catalog
from robdistill.core.errors import UserError
from robdistill.config.recipes import (StudentRecipe, SuiteRecipe, TeacherRecipe, available, fingerprint,
                                       parse_recipe, parse_override)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", ["teacher", "student", "suite"])
def test_every_shipped_recipe_loads(kind: str) -> None:
    names = available(kind)
    assert names, f"no {kind} recipes found"
    for name in names:
        recipe = parse_recipe(kind, name)
        assert recipe.name == name


def test_every_objective_has_a_recipe() -> None:
    from robdistill.train.objectives import OBJECTIVES

    teachers = available("teacher")
    assert set(OBJECTIVES.names()) == {"standard", "at", "mpgd", "alp", "clp", "lsq", "aalp-gd", "aalp-sw",
                                       "aalp", "trades"}
    for name in OBJECTIVES.names():
        assert name in teachers
        assert parse_recipe("teacher", name).objective == name


def test_overrides_are_typed() -> None:
    recipe = parse_recipe("teacher", "alp", ["epochs=2", "lr=1e-4", "model=lenet", "eps=0.2"])
    assert isinstance(recipe, TeacherRecipe)
    assert (recipe.epochs, recipe.lr, recipe.model, recipe.eps) == (2, 1e-4, "lenet", 0.2)
    assert isinstance(recipe.lr, float)
    # an int where a float is expected is accepted and converted
    assert parse_recipe("student", "default", ["temperature=2"]).temperature == 2.0


def test_parse_override() -> None:
    assert parse_override("epochs=3") == ("epochs", 3)
    assert parse_override('model="lenet"') == ("model", "lenet")
    assert parse_override("model=lenet") == ("model", "lenet")
    with pytest.raises(UserError, match="key=value"):
        parse_override("epochs")


@pytest.mark.parametrize("override, message", [
    ("epochs=0", "epochs must be >= 1"),
    ("epochs=two", "must be int"),
    ("eps=1.5", r"eps must lie in \[0, 1\]"),
    ("eps=-0.1", r"eps must lie in \[0, 1\]"),
    ("attack_steps=0", "attack_steps must be >= 1"),
    ("objective=nope", "unknown objective 'nope'"),
    ("model=nope", "unknown model 'nope'"),
    ("optimizer=nope", "unknown optimizer 'nope'"),
    ("colour=1", "unknown field 'colour'"),
    ("train_subset=-1", r"train_subset must be >= 0"),
])
def test_bad_teacher_overrides(override: str, message: str) -> None:
    """Fields, types and ranges are the config layer's to check, registry names the catalog's."""
    with pytest.raises(UserError, match=message) as info:
        catalog.checked_recipe("teacher", "alp", [override])
    assert "\n" not in str(info.value)


def test_unknown_recipe_lists_choices() -> None:
    with pytest.raises(UserError, match="unknown teacher 'nope'; choose one of: .*alp"):
        parse_recipe("teacher", "nope")


def test_malformed_and_unreadable_recipes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(UserError, match="not valid TOML"):
        parse_recipe("teacher", str(bad))
    with pytest.raises(UserError, match="does not exist"):
        parse_recipe("teacher", str(tmp_path / "missing.toml"))
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError):
        parse_recipe("teacher", str(binary))


def test_recipe_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('objective = "at"\nepochs = 3\n')
    recipe = parse_recipe("teacher", str(path))
    assert (recipe.name, recipe.objective, recipe.epochs) == ("mine", "at", 3)


def test_suite_validation(tmp_path: Path) -> None:
    path = tmp_path / "suite.toml"
    path.write_text('[[attack]]\nname = "pgd"\n[[attack]]\nname = "pgd"\n')
    with pytest.raises(UserError, match="appears twice"):
        parse_recipe("suite", str(path))
    path.write_text('[[attack]]\nname = "laser"\n')
    with pytest.raises(UserError, match="unknown attack 'laser'"):
        catalog.checked_recipe("suite", str(path))
    suite = parse_recipe("suite", "fast")
    assert isinstance(suite, SuiteRecipe)
    assert [a["name"] for a in suite.attack] == ["fgsm", "pgd", "cw", "autoattack"]


def test_student_recipe_validation() -> None:
    assert isinstance(parse_recipe("student", "default"), StudentRecipe)
    with pytest.raises(UserError, match="temperature must be > 0"):
        parse_recipe("student", "default", ["temperature=0"])


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = fingerprint({"x": 1, "y": [1, 2]})
    assert a == fingerprint({"y": [1, 2], "x": 1})
    assert a != fingerprint({"x": 2, "y": [1, 2]})


def test_train_subset_takes_the_first_examples_of_the_shuffled_split() -> None:
    from robdistill.data.datasets import Split

    train = Split(torch.arange(10.0)[:, None], torch.arange(10))
    assert parse_recipe("teacher", "at").training_split(train) is train  # 0 = all
    head = parse_recipe("teacher", "at", ["train_subset=4"]).training_split(train)
    assert head.y.tolist() == [0, 1, 2, 3]
    assert parse_recipe("teacher", "at", ["train_subset=40"]).training_split(train) is train


def test_a_validated_recipe_hands_out_objects_for_its_names() -> None:
    """Recipes store names (TOML, parameters, cache keys) and hand out the objects they stand for."""
    import robdistill as rd
    from robdistill.config.recipes import to_dict
    from robdistill.core.precision import PRECISIONS
    from robdistill.core.threat import NORMS

    teacher = rd.load_recipe("teacher", "at", precision="bf16", threat_model="l2")
    assert teacher.precision_mode is PRECISIONS.get("bf16") and teacher.precision_mode.reduced
    assert teacher.norm is NORMS.get("l2")
    suite = rd.load_recipe("suite", "fast")
    assert suite.precision_mode is PRECISIONS.get("fp32") and suite.norm is NORMS.get("linf")
    assert "precision_mode" not in to_dict(suite) and "norm" not in to_dict(teacher)  # not fields: nothing logged or hashed
