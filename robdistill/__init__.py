"""robdistill: how much adversarial robustness does a student inherit when it is distilled, on
clean inputs only, from an adversarially trained teacher -- and which logits carry it?

The public API (``import robdistill as rd``; see ``robdistill.api`` and the README)::

    data = rd.load_dataset("digits")
    teacher = rd.train_teacher("alp", data, seed=0)          # an nn.Module; nothing written
    student = rd.distill(teacher, data, perturb="nonmax-shuffle", seed=0)
    result = rd.evaluate(student, data, suite="fast")         # table, per-sample flags, checks
    teacher = rd.load_teacher("robustbench:Wong2020Fast", rd.load_dataset("cifar10"))  # any source
    x_adv = rd.attacks.PGD(eps=0.1, steps=20)(student, x, y)

Importing the package is cheap: torch, mlflow and the sub-packages load on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from robdistill.core.lazy import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first access)
_PUBLIC: dict[str, str] = {
    "load_dataset": "robdistill.api", "load_recipe": "robdistill.api", "train_teacher": "robdistill.api",
    "distill": "robdistill.api", "evaluate": "robdistill.api", "load_teacher": "robdistill.api",
    "Splits": "robdistill.data.datasets", "Split": "robdistill.data.datasets",
    "DatasetInfo": "robdistill.data.datasets",
    "TeacherRecipe": "robdistill.config.recipes", "StudentRecipe": "robdistill.config.recipes",
    "SuiteRecipe": "robdistill.config.recipes", "Settings": "robdistill.config.settings",
    "EvaluationResult": "robdistill.eval.results", "SanityCheck": "robdistill.eval.results",
    "build_model": "robdistill.models.zoo", "Classifier": "robdistill.models.zoo",
    "load_checkpoint": "robdistill.models.checkpoints", "save_checkpoint": "robdistill.models.checkpoints",
    "Tracker": "robdistill.core.tracker", "MlflowTracker": "robdistill.tracking.store",
    "UserError": "robdistill.core.errors",
}
# sub-packages reachable as attributes (``rd.attacks.PGD``)
_SUBPACKAGES = ("attacks", "analysis", "config", "core", "data", "eval", "experiments", "models", "sources",
                "tracking", "train", "catalog", "report")

__all__ = ["__version__", *_PUBLIC, *_SUBPACKAGES]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC, _SUBPACKAGES)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from robdistill import attacks, catalog, sources  # noqa: F401
    from robdistill.api import distill, evaluate, load_dataset, load_recipe, load_teacher, train_teacher  # noqa: F401
    from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe  # noqa: F401
    from robdistill.config.settings import Settings  # noqa: F401
    from robdistill.core.errors import UserError  # noqa: F401
    from robdistill.core.tracker import Tracker  # noqa: F401
    from robdistill.data.datasets import DatasetInfo, Split, Splits  # noqa: F401
    from robdistill.eval.results import EvaluationResult, SanityCheck  # noqa: F401
    from robdistill.models.checkpoints import load_checkpoint, save_checkpoint  # noqa: F401
    from robdistill.models.zoo import Classifier, build_model  # noqa: F401
    from robdistill.tracking.store import MlflowTracker  # noqa: F401
