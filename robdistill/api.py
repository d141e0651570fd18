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
from typing import TYPE_CHECKING, Any, Mapping, Sequence, TypeVar

import torch
from torch import nn

from robdistill import catalog
from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe, to_dict
from robdistill.config.settings import default_suite
from robdistill.core.errors import UserError
from robdistill.core.metrics import RESULTS_ARTIFACT
from robdistill.core.state import TrainingState
from robdistill.core.threat import norm_of
from robdistill.core.tracker import Tracker, tracker_or_null
from robdistill.tracking.schema import evaluation_cost_metrics
from robdistill.data import datasets
from robdistill.data.datasets import Splits
from robdistill.eval.results import EvaluationResult
from robdistill.eval.runner import resolve_suite
from robdistill.eval.runner import run_suite
from robdistill.train.distillation import distill_model, resolved_student
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.train.teacher import resolved_teacher, train_teacher_model

if TYPE_CHECKING:
    from robdistill.attacks import Attack

R = TypeVar("R", TeacherRecipe, StudentRecipe, SuiteRecipe)
RecipeLike = str | Path | TeacherRecipe | StudentRecipe | SuiteRecipe
_KINDS = {TeacherRecipe: "teacher", StudentRecipe: "student", SuiteRecipe: "suite"}


def load_dataset(name: str, *, root: str | Path | None = None, download: bool = False,
                 device: str | torch.device = "cpu") -> Splits:
    """A registered dataset as deterministic train / validation / test splits of [0, 1] images.

    Args:
        name: a dataset of ``robdistill list datasets``: ``digits`` (embedded), ``mnist``,
            ``fashion-mnist``, ``cifar10``, ``svhn``.
        root: the folder holding the dataset's files (default ``$ROBDISTILL_DATA`` or ``./data``).
        download: fetch missing files with torchvision; nothing is downloaded otherwise.
        device: where the tensors live (training reads batches without host copies).

    Returns:
        :class:`Splits`: ``info`` (shape, classes, the threat models' radii) and the ``train``,
        ``val`` and ``test`` :class:`Split` s.

    Example:
        >>> import robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> tuple(data.test.x.shape), data.info.num_classes, data.info.eps
        ((359, 1, 8, 8), 10, 0.1)
    """
    return datasets.load_dataset(name, Path(root) if root else None, download).to(device)


def load_recipe(kind: str, recipe: RecipeLike, dataset: str | None = None, **overrides: Any) -> Any:
    """A teacher, student or suite recipe, validated, with keyword overrides: the one recipe loader
    (every command loads its recipes through it).

    Args:
        kind: ``"teacher"``, ``"student"`` or ``"suite"``.
        recipe: a name (``robdistill list teachers``), a ``.toml`` path or a recipe object (taken
            as it is).
        dataset: resolve a named or ``.toml`` recipe for this dataset (its ``[dataset.<name>]``
            table, if any, applies before the overrides).
        **overrides: recipe fields to change (``epochs=2``); unknown fields, bad types, ranges and
            names are a one-line :class:`UserError`.

    Returns:
        A frozen :class:`TeacherRecipe`, :class:`StudentRecipe` or :class:`SuiteRecipe`.

    Example:
        >>> import robdistill as rd
        >>> teacher = rd.load_recipe("teacher", "alp", epochs=2)
        >>> teacher.objective, teacher.epochs
        ('alp', 2)
        >>> rd.load_recipe("teacher", "alp", epohcs=2)
        Traceback (most recent call last):
        robdistill.core.errors.UserError: unknown field 'epohcs' in teacher recipe .../alp.toml with overrides; valid fields: ...
    """
    if kind not in ("teacher", "student", "suite"):
        raise UserError(f"unknown recipe kind '{kind}'; choose one of: teacher, student, suite")
    if isinstance(recipe, (str, Path)):  # the file, its dataset table and the overrides, checked once
        return catalog.checked_recipe(kind, str(recipe), overrides, dataset=dataset)
    if _KINDS.get(type(recipe)) != kind:
        raise UserError(f"a {kind} recipe must be a name, a .toml path or a {kind.capitalize()}Recipe; "
                        f"got {type(recipe).__name__}")
    return catalog.override_recipe(recipe, **overrides) if overrides else recipe


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


