"""The public Python API: plain objects in, plain objects out, nothing written unless a tracker is
given. Teachers and students are ``nn.Module``s mapping [0, 1] images to logits; recipes are
names, ``.toml`` paths or recipe objects, with keyword overrides (``epochs=2``).

    import robdistill as rd
    data = rd.load_dataset("digits")
    teacher = rd.train_teacher("alp", data, seed=0)
    student = rd.distill(teacher, data, perturb="nonmax-shuffle", seed=0)
    result = rd.evaluate(student, data, suite="fast")
    print(result.table)

Published teachers load through one registry of model sources (``rd.load_teacher``):
``robustbench:<Name>``, robdistill checkpoints, TorchScript files, state dicts with their
architecture; each passes the integrity gate and carries ``model.provenance``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from robdistill import catalog
from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe, to_dict
from robdistill.config.settings import default_suite
from robdistill.core.errors import UserError
from robdistill.core.metrics import RESULTS_ARTIFACT
from robdistill.core.threat import norm_of
from robdistill.core.tracker import Tracker, tracker_or_null
from robdistill.tracking.schema import cost_metrics
from robdistill.data import datasets
from robdistill.data.datasets import Splits, dataset_step_ratio
from robdistill.eval.results import EvaluationResult
from robdistill.eval.runner import suite_attacks, suite_eps
from robdistill.eval.runner import evaluate as run_suite
from robdistill.train.distillation import distill_model, resolved_student
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.train.teacher import resolved_teacher, train_teacher_model

R = TypeVar("R", TeacherRecipe, StudentRecipe, SuiteRecipe)
RecipeLike = str | Path | TeacherRecipe | StudentRecipe | SuiteRecipe
_KINDS = {TeacherRecipe: "teacher", StudentRecipe: "student", SuiteRecipe: "suite"}


def load_dataset(name: str = "digits", *, root: str | Path | None = None, download: bool = False,
                 device: str | torch.device = "cpu") -> Splits:
    """A registered dataset (``robdistill list datasets``) as deterministic train / validation /
    test splits in [0, 1], on ``device``. Nothing is downloaded unless ``download``."""
    return datasets.load_dataset(name, Path(root) if root else None, download).to(device)


def load_recipe(kind: str, recipe: RecipeLike, dataset: str | None = None, **overrides: Any) -> Any:
    """A teacher, student or suite recipe from a name, a ``.toml`` path or a recipe object, with
    keyword overrides; unknown fields, bad types, ranges and names are a one-line UserError.
    ``dataset`` resolves a named or ``.toml`` recipe for that dataset (its ``[dataset.<name>]``
    table, if any, before the overrides); a recipe object is taken as it is."""
    if kind not in ("teacher", "student", "suite"):
        raise UserError(f"unknown recipe kind '{kind}'; choose one of: teacher, student, suite")
    if isinstance(recipe, (str, Path)):
        loaded = catalog.load_recipe(kind, str(recipe), dataset=dataset)
    elif _KINDS.get(type(recipe)) == kind:
        loaded = recipe
    else:
        raise UserError(f"a {kind} recipe must be a name, a .toml path or a {kind.capitalize()}Recipe; "
                        f"got {type(recipe).__name__}")
    return catalog.override_recipe(loaded, **overrides) if overrides else loaded


def _with_precision(overrides: dict[str, Any], precision: str | None,
                    threat_model: str | None = None) -> dict[str, Any]:
    """Keyword overrides plus ``precision`` (robdistill.core.precision) and ``threat_model``
    (robdistill.core.threat: ``linf`` or ``l2``, any case) when they are given."""
    out = overrides if precision is None else {**overrides, "precision": precision}
    if threat_model is not None:
        out = {**out, "threat_model": norm_of(threat_model).name}
    return out


def _dataset_name(data: Splits | str) -> str | None:
    """The dataset a recipe is resolved for: a name, or the splits' dataset."""
    return data if isinstance(data, str) else getattr(getattr(data, "info", None), "name", None)


def _data(data: Splits | str, device: str | torch.device | None) -> tuple[Splits, torch.device]:
    splits = load_dataset(data) if isinstance(data, str) else data
    if not isinstance(splits, Splits):
        raise UserError(f"data must be a dataset name or rd.load_dataset(...)'s splits; got {type(data).__name__}")
    target = torch.device(device) if device is not None else splits.train.x.device
    return (splits if splits.train.x.device == target else splits.to(target)), target


