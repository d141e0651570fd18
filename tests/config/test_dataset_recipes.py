"""Per-dataset recipes: ``[dataset.<name>]`` tables override the top-level fields for that dataset
only (digits and Fashion-MNIST keep today's recipes and cache keys), bad tables are one-line
errors, and a CIFAR-10-resolved recipe (SGD, step schedule, crop-flip) trains end to end."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from robdistill import catalog
from robdistill.config.recipes import (StudentRecipe, TeacherRecipe, available, key_fields, parse_recipe,
                                       to_dict)
from robdistill.core.errors import UserError
from robdistill.data.datasets import DATASETS, load_dataset
from robdistill.train.augment import AUGMENTATIONS
from robdistill.train.distillation import resolved_student
from robdistill.train.loop import OPTIMIZERS, SCHEDULES
from robdistill.train.teacher import resolved_teacher, train_teacher_model

REPO = Path(__file__).resolve().parents[2]
PAPER_DATASETS = ("cifar10", "svhn", "mnist")

# ----------------------------------------------------------------------------------------------
# every bundled recipe's fields as they were before per-dataset tables (description aside): what a
# recipe resolved for digits or Fashion-MNIST must still be, field for field

_TRAINING = dict(model="small-cnn", epochs=20, batch_size=64, optimizer="adam", lr=1e-3, weight_decay=0.0,
                 lr_schedule="constant", train_subset=0, precision="fp32")
_TEACHER = dict(_TRAINING, objective="standard", eps=None, attack_steps=10, attack_step_size=None,
                pairing_weight=0.5, alpha=1.0, beta=6.0)
_STUDENT = dict(_TRAINING, temperature=4.0, hard_label_weight=0.0, augment="none", method="clean",
                adv_weight=1.0, eps=None, attack_steps=10, attack_step_size=None)
TODAY: dict[str, dict[str, dict[str, object]]] = {
    "teacher": {
        "aalp": dict(_TEACHER, name="aalp", objective="aalp"),
        "aalp-gd": dict(_TEACHER, name="aalp-gd", objective="aalp-gd"),
        "aalp-sw": dict(_TEACHER, name="aalp-sw", objective="aalp-sw"),
        "alp": dict(_TEACHER, name="alp", objective="alp"),
        "at": dict(_TEACHER, name="at", objective="at"),
        "clp": dict(_TEACHER, name="clp", objective="clp"),
        "lsq": dict(_TEACHER, name="lsq", objective="lsq", pairing_weight=0.05),
        "mpgd": dict(_TEACHER, name="mpgd", objective="mpgd"),
        "standard": dict(_TEACHER, name="standard"),
        "trades": dict(_TEACHER, name="trades", objective="trades"),
    },
    "student": {
        "ard": dict(_STUDENT, name="ard", method="ard", adv_weight=0.9),
        "default": dict(_STUDENT, name="default"),
        "rslad": dict(_STUDENT, name="rslad", method="rslad", temperature=1.0, adv_weight=0.8333333333333334),
    },
}
NEW_FIELDS = {"teacher": {"augment": "none"}, "student": {}}  # fields added since, at their reference value


# The Fashion-MNIST study's recipes (issue 28): the compact CNN on the whole training split; the
# other recipes keep their top-level fields on Fashion-MNIST
FASHION_MNIST_RECIPES = {"teacher": ("standard", "at", "alp", "aalp", "trades"), "student": ("default",)}


@pytest.mark.parametrize("dataset", ["digits", "fashion-mnist", None])
@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_small_datasets_keep_todays_recipes(kind: str, dataset: str | None) -> None:
    assert set(available(kind)) == set(TODAY[kind]), "a bundled recipe was added: give it a row in TODAY"
    cls = {"teacher": TeacherRecipe, "student": StudentRecipe}[kind]
    for name, fields in TODAY[kind].items():
        if dataset == "fashion-mnist" and name in FASHION_MNIST_RECIPES[kind]:
            continue
        recipe = catalog.checked_recipe(kind, name, dataset=dataset)
        expected = cls(**fields, **NEW_FIELDS[kind], description=recipe.description)
        assert recipe == expected, name
        assert {k: v for k, v in to_dict(recipe).items() if k in fields} == fields


@pytest.mark.parametrize("dataset", ["digits", "fashion-mnist"])
def test_small_dataset_cache_keys_hash_no_new_field(dataset: str) -> None:
    """A teacher's ``augment`` at ``none`` stays out of its key (the digits teachers cached before it
    existed are still found); a student's ``augment`` always was in its key and stays there."""
    info = DATASETS.get(dataset)
    for name in TODAY["teacher"]:
        hashed = key_fields(resolved_teacher(catalog.checked_recipe("teacher", name, dataset=dataset), info))
        assert "augment" not in hashed and set(TODAY["teacher"][name]) - {"precision"} <= set(hashed)
    hashed = key_fields(resolved_student(catalog.checked_recipe("student", "default", dataset=dataset), "keep", info))
    assert hashed["augment"] == "none"
    crop = catalog.checked_recipe("teacher", "at", ["augment=crop"], dataset=dataset)
    assert key_fields(resolved_teacher(crop, info))["augment"] == "crop"