def load_teacher(spec: str | Path, data: Splits | str, *, model_dir: str | Path | None = None,
                 arch: str | None = None, threat_model: str = "Linf", sha256: str | None = None,
                 expect_clean: float | str | None = None, n_check: int | None = None, seed: int = 0,
                 device: str | torch.device | None = None, progress: bool = True, **overrides: Any) -> nn.Module:
    """A teacher from any source (:mod:`robdistill.sources`), checked before it is used.

    External teachers pass the integrity gate on ``data``'s first ``n_check`` test images: the
    ``sha256`` when given, logits of the right shape, deterministic in eval mode, and a clean
    accuracy whose 95% Wilson interval holds ``expect_clean``.

    Args:
        spec: ``robustbench:<Name>`` (RobustBench's architecture, extra ``robustbench``, and the
            checkpoint ``<model_dir>/<dataset>/<threat_model>/<Name>.pt``, never downloaded); a
            robdistill checkpoint, a TorchScript file, or a state dict with ``arch``; or a recipe
            name or ``.toml`` path, trained by :func:`train_teacher` with ``seed`` and ``overrides``.
        data: the dataset (a name or :func:`load_dataset`'s splits) the teacher is for.
        model_dir: RobustBench's model folder (default ``$ROBDISTILL_MODEL_DIR`` or ``./models``).
        arch: a state dict's architecture (``robdistill list models``, or ``timm:<name>``).
        threat_model: RobustBench's folder: ``Linf``, ``L2`` or ``corruptions``.
        sha256: the file's pinned SHA-256, checked before anything is parsed.
        expect_clean: the clean accuracy to expect (default RobustBench's where known; ``"off"``
            skips the check).
        n_check: test images the gate uses (default 1,000).
        seed, progress, overrides: for a recipe teacher, as in :func:`train_teacher`.
        device: where the model goes (default the data's device).

    Returns:
        The teacher, an ``nn.Module`` in eval mode mapping [0, 1] images to logits, with
        ``model.provenance`` (source, id, sha256, path, what the gate measured).

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> net = rd.build_model("small-cnn", data.info.shape, 10, data.info.mean, data.info.std)
        >>> torch.save(net.state_dict(), "net.pt")          # someone else's weights, say
        >>> teacher = rd.load_teacher("net.pt", data, arch="small-cnn", expect_clean="off", n_check=64)
        >>> teacher.provenance.source, teacher.provenance.details["arch"]
        ('state-dict', 'small-cnn')
    """
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


def _state_file(state: "str | Path | TrainingState | None", resume: bool) -> TrainingState | None:
    """The state file a training (or an evaluation) saves itself to after every epoch (attack), and
    with ``resume`` starts from."""
    if state is None:
        if resume:
            raise UserError("resume=True continues from a state file; give state='<file>.state.pt' too")
        return None
    return state if isinstance(state, TrainingState) else TrainingState(Path(state))


def _log_provenance(tracker: Tracker | None, role: str, model: nn.Module) -> None:
    """Where ``model`` came from (``model.provenance``, set by :func:`load_teacher`), on the tracker:
    ``<role>.source`` / ``.id`` / ``.sha256`` ... parameters and ``<role>_source`` ... tags."""
    provenance = getattr(model, "provenance", None)
    if tracker is None or provenance is None:
        return
    tracker.log_params(role, provenance.params())
    for key, value in (("source", provenance.source), ("id", provenance.id), ("sha256", provenance.sha256)):
        tracker.set_tag(f"{role}_{key}", value)


