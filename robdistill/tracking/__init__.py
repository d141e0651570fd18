"""MLflow tracking: runs and their lifecycle (``store``), the one schema of run names, run tags,
metric and artifact names (``schema``), the teacher model registry (``model_registry``), teachers
and students as MLflow logged models (``logged_models``), the runs view shared on every experiment
(``views``), searching stored runs and saying which model each is about (``search``), and the one
reader of logged evaluations (``results``). Only the CLI and the experiments use it; library functions take any
:class:`robdistill.core.tracker.Tracker`.

``MlflowTracker`` loads its module (and torch) on first use, so that importing
``robdistill.tracking.schema`` stays cheap."""
from __future__ import annotations

from typing import TYPE_CHECKING

from robdistill.core.lazy import lazy_exports

# public name -> the module that defines it (imported on first access)
_PUBLIC: dict[str, str] = {"MlflowTracker": "robdistill.tracking.store"}

__all__ = ["MlflowTracker"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:  # for type checkers and IDEs: the same name, eagerly
    from robdistill.tracking.store import MlflowTracker  # noqa: F401
