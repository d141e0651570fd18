"""The stages of the pipeline, each in its own MLflow child run: train (or reuse) a teacher,
distill a student from its logits on clean inputs only, evaluate models with an attack suite."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robdistill.core import distributed

from robdistill.tracking import store as tracking
from robdistill.analysis.logits import mean_statistics, logits_of
from robdistill.train.augment import AUGMENTATIONS
from robdistill.attacks.base import PGD, pgd_perturb
from robdistill.models.checkpoints import load_checkpoint, save_checkpoint
from robdistill.analysis.consistency import ConsistencyReport, consistency_report, feature_contributions
from robdistill.data.datasets import DATASETS, DatasetInfo, Split, Splits
from robdistill.core.errors import UserError
from robdistill.eval.runner import EvaluationResult, check_finite, evaluate, reach_warning
from robdistill.models.zoo import Classifier, build_model
from robdistill.core.modes import eval_mode, private_generator
from robdistill.train.objectives import OBJECTIVES, LossOutput, TrainContext
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe, fingerprint, to_dict
from robdistill.train.distillation import ADVERSARIAL_INPUTS, STUDENT_METHODS, AttackContext, distillation_loss  # noqa: F401
from robdistill.core.streams import STREAMS_VERSION, stream_seed
from robdistill.train.loop import TrainingState, accuracy, fit

# Bump when a change to training code makes old cached teachers stale.
TRAINING_CODE_VERSION = 2  # with STREAMS_VERSION in the key: TRADES's two forwards came with streams 1
VAL_ROBUST_SAMPLES = 256
STUDENT_VAL_PGD_STEPS = 10  # the student's per-epoch validation PGD-10 (at the dataset's eps and step)


@dataclass(frozen=True)
class Settings:
    """What every command shares: data, seed, device, tracking and cache locations."""

    dataset: str = "digits"
    data_root: Path | None = None
    download: bool = False
    seed: int = 0
    device: str = "cpu"
    tracking_uri: str | None = None
    experiment: str = tracking.DEFAULT_EXPERIMENT
    cache_dir: Path = Path(os.environ.get("ROBDISTILL_CACHE", ".robdistill"))
    progress: bool = True
    use_registry: bool = True  # find teachers in, and add them to, the store's model registry
    resume: bool = False  # continue interrupted teacher training / distillation from its state file


def rank_stream(seed: int, stage: str, purpose: str) -> int:
    """The seed of a stream drawn per rank on the rank's own rows (training attacks, augmentation):
    each rank gets its own independent stream; a single process is rank 0."""
    return stream_seed(seed, stage, purpose, distributed.context().rank)


def teacher_eps(recipe: TeacherRecipe, info: DatasetInfo) -> float:
    return info.eps if recipe.eps is None else recipe.eps


def teacher_step_size(recipe: TeacherRecipe, info: DatasetInfo) -> float:
    """The recipe's step size, else the dataset's (SPEC section 1) scaled to the recipe's eps."""
    eps = teacher_eps(recipe, info)
    return recipe.attack_step_size if recipe.attack_step_size is not None else info.step_for(eps)


def resolved_teacher(recipe: TeacherRecipe, info: DatasetInfo) -> dict[str, Any]:
    """The recipe with dataset defaults filled in: what is logged and what the cache key hashes."""
    values = to_dict(recipe)
    values["eps"] = teacher_eps(recipe, info)
    values["attack_step_size"] = teacher_step_size(recipe, info)
    values["pairing_convention"] = "sum over classes, mean over batch (AALP Eq. 1)"
    values["guided_dropout_rescale"] = False
    return values


def teacher_key(recipe: TeacherRecipe, info: DatasetInfo, seed: int) -> str:
    hashed = {k: v for k, v in resolved_teacher(recipe, info).items() if k not in ("name", "description")}
    return fingerprint({"recipe": hashed, "dataset": info.name, "seed": seed,
                        "code_version": TRAINING_CODE_VERSION, "streams": STREAMS_VERSION})