def train_teacher(recipe: RecipeLike, data: Splits | str, *, seed: int = 0,
                  device: str | torch.device | None = None, precision: str | None = None,
                  threat_model: str | None = None, progress: bool = True,
                  tracker: Tracker | None = None, state: "str | Path | TrainingState | None" = None,
                  resume: bool = False, **overrides: Any) -> nn.Module:
    """Train a teacher (METHODS section 2) on ``data``'s training split.

    The same recipe, data and seed give the same weights as ``robdistill train-teacher``.

    Args:
        recipe: a teacher recipe (``robdistill list teachers``: ``standard``, ``at``, ``alp``,
            ``aalp``, ``trades``, ...), a ``.toml`` path or a :class:`TeacherRecipe`.
        data: a dataset name or :func:`load_dataset`'s splits.
        seed: the seed of the teacher's random streams (init, batches, attacks).
        device: where it trains (default the data's device).
        precision: what the training passes run in (``"fp32"``, ``"bf16"``; default the recipe's).
        threat_model: the ball of its training attack (``"linf"``, ``"l2"``; default the
            recipe's), at the dataset's radius unless ``eps`` is given.
        progress: a line (or bar) per epoch; False is silent.
        tracker: where parameters and per-epoch metrics go (nothing is written without one).
        state: a file the training saves itself to after every epoch (model, optimiser, schedule,
            every random stream, the metrics so far); the file is left for you to delete.
        resume: continue from ``state`` where it stopped (the same weights as an uninterrupted run).
        **overrides: recipe fields (``epochs=2``, ``train_subset=500``, ``eps=0.2``).

    Returns:
        The trained ``nn.Module`` in eval mode; its per-epoch metrics are in ``model.history``.

    Example:
        >>> import robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> teacher = rd.train_teacher("at", data, seed=0, epochs=1, train_subset=200, progress=False)
        >>> teacher(data.test.x[:4]).shape
        torch.Size([4, 10])
        >>> len(teacher.history), "train/acc" in teacher.history[-1]
        (1, True)
    """
    saved = _state_file(state, resume)
    teacher = load_recipe("teacher", recipe, dataset=_dataset_name(data),
                          **_with_precision(overrides, precision, threat_model))
    splits, target = _data(data, device)
    tracker_or_null(tracker).log_params("teacher", resolved_teacher(teacher, splits.info))
    return train_teacher_model(teacher, splits, seed, target, progress=progress, tracker=tracker,
                               state=saved, resume=resume)


def distill(teacher: nn.Module, data: Splits | str, *, perturb: str = "keep",
            recipe: RecipeLike = "default", student: nn.Module | None = None, seed: int = 0,
            device: str | torch.device | None = None, precision: str | None = None,
            threat_model: str | None = None, progress: bool = True, tracker: Tracker | None = None,
            teacher_name: str = "teacher", state: "str | Path | TrainingState | None" = None,
            resume: bool = False, **overrides: Any) -> nn.Module:
    """Distill a student from ``teacher`` on clean training inputs only (METHODS section 3).

    Args:
        teacher: any module mapping [0, 1] images to logits; its logits are computed in fp32.
        data: a dataset name or :func:`load_dataset`'s splits.
        perturb: what happens to the teacher's logits first (``robdistill list perturbations``:
            ``keep``, ``nonmax-shuffle``, ``nonmax-flatten``, ``nonmax-flatten-mean``, ``onehot``,
            ``confidence-swap``).
        recipe: a student recipe name, ``.toml`` path or :class:`StudentRecipe`.
        student: any module to train (default the recipe's model, from its own init stream).
        seed: the seed of the student's random streams.
        device: where it trains (default the data's device).
        precision: what the student's training passes run in (default the recipe's).
        threat_model: the ball of its validation PGD (and of ARD / RSLAD's attack).
        progress: a line (or bar) per epoch; False is silent.
        tracker: where parameters and per-epoch metrics go (nothing is written without one).
        teacher_name: the teacher's name in messages (e.g. non-finite logits).
        state, resume: a file saved after every epoch, and whether to continue from it (as in
            :func:`train_teacher`).
        **overrides: recipe fields (``epochs=5``, ``temperature=4``).

    Returns:
        The trained student, an ``nn.Module`` in eval mode, with ``model.history``.

    Example:
        >>> import robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> teacher = rd.train_teacher("standard", data, epochs=1, train_subset=200, progress=False)
        >>> student = rd.distill(teacher, data, perturb="nonmax-shuffle", epochs=1, train_subset=200,
        ...                      progress=False)
        >>> student(data.test.x[:4]).argmax(1).shape
        torch.Size([4])
    """
    saved = _state_file(state, resume)
    student_recipe = load_recipe("student", recipe, dataset=_dataset_name(data),
                                 **_with_precision(overrides, precision, threat_model))
    PERTURBATIONS.get(perturb)  # a bad name fails before any data is loaded
    splits, target = _data(data, device)
    tracker_or_null(tracker).log_params("student", resolved_student(student_recipe, perturb, splits.info))
    _log_provenance(tracker, "teacher", teacher)
    return distill_model(teacher, student_recipe, perturb, splits, seed, target, student=student,
                         teacher_name=teacher_name, progress=progress, tracker=tracker,
                         state=saved, resume=resume)


