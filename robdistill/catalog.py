"""Everything the CLI can name, with one line of help each (``robdistill list``)."""
from __future__ import annotations

import tomllib

from .attacks import ATTACKS
from .augment import AUGMENTATIONS
from .data import DATASETS
from .models import MODELS
from .objectives import OBJECTIVES
from .perturbations import PERTURBATIONS
from .recipes import available


def _recipe_descriptions(kind: str) -> dict[str, str]:
    out = {}
    for name, path in available(kind).items():
        try:
            out[name] = str(tomllib.loads(path.read_text()).get("description", ""))
        except (OSError, tomllib.TOMLDecodeError):
            out[name] = "(unreadable recipe)"
    return out


def catalog() -> dict[str, dict[str, str]]:
    models = MODELS.describe()
    models["timm:<architecture>"] = "any timm model by name, e.g. timm:resnet18 (random init)"
    return {
        "datasets": DATASETS.describe(),
        "models": models,
        "teachers": _recipe_descriptions("teacher"),
        "students": _recipe_descriptions("student"),
        "perturbations": PERTURBATIONS.describe(),
        "attacks": ATTACKS.describe(),
        "suites": _recipe_descriptions("suite"),
        "objectives": OBJECTIVES.describe(),
        "augmentations": AUGMENTATIONS.describe(),
    }
