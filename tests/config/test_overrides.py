"""``--set`` parsed once at the edge (issue 30 item 1): typed values per stage, the texts kept for
names, and the same recipe as the texts gave when they were parsed deep in the loader."""
from __future__ import annotations

import pickle

import pytest

from robdistill import catalog
from robdistill.config.overrides import Overrides
from robdistill.core.errors import UserError


def test_parse_types_values_per_stage_and_keeps_the_texts() -> None:
    texts = ["teacher.epochs=2", "student.temperature=2.5", "teacher.model=lenet", 'suite.attack_x="y"',
             "teacher.epochs=3"]
    o = Overrides.parse(texts)
    assert o.stage("teacher") == {"epochs": 3, "model": "lenet"}  # the last one given wins, as in the loader
    assert o.stage("student") == {"temperature": 2.5} and o.stage("suite") == {"attack_x": "y"}
    assert list(o) == texts and len(o) == 5  # run names, logged parameters and sweep names use the texts
    assert o.without("teacher").texts == ("student.temperature=2.5", 'suite.attack_x="y"')
    assert o.only("suite").stage("teacher") == {} and o.first_text("teacher") == "teacher.epochs=2"
    assert pickle.loads(pickle.dumps(o)) == o  # a local pool's and Slurm's tasks receive it pickled


def test_bare_fields_belong_to_the_one_recipe() -> None:
    assert Overrides.parse(["epochs=1", "precision=bf16"], ("teacher",), bare="teacher").stage("teacher") == \
        {"epochs": 1, "precision": "bf16"}


@pytest.mark.parametrize("text", ["epochs=2", "teacher.epochs", "trainer.epochs=2", "teacher."])
def test_a_text_without_its_stage_is_one_line(text: str) -> None:
    with pytest.raises(UserError, match="prefix the field with one of teacher., student., suite."):
        Overrides.parse([text])


def test_typed_values_give_the_recipe_the_texts_gave() -> None:
    texts = ["epochs=2", "lr=1e-3", "model=lenet", "augment=none"]
    from_texts = catalog.checked_recipe("teacher", "alp", texts, dataset="digits")
    typed = Overrides.parse([f"teacher.{t}" for t in texts]).stage("teacher")
    assert catalog.checked_recipe("teacher", "alp", typed, dataset="digits") == from_texts
