"""Evaluation (METHODS section 4): run an attack suite on a model and check the evaluation's sanity.

- ``runner``: :func:`run_suite` (clean accuracy, every attack of a suite, the per-sample worst case)
  and :func:`eps_sweep` (the whole suite at several radii), :func:`suite_attacks`;
- ``results``: :class:`EvaluationResult` (per-sample flags, 95% Wilson intervals, sanity checks),
  its JSON form (:func:`result_from_json`) and :func:`merge_shards` for a split evaluation;
- ``checks``: the sanity checks (:class:`SanityCheck`): attack strength order, the
  Square-versus-white-box gap, a PGD's reach, the perturbation ball and box;
- ``tables``: plain-text tables of results.

The names below load their module (and torch) on first use, so that importing
``robdistill.eval.tables`` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from robdistill.core.lazy import lazy_exports

# public name -> the module that defines it (imported on first access)
_PUBLIC: dict[str, str] = {
    "run_suite": "robdistill.eval.runner", "eps_sweep": "robdistill.eval.runner",
    "suite_attacks": "robdistill.eval.runner",
    "EvaluationResult": "robdistill.eval.results", "result_from_json": "robdistill.eval.results",
    "merge_shards": "robdistill.eval.results", "SanityCheck": "robdistill.eval.results",
}

__all__ = ["EvaluationResult", "SanityCheck", "eps_sweep", "merge_shards", "result_from_json", "run_suite",
           "suite_attacks"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from robdistill.eval.results import EvaluationResult, SanityCheck, merge_shards, result_from_json  # noqa: F401
    from robdistill.eval.runner import eps_sweep, run_suite, suite_attacks  # noqa: F401
