"""Everything a recipe or a command can name: every registry of every layer, the recipe check
that holds a recipe's names against them, and one line of help per entry (``robdistill list``).

The config layer (``robdistill.config``) knows a recipe's fields, types and ranges and which fields
name a registry entry; this module, above every implementation, knows the registries."""
from __future__ import annotations

import tomllib
from typing import Any, Iterable, Mapping

from robdistill.attacks.base import ATTACKS
from robdistill.config import recipes
from robdistill.config.recipes import available
from robdistill.core.precision import PRECISIONS
from robdistill.core.registry import Registry
from robdistill.core.threat import NORMS
from robdistill.data.datasets import DATASETS
from robdistill.models.zoo import MODELS
from robdistill.train.augment import AUGMENTATIONS
from robdistill.train.distillation import STUDENT_METHODS
from robdistill.train.loop import OPTIMIZERS, SCHEDULES
from robdistill.train.objectives import OBJECTIVES
from robdistill.train.perturbations import PERTURBATIONS

REGISTRIES: dict[str, Registry[Any]] = {
    "model": MODELS, "optimizer": OPTIMIZERS, "lr_schedule": SCHEDULES, "objective": OBJECTIVES,
    "augment": AUGMENTATIONS, "student_method": STUDENT_METHODS, "attack": ATTACKS,
    "perturbation": PERTURBATIONS, "dataset": DATASETS, "precision": PRECISIONS, "threat_model": NORMS,
}


def check_names(recipe: Any) -> None:
    """Every field of ``recipe`` that names a registry entry names a registered one (a ``timm:``
    model is timm's to check when the model is built)."""
    for kind, name in recipe.named_entries():
        if kind == "model" and name.startswith("timm:"):
            continue
        REGISTRIES[kind].get(name)


def checked_recipe(kind: str, name_or_path: str, overrides: Mapping[str, Any] | Iterable[str] = (),
                   dataset: str | None = None) -> Any:
    """A named recipe (or a ``.toml`` path) resolved for ``dataset`` (its ``[dataset.<name>]`` table,
    if any) with overrides (typed ``{field: value}`` or ``key=value`` texts), its fields, ranges,
    registry names and table dataset names checked (:func:`robdistill.config.recipes.parse_recipe`
    plus :func:`check_names`): what :func:`robdistill.load_recipe` does with a name or a path."""
    return recipes.parse_recipe(kind, name_or_path, overrides, check=check_names, dataset=dataset,
                                check_dataset=DATASETS.get)


def override_recipe(recipe: Any, **values: Any) -> Any:
    """``recipe`` with fields replaced by keyword (``epochs=2``), checked like a loaded recipe."""
    return recipes.override_recipe(recipe, values, check=check_names)


def _recipe_descriptions(kind: str) -> dict[str, str]:
    """Each recipe's description, and the datasets it has a ``[dataset.<name>]`` table for."""
    out = {}
    for name, path in available(kind).items():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            out[name] = "(unreadable recipe)"
            continue
        tables = data.get(recipes.DATASET_TABLES)
        datasets = f" (per-dataset: {', '.join(tables)})" if isinstance(tables, dict) and tables else ""
        out[name] = str(data.get("description", "")) + datasets
    return out


def _takes_step_size(name: Any) -> bool:
    """Whether ``name`` (from a suite file, so anything) names a registered attack that takes a step size."""
    return isinstance(name, str) and name in ATTACKS and ATTACKS.get(name).takes_step_size


def _suite_descriptions() -> dict[str, str]:
    """Each suite's description and which step size its PGD-type attacks use (METHODS section 1)."""
    out = {}
    for name, text in _recipe_descriptions("suite").items():
        try:
            entries = tomllib.loads(available("suite")[name].read_text()).get("attack", [])
        except (OSError, tomllib.TOMLDecodeError):
            out[name] = text
            continue
        stepped = [e for e in entries if _takes_step_size(e.get("name"))]
        own = [e for e in stepped if e.get("step_size") is not None]
        if not stepped:
            out[name] = text
        elif len(own) == len(stepped):
            out[name] = f"{text} [step sizes: the suite's]"
        else:
            out[name] = f"{text} [step size: the dataset's, scaled to eps{' where unset' if own else ''}]"
    return out


def _dataset_descriptions() -> dict[str, str]:
    """Each dataset's description with its default attack step (METHODS section 1)."""
    return {name: f"{text}, attack step {DATASETS.get(name).step_size:.4g} (L2: {DATASETS.get(name).l2_step_size:.4g})"
            for name, text in DATASETS.describe().items()}


def _source_descriptions() -> dict[str, str]:
    """Where a teacher (or an evaluated model) can come from (robdistill.sources)."""
    from robdistill.sources.registry import SOURCES

    return SOURCES.describe()


def catalog() -> dict[str, dict[str, str]]:
    models = MODELS.describe()
    models["timm:<architecture>"] = "any timm model by name, e.g. timm:resnet18 (random init)"
    return {
        "datasets": _dataset_descriptions(),
        "models": models,
        "teachers": _recipe_descriptions("teacher"),
        "students": _recipe_descriptions("student"),
        "perturbations": PERTURBATIONS.describe(),
        "attacks": ATTACKS.describe(),
        "suites": _suite_descriptions(),
        "objectives": OBJECTIVES.describe(),
        "augmentations": AUGMENTATIONS.describe(),
        "precisions": PRECISIONS.describe(),
        "threat-models": NORMS.describe(),
        "sources": _source_descriptions(),
    }