def evaluate(model: nn.Module, data: Splits | str, *, suite: RecipeLike | None = None,
             attacks: "Attack | Sequence[Attack] | Mapping[str, Attack] | None" = None,
             eps: float | None = None, n_eval: int | None = None, name: str = "model",
             device: str | torch.device | None = None, precision: str | None = None,
             threat_model: str | None = None, progress: bool = True,
             tracker: Tracker | None = None, surrogates: Mapping[str, nn.Module] | None = None,
             state: "str | Path | TrainingState | None" = None, resume: bool = False,
             **overrides: Any) -> EvaluationResult:
    """Attack ``model`` on ``data``'s test images and check the evaluation (METHODS section 4).

    Either a suite (named attacks at one radius) or attack objects you built. Every robust flag
    is judged by an fp32 forward, whatever precision the attacks craft in.

    Args:
        model: any module mapping [0, 1] images to logits.
        data: a dataset name or :func:`load_dataset`'s splits.
        suite: a suite name (``robdistill list suites``; default ``fast`` on digits, ``paper``
            elsewhere), a ``.toml`` path or a :class:`SuiteRecipe`.
        attacks: instead of a suite, attack objects (``rd.attacks.PGD(eps=0.1, steps=20)``): one,
            a list (keyed by each attack's name) or a dict ``{key: attack}``. They share one norm
            and radius; ``suite``, ``eps``, ``threat_model`` and ``precision`` are the objects' own.
        eps: the radius (default the suite's, else the dataset's for the suite's norm).
        n_eval: the first that many test images (default the suite's; 0 = all).
        name: the model's name in tables and messages.
        device: where the evaluation runs (default the data's device).
        precision: what the suite's attacks craft in (default the suite's).
        threat_model: the ball (``"linf"``, ``"l2"``; default the suite's).
        progress: a line (or bar) per attack; False is silent.
        tracker: where parameters, accuracies and ``results.json`` go.
        surrogates: the modules a suite's transfer attack may name (``surrogate = "teacher"``).
        state: a file the evaluation saves itself to after every attack (and every
            ``autoattack_chunk`` images of AutoAttack); the file is left for you to delete.
        resume: continue from ``state`` where it stopped (finished attacks are not run again).
        **overrides: suite fields (``batch_size=128``, ``seed=1``).

    Returns:
        :class:`EvaluationResult`: per-sample flags (``result.clean``, ``result.robust[key]``,
        ``result.worst``), accuracies with 95% Wilson intervals (``result.accuracies()``,
        ``result.table``) and the sanity checks (``result.checks``, ``result.passed``).

    Example:
        >>> import torch, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> result = rd.evaluate(model, data, attacks=[rd.attacks.FGSM(eps=0.1), rd.attacks.PGD(eps=0.1, steps=5)],
        ...                      n_eval=64, progress=False)
        >>> list(result.robust), result.n, result.passed
        (['fgsm', 'pgd'], 64, True)
        >>> result.accuracies()["pgd"].value <= result.accuracies()["fgsm"].value
        True
    """
    saved = _state_file(state, resume)
    splits, _ = _data(data, device)
    if n_eval is not None and n_eval < 0:
        raise UserError(f"n_eval must be >= 0 (0 = the whole test set); got {n_eval}")
    if attacks is not None:
        given = [k for k, v in (("suite", suite), ("eps", eps), ("threat_model", threat_model),
                                ("precision", precision)) if v is not None]
        if given:
            raise UserError(f"attacks= carries its own radius, norm and precision; leave out {', '.join(given)} "
                            f"(or pass a suite instead of attacks)")
        built = _named_attacks(attacks)
        suite_recipe = _suite_of(built, overrides)
        radius, ratio = suite_recipe.eps, None
    else:
        suite_recipe = load_recipe("suite", suite or default_suite(splits.info.name),
                                   **_with_precision(overrides, precision, threat_model))
        plan = resolve_suite(suite_recipe, splits.info, eps)
        radius, ratio = plan.eps, plan.step_ratio
        built = plan.attacks(dict(surrogates) if surrogates else None)  # built once, before any work
    test = splits.test.head((suite_recipe.n_eval if n_eval is None else n_eval) or None)
    result = run_suite(model, test, suite_recipe, radius, name=name, progress=progress, step_ratio=ratio,
                       attacks=built, state=saved, resume=resume)
    if tracker is not None:
        step = {} if ratio is None else {"default_step_size": ratio * radius}  # attack objects carry their own
        tracker.log_params("suite", {**to_dict(suite_recipe), "eps": radius, "n": len(test), **step})
        costs = evaluation_cost_metrics(result, test.x.device, suite_recipe.precision)
        tracker.log_metrics({**result.metrics(), **costs})
        tracker.log_json(result.to_json(), RESULTS_ARTIFACT)
        _log_provenance(tracker, "model", model)
    return result