def _validator(eps: float, steps: int, step_size: float, val: Split, seed: int):
    """Per-epoch validation: clean accuracy, and PGD accuracy on a fixed validation subset."""
    subset = val.head(VAL_ROBUST_SAMPLES)
    attack = PGD(eps, seed=seed, steps=steps, step_size=step_size)

    def validate(model: nn.Module) -> dict[str, float]:
        robust = attack.run(model, subset.x, subset.y, progress=False).robust
        return {"acc": accuracy(model, val), "pgd_acc": robust.float().mean().item()}

    return validate


def initial_model(name: str, info: DatasetInfo, seed: int, stage: str, device: str) -> Classifier:
    """A freshly initialised model for ``stage`` ("teacher" or "student"), its weights drawn from
    that stage's own init stream (the caller's global RNG is left untouched)."""
    with torch.random.fork_rng():
        torch.manual_seed(stream_seed(seed, stage, "init"))
        model = build_model(name, info.shape, info.num_classes, info.mean, info.std)
    return model.to(device)


@dataclass
class TeacherHandle:
    model: Classifier
    key: str
    path: Path
    reused: bool
    run_id: str
    source: str | None = None  # "cache" or "registry" when reused


def obtain_teacher(recipe: TeacherRecipe, splits: Splits, settings: Settings) -> TeacherHandle:
    """Train a teacher, or reuse the one with the same resolved recipe, dataset and seed: from the
    local cache, else from the tracking store's model registry (a teacher trained on another
    machine sharing the store), which every newly trained teacher is registered in. Under torchrun
    rank 0 decides, every rank trains (DDP) or loads the same file, and only rank 0 writes it."""
    info = splits.info
    key = teacher_key(recipe, info, settings.seed)
    path = settings.cache_dir / "teachers" / f"{info.name}-{recipe.name}-s{settings.seed}-{key}.pt"
    source: str | None = None
    if distributed.is_main():
        if path.is_file():
            source = "cache"
        elif settings.use_registry:
            source = _fetch_registered_teacher(key, path)
    source = distributed.broadcast_object(source)
    reused = source is not None
    if reused and not path.is_file():
        raise UserError(f"rank {distributed.context().rank} cannot see {path}: under torchrun every rank "
                        f"needs the same --cache-dir (a shared folder across machines)")
    tags = {"stage": "teacher", "dataset": info.name, "teacher": recipe.name, "seed": str(settings.seed),
            "teacher_key": key, "reused": str(reused).lower(), **({"reused_from": source} if source else {})}
    state = TrainingState(settings.cache_dir / "state" / f"{path.stem}.state.pt")
    interrupted = _interrupted_run(state, settings) if not reused else None
    with tracking.tracked_run(f"teacher {recipe.name}", nested=True, tags=tags, resume_run_id=interrupted) as run:
        if interrupted is None:
            tracking.log_params("teacher", resolved_teacher(recipe, info))
        if reused:
            model, payload = load_checkpoint(path, settings.device)
            tracking.set_tag("source_run_id", payload["extra"].get("run_id", ""))
            tracking.log_metrics(payload["extra"].get("final_metrics", {}))
        else:
            state.extra = {"run_id": run.info.run_id}
            model = _train_teacher(recipe, splits, settings, state)
            history = model.history  # type: ignore[attr-defined]
            if distributed.is_main():
                save_checkpoint(path, model, kind="teacher", model_name=recipe.model, dataset=info.name,
                                recipe=resolved_teacher(recipe, info), seed=settings.seed,
                                extra={"run_id": run.info.run_id, "final_metrics": history[-1]})
            distributed.barrier()  # the file exists for every rank from here on
            tracking.log_file(path, "checkpoint")
            version = None
            if settings.use_registry:
                version = tracking.register_teacher(
                    tracking.registered_teacher_name(info.name, recipe.name), run.info.run_id,
                    f"checkpoint/{path.name}", key,
                    {"seed": str(settings.seed), "dataset": info.name, "git_commit": tracking.git_commit()})
            if version is not None:
                tracking.set_tag("registered_version", version)
            state.clear()
    return TeacherHandle(model, key, path, reused, run.info.run_id, source)


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
        found = tracking.find_registered_teacher(key, Path(tmp))
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
    return "registry"


