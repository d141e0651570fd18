"""Everything the CLI can name, with one line of help each (``robdistill list``)."""
from __future__ import annotations

import tomllib

from robdistill.attacks.base import ATTACKS
from robdistill.train.augment import AUGMENTATIONS
from robdistill.data.datasets import DATASETS
from robdistill.eval.runner import STEP_ATTACKS
from robdistill.models.zoo import MODELS
from robdistill.train.objectives import OBJECTIVES
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.config.recipes import available


def _recipe_descriptions(kind: str) -> dict[str, str]:
    out = {}
    for name, path in available(kind).items():
        try:
            out[name] = str(tomllib.loads(path.read_text()).get("description", ""))
        except (OSError, tomllib.TOMLDecodeError):
            out[name] = "(unreadable recipe)"
    return out


def _suite_descriptions() -> dict[str, str]:
    """Each suite's description and which step size its PGD-type attacks use (SPEC section 1)."""
    out = {}
    for name, text in _recipe_descriptions("suite").items():
        try:
            entries = tomllib.loads(available("suite")[name].read_text()).get("attack", [])
        except (OSError, tomllib.TOMLDecodeError):
            out[name] = text
            continue
        stepped = [e for e in entries if e.get("name") in STEP_ATTACKS]
        own = [e for e in stepped if e.get("step_size") is not None]
        if not stepped:
            out[name] = text
        elif len(own) == len(stepped):
            out[name] = f"{text} [step sizes: the suite's]"
        else:
            out[name] = f"{text} [step size: the dataset's, scaled to eps{' where unset' if own else ''}]"
    return out


def _dataset_descriptions() -> dict[str, str]:
    """Each dataset's description with its default attack step (SPEC section 1)."""
    return {name: f"{text}, attack step {DATASETS.get(name).step_size:.4g}"
            for name, text in DATASETS.describe().items()}


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
    }