# ----------------------------------------------------------------------------------------------
# resolution per dataset


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_fashion_mnist_study_recipes_use_the_compact_cnn_on_the_whole_split(kind: str) -> None:
    for name in FASHION_MNIST_RECIPES[kind]:
        recipe = catalog.checked_recipe(kind, name, dataset="fashion-mnist")
        top = catalog.checked_recipe(kind, name)
        assert (recipe.model, recipe.batch_size, recipe.optimizer, recipe.lr, recipe.train_subset) == \
            ("compact-cnn", 128, "adam", 1e-3, 0), name
        assert recipe.epochs != top.epochs  # chosen from the validation curves, not the digits recipe's 20
        if kind == "teacher":  # the objective's own fields and the training attack are the top-level ones
            assert (recipe.objective, recipe.attack_steps, recipe.eps, recipe.pairing_weight, recipe.alpha,
                    recipe.beta) == (top.objective, top.attack_steps, top.eps, top.pairing_weight, top.alpha, top.beta)


@pytest.mark.parametrize("kind", ["teacher", "student"])
def test_every_bundled_recipe_resolves_for_every_dataset(kind: str) -> None:
    for name in available(kind):
        for dataset in DATASETS.names():
            assert catalog.checked_recipe(kind, name, dataset=dataset).name == name
        datasets = PAPER_DATASETS + (("fashion-mnist",) if name in FASHION_MNIST_RECIPES[kind] else ())
        assert f"(per-dataset: {', '.join(datasets)})" in catalog.catalog()[f"{kind}s"][name]


def test_cifar10_teachers_are_paper_scale() -> None:
    for name in TODAY["teacher"]:
        recipe = parse_recipe("teacher", name, dataset="cifar10")
        assert (recipe.model, recipe.epochs, recipe.batch_size, recipe.optimizer, recipe.lr, recipe.weight_decay,
                recipe.lr_schedule, recipe.augment) == ("resnet18", 100, 128, "sgd-momentum", 0.1, 5e-4,
                                                        "step-75-90", "crop-flip"), name
        assert recipe.eps is None and recipe.attack_steps == 10  # PGD-10 at the dataset's 8/255, step 2/255
        # the objective's own fields are the top-level ones
        top = parse_recipe("teacher", name)
        assert (recipe.objective, recipe.pairing_weight, recipe.alpha, recipe.beta) == \
            (top.objective, top.pairing_weight, top.alpha, top.beta)


def test_svhn_and_mnist_teachers() -> None:
    svhn = parse_recipe("teacher", "at", dataset="svhn")
    assert (svhn.model, svhn.optimizer, svhn.lr, svhn.augment, svhn.eps) == ("resnet18", "sgd-momentum", 0.01,
                                                                             "none", None)
    mnist = parse_recipe("teacher", "at", dataset="mnist")
    assert (mnist.model, mnist.optimizer, mnist.lr, mnist.batch_size, mnist.epochs, mnist.attack_steps) == \
        ("lenet", "adam", 1e-4, 50, 93, 40)
    assert parse_recipe("teacher", "standard", dataset="mnist").attack_steps == 10  # no training attack


def test_cifar10_students() -> None:
    default = parse_recipe("student", "default", dataset="cifar10")
    assert (default.model, default.optimizer, default.lr, default.epochs, default.lr_schedule, default.augment,
            default.temperature) == ("resnet18", "sgd-momentum", 0.1, 200, "step-50-75", "crop-flip", 4.0)
    ard = parse_recipe("student", "ard", dataset="cifar10")
    assert (ard.temperature, ard.adv_weight, ard.weight_decay) == (30.0, 1.0, 2e-4)
    rslad = parse_recipe("student", "rslad", dataset="cifar10")
    assert (rslad.epochs, rslad.lr_schedule, rslad.temperature) == (300, "step-rslad", 1.0)


def test_set_overrides_win_over_the_dataset_table() -> None:
    recipe = parse_recipe("teacher", "at", ["epochs=2", "lr=0.05"], dataset="cifar10")
    assert (recipe.epochs, recipe.lr, recipe.model, recipe.optimizer) == (2, 0.05, "resnet18", "sgd-momentum")