def _named_attacks(attacks: Any) -> dict[str, "Attack"]:
    """Attack objects keyed for the result: a dict as given, a list (or one attack) by each
    attack's name; anything else, a name twice or mixed radii are one-line errors."""
    from robdistill.attacks import Attack

    if isinstance(attacks, Attack):
        attacks = [attacks]
    if isinstance(attacks, Mapping):
        items = [(str(k), v) for k, v in attacks.items()]
    elif isinstance(attacks, (list, tuple)):
        items = [(getattr(a, "name", ""), a) for a in attacks]
    else:
        raise UserError(f"attacks must be attack objects (rd.attacks.PGD(eps=0.1, steps=20)), a list or a dict of "
                        f"them; got {type(attacks).__name__}")
    if not items:
        raise UserError("attacks is empty; give at least one attack object")
    for key, attack in items:
        if not isinstance(attack, Attack):
            raise UserError(f"attacks must be robdistill attack objects (rd.attacks.PGD(eps=0.1, steps=20), ...); "
                            f"got {type(attack).__name__}")
    keys = [k for k, _ in items]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise UserError(f"two attacks named {twice[0]}; pass a dict to key them apart: "
                        f"attacks={{'{twice[0]}': ..., '{twice[0]}-2': ...}}")
    balls = sorted({(a.norm, a.eps) for _, a in items})
    if len(balls) > 1:
        raise UserError("the attacks of one evaluation share one ball; got "
                        + " and ".join(f"{n} eps {e:g}" for n, e in balls) + ": evaluate them separately")
    return dict(items)


def _suite_of(attacks: dict[str, "Attack"], overrides: dict[str, Any]) -> SuiteRecipe:
    """The suite record of an evaluation by attack objects: their ball, one table per attack (name
    and key: the objects carry their parameters), and the suite fields given as ``overrides``."""
    from robdistill.config.recipes import override_recipe

    first = next(iter(attacks.values()))
    suite = SuiteRecipe(name="attacks", description="attack objects given to rd.evaluate",
                        threat_model=first.norm, eps=first.eps,
                        attack=tuple({"name": a.name, "key": k} for k, a in attacks.items()))
    fixed = sorted(set(overrides) & {"attack", "eps", "threat_model", "precision", "name"})
    if fixed:
        raise UserError(f"with attacks=, the suite field {fixed[0]} comes from the attack objects; leave it out")
    return override_recipe(suite, overrides) if overrides else suite