def load_teacher(spec: str | Path, data: Splits | str = "digits", *, model_dir: str | Path | None = None,
                 arch: str | None = None, threat_model: str = "Linf", sha256: str | None = None,
                 expect_clean: float | str | None = None, n_check: int | None = None, seed: int = 0,
                 device: str | torch.device | None = None, progress: bool = True, **overrides: Any) -> nn.Module:
    """A teacher from any source (robdistill.sources), as an ``nn.Module`` mapping [0, 1] images to
    logits with ``model.provenance`` (source, id, sha256, path, what the gate measured):

    - ``robustbench:<Name>``: RobustBench's architecture (extra ``robustbench``) and the checkpoint
      ``<model_dir>/<dataset>/<threat_model>/<Name>.pt`` (default ``$ROBDISTILL_MODEL_DIR`` or
      ``./models``), never downloaded;
    - a robdistill checkpoint, a TorchScript file, or a state dict with ``arch`` (a
      ``robdistill list models`` name, or ``timm:<name>`` for a bare timm state dict);
    - a recipe name or ``.toml`` path: trained (:func:`train_teacher`, with ``seed`` and ``overrides``).

    An external teacher passes the integrity gate on ``data``'s first ``n_check`` test images
    (default 1,000): ``sha256`` enforced when given, logits of the right shape, deterministic in
    eval mode, and a clean accuracy whose 95% Wilson interval holds ``expect_clean`` (default
    RobustBench's value where known; ``"off"`` skips it)."""
    from robdistill.sources import gate
    from robdistill.sources.registry import (SOURCE_RECIPE, Provenance, SourceOptions, find_source, load_model,
                                             parse_expect_clean)

    value, check = parse_expect_clean(expect_clean)
    options = SourceOptions(model_dir=Path(model_dir) if model_dir else None, threat_model=threat_model, arch=arch,
                            sha256=sha256, expect_clean=value, check_clean=check)
    if find_source(str(spec), options).name == SOURCE_RECIPE:
        model = train_teacher(str(spec), data, seed=seed, device=device, progress=progress, **overrides)
        model.provenance = Provenance(SOURCE_RECIPE, str(spec), details={"seed": seed})  # type: ignore[assignment]
        return model
    if overrides:
        raise UserError(f"{spec} is an external teacher, loaded and not trained; recipe overrides "
                        f"({', '.join(overrides)}) apply to recipe teachers only")
    if n_check is not None and n_check < 1:
        raise UserError(f"n_check must be >= 1; got {n_check}")
    splits, target = _data(data, device)
    loaded = load_model(str(spec), splits.info, options, target)
    gate.admit(loaded, splits.test.head(n_check or gate.CLEAN_CHECK_IMAGES), splits.info.num_classes, options)
    loaded.model.provenance = loaded.provenance  # type: ignore[assignment]
    return loaded.model


def _log_provenance(tracker: Tracker | None, role: str, model: nn.Module) -> None:
    """Where ``model`` came from (``model.provenance``, set by :func:`load_teacher`), on the tracker:
    ``<role>.source`` / ``.id`` / ``.sha256`` ... parameters and ``<role>_source`` ... tags."""
    provenance = getattr(model, "provenance", None)
    if tracker is None or provenance is None:
        return
    tracker.log_params(role, provenance.params())
    for key, value in (("source", provenance.source), ("id", provenance.id), ("sha256", provenance.sha256)):
        tracker.set_tag(f"{role}_{key}", value)


def train_teacher(recipe: RecipeLike = "at", data: Splits | str = "digits", *, seed: int = 0,
                  device: str | torch.device | None = None, precision: str | None = None,
                  threat_model: str | None = None, progress: bool = True,
                  tracker: Tracker | None = None, **overrides: Any) -> nn.Module:
    """Train a teacher (METHODS section 2) from a recipe (``robdistill list teachers``) on ``data``'s
    training split; same recipe, data and seed give the same weights as ``robdistill
    train-teacher``. ``precision`` ("fp32", "bf16"; default the recipe's) is what the training
    passes run in; ``threat_model`` ("linf", "l2"; default the recipe's) the ball of its training
    attack, at the dataset's radius unless ``eps`` is given. The per-epoch metrics are in
    ``model.history`` (and the tracker, if given)."""
    teacher = load_recipe("teacher", recipe, dataset=_dataset_name(data),
                          **_with_precision(overrides, precision, threat_model))
    splits, target = _data(data, device)
    tracker_or_null(tracker).log_params("teacher", resolved_teacher(teacher, splits.info))
    return train_teacher_model(teacher, splits, seed, target, progress=progress, tracker=tracker)


