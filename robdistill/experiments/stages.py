"""The stages of the MLflow-tracked pipeline, each in its own child run: train (or reuse) a teacher,
distill a student from its logits on clean inputs only, evaluate models with an attack suite.
The work goes through the public API's door (:func:`robdistill.train_teacher`,
:func:`robdistill.distill` with an :class:`MlflowTracker`; :func:`robdistill.evaluate`, whose result
this layer logs); this layer adds the teacher cache, the model registry, resumable state files
and the run layout."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from torch import nn

from robdistill import api
from robdistill.analysis.consistency import Analysis, analyze_model, log_analysis
from robdistill.analysis.logits import logits_of, mean_statistics
from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe, fingerprint, key_fields, to_dict
from robdistill.config.settings import Settings
from robdistill.core import distributed
from robdistill.core.errors import UserError
from robdistill.core.streams import STREAMS_VERSION
from robdistill.data.datasets import DatasetInfo, Split, Splits
from robdistill.eval.results import EvaluationResult
from robdistill.eval.runner import SuitePlan
from robdistill.models.checkpoints import load_checkpoint, save_checkpoint
from robdistill.models.zoo import Classifier
from robdistill.models.files import sha256_of
from robdistill.sources.registry import SOURCE_RECIPE, Provenance
from robdistill.tracking import logged_models, model_registry, schema
from robdistill.tracking import store as tracking
from robdistill.tracking.store import MlflowTracker
from robdistill.train.distillation import adversarial_inputs, resolved_student
from robdistill.core.state import TrainingState
from robdistill.train.teacher import resolved_teacher

# Bump when a change to training code makes old cached teachers stale.
TRAINING_CODE_VERSION = 2  # with STREAMS_VERSION in the key: TRADES's two forwards came with streams 1


def teacher_key(recipe: TeacherRecipe, info: DatasetInfo, seed: int) -> str:
    hashed = {k: v for k, v in key_fields(resolved_teacher(recipe, info)).items() if k not in ("name", "description")}
    return fingerprint({"recipe": hashed, "dataset": info.name, "seed": seed,
                        "code_version": TRAINING_CODE_VERSION, "streams": STREAMS_VERSION})


@dataclass
class TeacherHandle:
    model: nn.Module  # a Classifier for a recipe teacher; any module for an external one
    key: str
    path: Path
    reused: bool
    run_id: str
    source: str | None = None  # "cache" or "registry" when reused
    provenance: Provenance | None = None  # where it came from (robdistill.sources): recipe, file, hash
    model_id: str | None = None  # its MLflow logged model (robdistill.tracking.logged_models), once logged

    @property
    def provenance_tags(self) -> dict[str, str]:
        prov = self.provenance
        return {} if prov is None else schema.teacher_provenance_tags(prov.source, prov.id, prov.sha256)


def external_teacher(model: nn.Module, provenance: Provenance) -> TeacherHandle:
    """A teacher loaded from a file (through the integrity gate): not trained, not cached; its key
    is the file's hash, so its students' keys change with the file."""
    return TeacherHandle(model, provenance.sha256[:16], Path(provenance.path), False, "", None, provenance)


def teacher_cache_path(recipe: TeacherRecipe, info: DatasetInfo, settings: Settings) -> Path:
    """Where the cache keeps the teacher of ``recipe`` on ``info`` for ``settings.seed``."""
    key = teacher_key(recipe, info, settings.seed)
    return settings.cache_dir / "teachers" / schema.teacher_checkpoint_name(info.name, recipe.name, settings.seed, key)


def obtain_teacher(recipe: TeacherRecipe, splits: Splits, settings: Settings) -> TeacherHandle:
    """Train a teacher, or reuse the one with the same resolved recipe, dataset and seed: from the
    local cache, else from the tracking store's model registry (a teacher trained on another
    machine sharing the store), which every newly trained teacher is registered in. Under torchrun
    rank 0 decides, every rank trains (DDP) or loads the same file, and only rank 0 writes it.
    Outside torchrun a lock file beside the cached checkpoint (``<name>.pt.lock``) makes processes
    sharing the cache (a pool's workers, sweeps side by side) wait for one another: a teacher is
    trained once and the others reuse it."""
    if distributed.context().active:
        return _obtain_teacher(recipe, splits, settings)
    from filelock import FileLock

    path = teacher_cache_path(recipe, splits.info, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        return _obtain_teacher(recipe, splits, settings)


def _obtain_teacher(recipe: TeacherRecipe, splits: Splits, settings: Settings) -> TeacherHandle:
    info = splits.info
    key = teacher_key(recipe, info, settings.seed)
    path = teacher_cache_path(recipe, info, settings)
    source: str | None = None
    if distributed.is_main():
        if path.is_file():
            source = schema.SOURCE_CACHE
        elif settings.use_registry:
            source = _fetch_registered_teacher(key, path)
    source = distributed.broadcast_object(source)
    reused = source is not None
    if reused and not path.is_file():
        raise UserError(f"rank {distributed.context().rank} cannot see {path}: under torchrun every rank "
                        f"needs the same --cache-dir (a shared folder across machines)")
    tags = schema.teacher_tags(info.name, recipe.name, settings.seed, key, source)
    state = TrainingState(settings.cache_dir / "state" / f"{path.stem}.state.pt")
    interrupted = _interrupted_run(state, settings) if not reused else None
    model_id: str | None = None
    with tracking.tracked_run(schema.teacher_run_name(recipe.name, settings.seed), nested=True, tags=tags,
                              resume_run_id=interrupted) as run:
        if interrupted is None:
            if reused:  # a trained teacher's come from the training itself (rd.train_teacher)
                tracking.log_params("teacher", resolved_teacher(recipe, info))
            log_dataset_input(splits, "training")
        if reused:
            model, payload = load_checkpoint(path, settings.device)
            tracking.set_tag(schema.TAG_SOURCE_RUN_ID, payload["extra"].get("run_id", ""))
            tracking.log_metrics(payload["extra"].get("final_metrics", {}))
        else:
            state.extra = {"run_id": run.info.run_id}
            model = api.train_teacher(recipe, splits, seed=settings.seed, device=settings.device,
                                      progress=settings.progress, tracker=MlflowTracker(), state=state,
                                      resume=settings.resume)
            history = model.history  # type: ignore[attr-defined]
            if distributed.is_main():
                save_checkpoint(path, model, kind="teacher", model_name=recipe.model, dataset=info.name,
                                recipe=resolved_teacher(recipe, info), seed=settings.seed,
                                extra={"run_id": run.info.run_id, "final_metrics": history[-1]})
            distributed.barrier()  # the file exists for every rank from here on
            model_id = logged_models.log_model(
                schema.teacher_model_name(recipe.name, settings.seed), schema.ROLE_TEACHER,
                logged_models.enclosing_run_id() or run.info.run_id, checkpoint=path,
                params={"key": key, **resolved_teacher(recipe, info)},
                tags={**tags, logged_models.TAG_STAGE_RUN: run.info.run_id})
            version = None
            if settings.use_registry and model_id is not None:
                version = model_registry.register_teacher(
                    model_registry.registered_teacher_name(info.name, recipe.name), run.info.run_id,
                    model_id, key,
                    {schema.TAG_SEED: str(settings.seed), schema.TAG_DATASET: info.name,
                     schema.TAG_GIT_COMMIT: tracking.git_commit()})
            if version is not None:
                tracking.set_tag(schema.TAG_REGISTERED_VERSION, version)
            state.clear()
    provenance = Provenance(SOURCE_RECIPE, recipe.name, sha256_of(path), str(path),
                            {"reused_from": source or ""})
    return TeacherHandle(model, key, path, reused, run.info.run_id, source, provenance, model_id)


def split_digest(*splits: Split) -> str:
    """A short hash of the images and labels of ``splits`` (what a run's dataset input names)."""
    import hashlib

    digest = hashlib.sha256()
    for split in splits:
        for tensor in (split.x, split.y):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def log_dataset_input(splits: Splits, context: str, test: Split | None = None) -> None:
    """The dataset as an MLflow dataset input of the active run (the UI's Dataset column), as
    metadata only: ``training`` (digest of the train and validation splits, the three split
    sizes) or ``test`` (digest and size of ``test``, the evaluated images)."""
    if not distributed.is_main():
        return
    if context == "test":
        assert test is not None
        tracking.log_dataset(splits.info.name, split_digest(test), {"test": len(test)}, context)
    else:
        tracking.log_dataset(splits.info.name, split_digest(splits.train, splits.val),
                             {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}, context)


def _interrupted_run(state: TrainingState, settings: Settings) -> str | None:
    """The MLflow run of an interrupted training to continue (``--resume`` and a state file), else None."""
    if not settings.resume:
        return None
    saved = state.load()
    return None if saved is None else str(saved["run_id"])


def _fetch_registered_teacher(key: str, path: Path) -> str | None:
    """Copy a registered teacher with this key into the cache at ``path``; 'registry' or None."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="robdistill-registry-") as tmp:
        found = model_registry.find_registered_teacher(key, Path(tmp))
        if found is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        # a private temporary name, then an atomic rename: concurrent fetches never tear the file
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".download",
                                         delete=False) as handle:
            partial = Path(handle.name)
        try:
            shutil.copyfile(found, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return schema.SOURCE_REGISTRY


class DistilledStudent(NamedTuple):
    model: Classifier
    path: Path  # its checkpoint
    model_id: str | None  # its MLflow logged model (None where the store refused it)


def distill_student(teacher: TeacherHandle, recipe: StudentRecipe, perturb: str, splits: Splits,
                    settings: Settings, teacher_name: str) -> DistilledStudent:
    """Distill (:func:`robdistill.train.distillation.distill_model`) in a child run, save the
    student's checkpoint and log it as an MLflow logged model of the enclosing run."""
    info = splits.info
    resolved = resolved_student(recipe, perturb, info)
    tags = {**schema.student_tags(info.name, teacher_name, perturb, recipe.name, settings.seed, teacher.key,
                                  adversarial_inputs(recipe.method)), **teacher.provenance_tags}
    student_key = fingerprint({"teacher": teacher.key, "student": key_fields(resolved), "seed": settings.seed,
                               "streams": STREAMS_VERSION})
    state = TrainingState(settings.cache_dir / "state" / f"student-{student_key}.state.pt")
    interrupted = _interrupted_run(state, settings)
    with tracking.tracked_run(schema.student_run_name(teacher_name, perturb, settings.seed, recipe.name), nested=True,
                              tags=tags, resume_run_id=interrupted) as run:
        if interrupted is None:
            log_dataset_input(splits, "training")
        state.extra = {"run_id": run.info.run_id}
        model = api.distill(teacher.model, splits, perturb=perturb, recipe=recipe, seed=settings.seed,
                            device=settings.device, teacher_name=teacher_name, progress=settings.progress,
                            tracker=MlflowTracker(), state=state, resume=settings.resume)
        history = model.history  # type: ignore[attr-defined]
        name = schema.student_checkpoint_name(info.name, teacher_name, perturb, recipe.name, settings.seed,
                                              run.info.run_id)
        path = settings.cache_dir / "students" / name
        if distributed.is_main():
            save_checkpoint(path, model, kind="student", model_name=recipe.model, dataset=info.name,
                            recipe=resolved, seed=settings.seed,
                            extra={"run_id": run.info.run_id, "teacher_key": teacher.key,
                                   "final_metrics": history[-1]})
        distributed.barrier()
        model_id = logged_models.log_model(
            schema.student_model_name(teacher_name, perturb, settings.seed, recipe.name), schema.ROLE_STUDENT,
            logged_models.enclosing_run_id() or run.info.run_id, checkpoint=path,
            params={"key": student_key, **resolved}, tags={**tags, logged_models.TAG_STAGE_RUN: run.info.run_id})
        state.clear()
    return DistilledStudent(model, path, model_id)


def evaluation_key(model: nn.Module, test: Split, suite: SuiteRecipe, eps: float,
                   step_ratio: float | None = None) -> str:
    """What an evaluation's state file belongs to: the model's weights, the images, the suite, eps,
    the default step size and this rank's place in a torchrun job."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in [*model.state_dict().values(), test.x, test.y]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    ctx = distributed.context()
    return fingerprint({"data": digest.hexdigest(), "suite": key_fields(to_dict(suite)), "eps": eps,
                        **({} if step_ratio is None else {"step_ratio": step_ratio}),
                        "rank": ctx.rank, "world_size": ctx.world_size})


def evaluate_model(model: nn.Module, name: str, data: Splits, plan: SuitePlan,
                   settings: Settings, tags: dict[str, str],
                   rows: list[int] | None = None,
                   provenance: Provenance | None = None,
                   run_name: str | None = None, model_id: str | None = None,
                   surrogates: dict[str, nn.Module] | None = None,
                   subject: str | None = None) -> tuple[EvaluationResult, Analysis]:
    """Attack one model on ``data.test`` (the evaluated images: cut to ``n_eval``, or one shard's
    rows) with a resolved suite (:func:`robdistill.eval.runner.resolve_suite`: its radius and
    default step), through :func:`robdistill.evaluate`, in a child run; log accuracies, intervals,
    checks, logits and
    the AALP measurements (and, with ``provenance``, where the model came from as ``model.*``
    parameters). The evaluation is saved after every attack (and AutoAttack chunk) in
    ``cache_dir/state``; ``--resume`` continues it in the same MLflow run. ``run_name``: the child
    run's name (default ``eval <name>``); ``model_id``: the model's MLflow logged model, which gets
    the accuracies too (through this run, which holds the same metrics); ``surrogates``: the
    modules a suite's transfer attack may name (``"teacher"``), as :func:`robdistill.eval.runner.suite_attacks`;
    ``subject``: "teacher" or the student's perturbation, for the suite's attacks that run on some
    models only (:meth:`SuiteRecipe.for_subject`)."""
    plan = plan.for_subject(subject)
    suite, eps, ratio, test = plan.suite, plan.eps, plan.step_ratio, data.test
    key = evaluation_key(model, test, suite, eps, ratio)
    state = TrainingState(settings.cache_dir / "state" / f"eval-{key}.state.pt")
    interrupted = _interrupted_run(state, settings)
    with tracking.tracked_run(run_name or schema.evaluation_run_name(name), nested=True,
                              tags=schema.evaluation_tags(tags),
                              resume_run_id=interrupted) as run:
        if interrupted is None:
            tracking.log_params("suite", {**to_dict(suite), "eps": eps, "n": len(test),
                                          "default_step_size": plan.default_step_size})
            if provenance is not None:
                tracking.log_params("model", provenance.params())
        state.extra = {"run_id": run.info.run_id}
        result = api.evaluate(model, data, suite=suite, eps=eps, n_eval=0, name=name,  # logged below
                              progress=settings.progress, surrogates=surrogates, state=state,
                              resume=settings.resume)
        result.rows = rows  # one shard of a split evaluation: which test rows these are
        analysis = analyze_model(model, test.head(suite.analysis_n_eval or None), eps, suite.seed,
                                 step_size=plan.default_step_size, norm=suite.threat_model)
        log_analysis(MlflowTracker(), analysis)
        if model_id is None:
            tracking.log_metrics(result.metrics())
        else:  # once, on this run and its logged model
            logged_models.log_model_metrics(model_id, result.metrics())
        tracking.log_metrics(mean_statistics(logits_of(model, test.x)))
        tracking.log_metrics(schema.seconds_metrics(result.seconds))
        tracking.log_metrics(schema.evaluation_cost_metrics(result, test.x.device, suite.precision))
        failed = [c.name for c in result.checks if not c.passed]
        tracking.set_tag(schema.TAG_SANITY_CHECKS, schema.sanity_checks_value(failed))
        tracking.log_json(result.to_json(), schema.RESULTS_ARTIFACT)
        state.clear()
    return result, analysis