def _train_teacher(recipe: TeacherRecipe, splits: Splits, settings: Settings,
                   state: TrainingState | None = None) -> Classifier:
    info = splits.info
    model = initial_model(recipe.model, info, settings.seed, "teacher", settings.device)
    eps, step = teacher_eps(recipe, info), teacher_step_size(recipe, info)
    reach_warning(f"teacher {recipe.name}: training PGD", recipe.attack_steps, step, eps)
    ctx = TrainContext(eps=eps, step_size=step, steps=recipe.attack_steps,
                       generator=private_generator(rank_stream(settings.seed, "teacher", "attack"), settings.device),
                       pairing_weight=recipe.pairing_weight, alpha=recipe.alpha, beta=recipe.beta)
    objective = OBJECTIVES.get(recipe.objective)
    history = fit(model, recipe.training_split(splits.train), recipe, lambda m, idx, x, y: objective(m, x, y, ctx),
                  seed=stream_seed(settings.seed, "teacher", "order"), desc=f"teacher {recipe.name}",
                  validate=_validator(eps, recipe.attack_steps, step, splits.val,
                                      stream_seed(settings.seed, "teacher", "validation")),
                  on_epoch_end=lambda epoch, metrics: tracking.log_metrics(metrics, step=epoch),
                  progress=settings.progress, state=_with_generators(state, {"attack": ctx.generator}),
                  resume=settings.resume)
    model.history = history  # type: ignore[attr-defined]
    return model


def _with_generators(state: TrainingState | None, generators: dict[str, torch.Generator]) -> TrainingState | None:
    if state is not None:
        state.generators.update(generators)
    return state