def test_a_recipe_without_tables_ignores_the_dataset(tmp_path: Path) -> None:
    path = tmp_path / "plain.toml"
    path.write_text('objective = "at"\nepochs = 3\n')
    assert parse_recipe("teacher", str(path), dataset="cifar10") == parse_recipe("teacher", str(path))


def test_tables_of_a_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('objective = "at"\nepochs = 3\n[dataset.cifar10]\nepochs = 7\nmodel = "resnet18"\n'
                    '[dataset.svhn]\nlr = 0.01\n')
    assert parse_recipe("teacher", str(path), dataset="cifar10").epochs == 7
    assert parse_recipe("teacher", str(path), dataset="svhn").lr == 0.01
    assert parse_recipe("teacher", str(path), dataset="svhn").epochs == 3
    assert parse_recipe("teacher", str(path), dataset="digits") == parse_recipe("teacher", str(path))


@pytest.mark.parametrize("table, message", [
    ("[dataset.cifar10]\ncolour = 1\n", r"unknown field 'colour' in \[dataset.cifar10\] of teacher recipe .*mine.toml"),
    ("[dataset.svhn]\nepochs = \"many\"\n", r"field 'epochs' in \[dataset.svhn\] of teacher recipe .* must be int"),
    ("[dataset.cifar10]\ndescription = \"x\"\n", r"field 'description' in \[dataset.cifar10\] .* is top-level only"),
    ("[dataset.cifar-10]\nepochs = 2\n", r"\[dataset.cifar-10\] of teacher recipe .*: unknown dataset 'cifar-10'"),
    ("dataset = 3\n", r"'dataset' in teacher recipe .* must hold tables \[dataset.<name>\]"),
    ("[dataset]\ncifar10 = 3\n", r"'dataset' in teacher recipe .* must hold tables"),
    ("[dataset.cifar10]\nmodel = \"nope\"\n", r"teacher recipe .*mine.toml for cifar10: unknown model 'nope'"),
    ("[dataset.cifar10]\nepochs = 0\n", r"teacher recipe .*mine.toml for cifar10: epochs must be >= 1"),
])
def test_bad_dataset_tables_are_one_line_errors(tmp_path: Path, table: str, message: str) -> None:
    """Every table's field names and types are checked whichever dataset runs (a typo in
    [dataset.svhn] fails a digits run too); its ranges and registry names where it is used."""
    path = tmp_path / "mine.toml"
    path.write_text('objective = "at"\n' + table)
    with pytest.raises(UserError, match=message) as info:
        catalog.checked_recipe("teacher", str(path), dataset="cifar10")
    assert "\n" not in str(info.value)


def test_tables_are_checked_for_every_dataset(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('objective = "at"\n[dataset.svhn]\ncolour = 1\n')
    with pytest.raises(UserError, match=r"unknown field 'colour' in \[dataset.svhn\]"):
        catalog.checked_recipe("teacher", str(path), dataset="digits")


# ----------------------------------------------------------------------------------------------
# optimiser and schedules


def test_sgd_momentum_is_plain_momentum() -> None:
    recipe = parse_recipe("teacher", "at", dataset="cifar10")
    optimizer = OPTIMIZERS.get("sgd-momentum")([torch.nn.Parameter(torch.zeros(2))], recipe)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["lr"], group["weight_decay"]) == (0.9, False, 0.1, 5e-4)


@pytest.mark.parametrize("name, total, bounds", [
    ("step-75-90", 1000, (750, 900)),
    ("step-75-90", 100 * 352, (75 * 352, 90 * 352)),  # TRADES: epochs 75 and 90 of 100 (exact, no float slack)
    ("step-50-75", 200 * 391, (100 * 391, 150 * 391)),  # ARD, Rice et al.: epochs 100 and 150 of 200
    ("step-rslad", 300 * 391, (215 * 391, 260 * 391, 285 * 391)),  # RSLAD: 215, 260, 285 of 300
    ("step-75-90", 7, (6, 7)),  # a short run still decays: ceil(5.25), ceil(6.3)
])
def test_step_schedules(name: str, total: int, bounds: tuple[int, ...]) -> None:
    factor = SCHEDULES.get(name)(total)
    assert factor(0) == 1.0
    for i, bound in enumerate(bounds):  # x0.1 from each bound on, not a step earlier
        assert factor(bound - 1) == pytest.approx(0.1 ** i)
        assert factor(bound) == pytest.approx(0.1 ** (i + 1))