def distill(teacher: nn.Module, data: Splits | str = "digits", *, perturb: str = "keep",
            recipe: RecipeLike = "default", student: nn.Module | None = None, seed: int = 0,
            device: str | torch.device | None = None, precision: str | None = None,
            threat_model: str | None = None, progress: bool = True,
            tracker: Tracker | None = None, **overrides: Any) -> nn.Module:
    """Distill a student from ``teacher`` (any module mapping [0, 1] images to logits) on clean
    training inputs only, the teacher's logits perturbed by ``perturb`` (``keep``,
    ``nonmax-shuffle``, ``nonmax-flatten``, ... METHODS section 3). ``student`` is any module to train
    (default: the recipe's model, from the student's own init stream). ``precision`` is what the
    student's training passes run in (the teacher's logits are always computed in fp32);
    ``threat_model`` the ball of its validation PGD (and of ARD / RSLAD's attack)."""
    student_recipe = load_recipe("student", recipe, dataset=_dataset_name(data),
                                 **_with_precision(overrides, precision, threat_model))
    PERTURBATIONS.get(perturb)  # a bad name fails before any data is loaded
    splits, target = _data(data, device)
    tracker_or_null(tracker).log_params("student", resolved_student(student_recipe, perturb, splits.info))
    _log_provenance(tracker, "teacher", teacher)
    return distill_model(teacher, student_recipe, perturb, splits, seed, target, student=student,
                         progress=progress, tracker=tracker)


def evaluate(model: nn.Module, data: Splits | str = "digits", *, suite: RecipeLike | None = None,
             eps: float | None = None, n_eval: int | None = None, name: str = "model",
             device: str | torch.device | None = None, precision: str | None = None,
             threat_model: str | None = None, progress: bool = True,
             tracker: Tracker | None = None, **overrides: Any) -> EvaluationResult:
    """Attack ``model`` with a suite (``robdistill list suites``; default ``fast`` on digits,
    ``paper`` elsewhere) on the first ``n_eval`` test images (default the suite's; 0 = all) in the
    ball of ``threat_model`` ("linf", "l2"; default the suite's) of radius ``eps`` (default the
    suite's, else the dataset's for that norm). The result holds the per-sample flags, accuracies
    with 95% intervals (``result.table``) and the sanity checks (``result.checks``). ``precision`` is
    what the attacks craft in (default the suite's); every flag is judged in fp32."""
    splits, _ = _data(data, device)
    suite_recipe = load_recipe("suite", suite or default_suite(splits.info.name),
                               **_with_precision(overrides, precision, threat_model))
    if eps is not None:
        norm_of(suite_recipe.threat_model).check_radius(eps)
    if n_eval is not None and n_eval < 0:
        raise UserError(f"n_eval must be >= 0 (0 = the whole test set); got {n_eval}")
    radius = suite_eps(suite_recipe, splits.info, eps)
    ratio = dataset_step_ratio(splits.info.name, suite_recipe.threat_model)
    suite_attacks(suite_recipe, radius, ratio)  # every attack is built first: bad parameters fail early
    test = splits.test.head((suite_recipe.n_eval if n_eval is None else n_eval) or None)
    result = run_suite(model, test, suite_recipe, radius, name=name, progress=progress, step_ratio=ratio)
    if tracker is not None:
        tracker.log_params("suite", {**to_dict(suite_recipe), "eps": radius, "n": len(test),
                                     "default_step_size": ratio * radius})
        tracker.log_metrics({**result.metrics(), **cost_metrics(result.costs)})
        tracker.log_json(result.to_json(), RESULTS_ARTIFACT)
        _log_provenance(tracker, "model", model)
    return result