class TeacherTargets:
    """The (perturbed) teacher logits a student learns from. Without augmentation the teacher's
    logits are computed once (eval mode) and perturbed afresh each epoch; with augmentation the
    batch is augmented and the teacher is run on that same view, then perturbed (SPEC section 3)."""

    def __init__(self, teacher: nn.Module, train: Split, recipe: StudentRecipe, perturbation, seed: int,
                 name: str = "teacher"):
        self.teacher, self.recipe, self.perturbation = teacher, recipe, perturbation
        self.augment = AUGMENTATIONS.get(recipe.augment)
        # cached logits are perturbed whole, identically on every rank; per-view logits per rank
        perturb_seed = (stream_seed(seed, "student", "perturb") if self.augment is None
                        else rank_stream(seed, "student", "perturb"))
        self.generator = private_generator(perturb_seed, train.x.device)
        self.augment_generator = private_generator(rank_stream(seed, "student", "augment"), train.x.device)
        self.cached = None if self.augment is not None else distributed.map_rows(
            lambda rows: logits_of(teacher, rows), train.x)  # each rank computes its share
        if self.cached is not None:  # gathered on every rank: every rank stops alike
            check_finite(self.cached, f"teacher '{name}' gives non-finite logits on the training images")
        self.current: torch.Tensor | None = None

    def new_epoch(self, epoch: int) -> None:  # a fresh perturbation each epoch (matters for shuffle)
        if self.cached is not None:
            self.current = self.perturbation(self.cached, self.generator, self.recipe.temperature)

    def batch(self, idx: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.augment is None:
            assert self.current is not None
            return x, self.current[idx]
        view = self.augment(x, self.augment_generator)
        return view, self.perturbation(logits_of(self.teacher, view), self.generator, self.recipe.temperature)


def resolved_student(recipe: StudentRecipe, perturb: str, info: DatasetInfo | None = None) -> dict[str, Any]:
    values = to_dict(recipe)
    values["perturb"] = perturb
    if recipe.method in ADVERSARIAL_INPUTS:
        values["inputs"] = (f"ADVERSARIAL examples of the student ({recipe.method}: a robust-distillation "
                            f"baseline, not clean-only distillation)")
        if info is not None:
            values["eps"] = info.eps if recipe.eps is None else recipe.eps
            values["attack_step_size"] = (recipe.attack_step_size if recipe.attack_step_size is not None
                                          else info.step_for(values["eps"]))
    else:
        values["inputs"] = "clean training inputs only" + ("" if recipe.augment == "none" else
                                                            f", augmented ({recipe.augment}); teacher run per view")
    if info is not None:
        values["val_attack"] = f"PGD-{STUDENT_VAL_PGD_STEPS}, eps {info.eps:g}, step {info.step_for(info.eps):g}"
    return values


def distill_student(teacher: TeacherHandle, recipe: StudentRecipe, perturb: str, splits: Splits,
                    settings: Settings, teacher_name: str) -> tuple[Classifier, Path]:
    """Distill on clean inputs only from the (perturbed) teacher logits, computed in eval mode:
    once, or per augmented view when the recipe augments."""
    info = splits.info
    perturbation = PERTURBATIONS.get(perturb)
    resolved = resolved_student(recipe, perturb, info)
    tags = {"stage": "student", "dataset": info.name, "teacher": teacher_name, "perturb": perturb,
            "student": recipe.name, "seed": str(settings.seed), "teacher_key": teacher.key,
            "student_inputs": "adversarial" if recipe.method in ADVERSARIAL_INPUTS else "clean"}
    student_key = fingerprint({"teacher": teacher.key, "student": resolved, "seed": settings.seed,
                               "streams": STREAMS_VERSION})
    state = TrainingState(settings.cache_dir / "state" / f"student-{student_key}.state.pt")
    interrupted = _interrupted_run(state, settings)
    with tracking.tracked_run(f"student {recipe.name} <- {teacher_name} [{perturb}]", nested=True, tags=tags,
                              resume_run_id=interrupted) as run:
        if interrupted is None:
            tracking.log_params("student", resolved)
        state.extra = {"run_id": run.info.run_id}
        train = recipe.training_split(splits.train)
        targets = TeacherTargets(teacher.model, train, recipe, perturbation, settings.seed, teacher_name)
        method = STUDENT_METHODS.get(recipe.method)
        eps = info.eps if recipe.eps is None else recipe.eps  # ard / rslad only
        step_size = recipe.attack_step_size if recipe.attack_step_size is not None else info.step_for(eps)
        if recipe.method in ADVERSARIAL_INPUTS:
            reach_warning(f"student {recipe.name}: training PGD", recipe.attack_steps, step_size, eps)
        attack = AttackContext(eps, recipe.attack_steps, step_size,
                               private_generator(rank_stream(settings.seed, "student", "attack"), settings.device))

        def step(model, idx, x, y) -> LossOutput:
            x, target = targets.batch(idx, x)
            return method(model, x, y, target, recipe, attack)

        model = initial_model(recipe.model, info, settings.seed, "student", settings.device)
        history = fit(model, train, recipe, step, seed=stream_seed(settings.seed, "student", "order"),
                      desc=f"student [{perturb}]", on_epoch_start=targets.new_epoch,
                      validate=_validator(info.eps, STUDENT_VAL_PGD_STEPS, info.step_for(info.eps), splits.val,
                                          stream_seed(settings.seed, "student", "validation")),
                      on_epoch_end=lambda epoch, metrics: tracking.log_metrics(metrics, step=epoch),
                      progress=settings.progress, resume=settings.resume,
                      state=_with_generators(state, {"perturb": targets.generator, "augment": targets.augment_generator,
                                                     "student_attack": attack.generator}))
        name = f"{info.name}-{teacher_name}-{perturb}-{recipe.name}-s{settings.seed}-{run.info.run_id[:8]}.pt"
        path = settings.cache_dir / "students" / name
        if distributed.is_main():
            save_checkpoint(path, model, kind="student", model_name=recipe.model, dataset=info.name,
                            recipe=resolved, seed=settings.seed,
                            extra={"run_id": run.info.run_id, "teacher_key": teacher.key,
                                   "final_metrics": history[-1]})
        distributed.barrier()
        tracking.log_file(path, "checkpoint")
        state.clear()
    return model, path


@dataclass
class Analysis:
    """AALP's measurements for one model (SPEC section 5)."""

    consistency: ConsistencyReport
    contributions: torch.Tensor


ANALYSIS_PGD_STEPS = 20


def analyze_model(model: Classifier, test: Split, eps: float, seed: int,
                  steps: int = ANALYSIS_PGD_STEPS, step_size: float | None = None) -> Analysis:
    """Consistent / inconsistent sets under plain PGD-k (last iterate, as the adversarial examples
    of AALP Sec. 2.2; ``step_size`` default 2.5 eps / k, the dataset's step where the caller knows
    the dataset) and the feature contributions of AALP Eq. 5; logged to the active MLflow run as
    metrics and tables."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    with eval_mode(model):
        x_adv = pgd_perturb(model, test.x, test.y, eps=eps, step_size=step_size, steps=steps,
                            generator=private_generator(seed, test.x.device))
    report = consistency_report(model, test.x, test.y, x_adv)
    contributions = feature_contributions(model, test.x, test.y)
    table = report.table()
    tracking.log_metrics({f"consistency/{name}_{key}": value for name, row in table.items()
                          for key, value in row.items()})
    tracking.log_metrics({"features/contribution_mean": contributions.mean().item(),
                          "features/contribution_max": contributions.max().item()})
    tracking.log_table({"set": list(table), **{key: [row[key] for row in table.values()]
                                               for key in next(iter(table.values()))}}, "consistency_table.json")
    return Analysis(report, contributions)


def evaluation_key(model: nn.Module, test: Split, suite: SuiteRecipe, eps: float,
                   step_ratio: float | None = None) -> str:
    """What an evaluation's state file belongs to: the model's weights, the images, the suite, eps,
    the default step size and this rank's place in a torchrun job."""
    import hashlib

    digest = hashlib.sha256()
    for tensor in [*model.state_dict().values(), test.x, test.y]:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    ctx = distributed.context()
    return fingerprint({"data": digest.hexdigest(), "suite": to_dict(suite), "eps": eps,
                        **({} if step_ratio is None else {"step_ratio": step_ratio}),
                        "rank": ctx.rank, "world_size": ctx.world_size})


def dataset_step_ratio(dataset: str) -> float:
    """The dataset's attack step size as a fraction of its eps (SPEC section 1): the default step
    of every attack that takes one, at any radius, unless the suite or recipe sets a step."""
    info = DATASETS.get(dataset)
    return info.step_size / info.eps


def evaluate_model(model: nn.Module, name: str, test: Split, suite: SuiteRecipe, eps: float,
                   settings: Settings, tags: dict[str, str],
                   rows: list[int] | None = None) -> tuple[EvaluationResult, Analysis]:
    """Attack one model with a suite in a child run; log accuracies, intervals, checks, logits and
    the AALP measurements. The evaluation is saved after every attack (and AutoAttack chunk) in
    ``cache_dir/state``; ``--resume`` continues it in the same MLflow run."""
    ratio = dataset_step_ratio(settings.dataset)
    key = evaluation_key(model, test, suite, eps, ratio)
    state = TrainingState(settings.cache_dir / "state" / f"eval-{key}.state.pt")
    interrupted = _interrupted_run(state, settings)
    with tracking.tracked_run(f"eval {name}", nested=True, tags={"stage": "evaluation", **tags},
                              resume_run_id=interrupted) as run:
        if interrupted is None:
            tracking.log_params("suite", {**to_dict(suite), "eps": eps, "n": len(test),
                                          "default_step_size": ratio * eps})
        state.extra = {"run_id": run.info.run_id}
        result = evaluate(model, test, suite, eps, name=name, progress=settings.progress, state=state,
                          resume=settings.resume, step_ratio=ratio)
        result.rows = rows  # one shard of a split evaluation: which test rows these are
        analysis = analyze_model(model, test, eps, suite.seed, step_size=ratio * eps)
        tracking.log_metrics({**result.metrics(), **mean_statistics(logits_of(model, test.x))})
        tracking.log_metrics({f"seconds/{k}": v for k, v in result.seconds.items()})
        failed = [c.name for c in result.checks if not c.passed]
        tracking.set_tag("sanity_checks", "passed" if not failed else "FAILED: " + "; ".join(failed))
        tracking.log_json(result.to_json(), "results.json")
        state.clear()
    return result, analysis


def suite_eps(suite: SuiteRecipe, info: DatasetInfo, override: float | None = None) -> float:
    if override is not None:
        return override
    return info.eps if suite.eps is None else suite.eps