# ----------------------------------------------------------------------------------------------
# teacher augmentation


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def test_teacher_augment_none_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """``augment = "none"`` (the default) creates no generator and changes no weight; another
    augmentation changes the run."""
    import robdistill as rd
    import robdistill.train.teacher as teacher_module

    purposes: list[str] = []
    real_stream = teacher_module.rank_stream
    monkeypatch.setattr(teacher_module, "rank_stream",
                        lambda seed, stage, purpose: purposes.append(purpose) or real_stream(seed, stage, purpose))
    data = rd.load_dataset("digits")
    default = rd.train_teacher("at", data, epochs=1, train_subset=128)
    explicit = rd.train_teacher("at", data, epochs=1, train_subset=128, augment="none")
    assert "augment" not in purposes
    for a, b in zip(_weights(default), _weights(explicit)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    shifted = rd.train_teacher("at", data, epochs=1, train_subset=128, augment="shift1")
    assert "augment" in purposes
    assert any(not torch.equal(a, b) for a, b in zip(_weights(default), _weights(shifted)))


def test_teacher_augmentation_resumes_exactly(tmp_path: Path) -> None:
    """The augmentation generator is saved with the training state: a resumed run ends where an
    uninterrupted one does."""
    from robdistill.core.state import TrainingState
    from robdistill.core.tracker import NullTracker

    class Stop(Exception):
        pass

    class StopAfterFirstEpoch(NullTracker):
        def log_metrics(self, values, step=None):
            if step == 2:
                raise Stop

    splits = load_dataset("digits")
    recipe = parse_recipe("teacher", "at", ["epochs=2", "train_subset=96", "batch_size=32", "attack_steps=4",
                                            "augment=shift1"])
    reference = train_teacher_model(recipe, splits, 0, "cpu", progress=False)
    state = TrainingState(tmp_path / "t.state.pt")
    with pytest.raises(Stop):
        train_teacher_model(recipe, splits, 0, "cpu", progress=False, tracker=StopAfterFirstEpoch(), state=state)
    assert "augment" in torch.load(state.path, weights_only=True)["generators"]
    resumed = train_teacher_model(recipe, splits, 0, "cpu", progress=False, state=TrainingState(state.path),
                                  resume=True)
    for a, b in zip(_weights(reference), _weights(resumed)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# end to end on CIFAR-10-format files


def _write_cifar():
    """tests/data/test_data.py's writer of tiny CIFAR-10 pickles in the real format."""
    spec = importlib.util.spec_from_file_location("_cifar_files", REPO / "tests" / "data" / "test_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.write_cifar


def test_cifar10_resolved_teacher_trains_end_to_end(tmp_path: Path, single_thread) -> None:
    """The plan of ``robdistill run --dataset cifar10 --teacher at`` (made smaller: small CNN, two
    epochs, PGD-4) trains with the resolved SGD, step schedule and crop-flip augmentation."""
    from robdistill.config.settings import Settings
    from robdistill.config.overrides import Overrides
    from robdistill.experiments.pipeline import make_plan

    _write_cifar()(tmp_path, per_batch=8, n_test=4)  # 40 training images: 36 train, 4 validation
    settings = Settings(dataset="cifar10", data_root=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    plan = make_plan(settings, teacher="at", overrides=Overrides.parse(
        ["model=small-cnn", "epochs=2", "batch_size=16", "attack_steps=4"], bare="teacher"))
    recipe = plan.teacher
    assert (recipe.optimizer, recipe.lr_schedule, recipe.augment, recipe.lr) == \
        ("sgd-momentum", "step-75-90", "crop-flip", 0.1)

    calls = {"augment": 0, "optimizer": []}
    crop_flip, sgd = AUGMENTATIONS.get("crop-flip"), OPTIMIZERS.get("sgd-momentum")

    def counting_crop_flip(x, generator):
        calls["augment"] += 1
        out = crop_flip(x, generator)
        assert out.shape == x.shape and not torch.equal(out, x)
        return out

    def recording_sgd(params, recipe):
        calls["optimizer"].append(sgd(params, recipe))
        return calls["optimizer"][-1]

    with AUGMENTATIONS.override("crop-flip", counting_crop_flip), OPTIMIZERS.override("sgd-momentum", recording_sgd):
        model = train_teacher_model(recipe, plan.splits, 0, "cpu", progress=False)
    history = model.history  # type: ignore[attr-defined]
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(m["train/loss"])) for m in history)
    assert calls["augment"] == 2 * 3  # every batch of both epochs (36 images, batch 16)
    assert calls["optimizer"][0].param_groups[0]["nesterov"] is False
    # 6 steps: x0.1 from step ceil(0.75 * 6) = 5, again from ceil(0.9 * 6) = 6 (the end of epoch 2)
    assert history[0]["train/lr"] == pytest.approx(0.1)
    assert history[1]["train/lr"] == pytest.approx(0.001)
    assert model(plan.splits.test.x).shape == (4, 10)
