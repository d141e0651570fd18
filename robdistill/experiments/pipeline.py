"""Commands end to end. Everything the user typed is resolved and validated *before* any MLflow run
starts, so bad input leaves nothing half-written."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from torch import nn

from robdistill.core import distributed

from robdistill.tracking import logged_models, schema
from robdistill.tracking import store as tracking
from robdistill.analysis.logits import logits_of, plot_logit_statistics
from robdistill.analysis.consistency import plot_confidence_scatter, plot_feature_contributions
from robdistill.models.checkpoints import read_checkpoint
from robdistill.data.datasets import DATASETS, Split, Splits, load_dataset
from robdistill.core.errors import UserError
from robdistill.eval.results import EvaluationResult
from robdistill.eval.runner import SuitePlan, eps_sweep, plot_eps_curves, resolve_suite
from robdistill.experiments.specs import RunSpec
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.api import load_recipe
from robdistill.catalog import override_recipe
from robdistill.core.threat import norm_of
from robdistill.config.overrides import Overrides
from robdistill.config.recipes import StudentRecipe, SuiteRecipe, TeacherRecipe, to_dict
from robdistill.eval.tables import failed_checks, results_markdown, results_table, results_table_records
from robdistill.analysis.consistency import Analysis
from robdistill.config.settings import Settings, default_suite
from robdistill.experiments.stages import (TeacherHandle, distill_student, evaluate_model, external_teacher,
                                           log_dataset_input, obtain_teacher)
from robdistill.sources import gate
from robdistill.sources.registry import (SOURCE_CHECKPOINT, SOURCE_RECIPE, LoadedModel, Provenance, SourceOptions,
                                         find_source, is_recipe, load_model)
from robdistill.train.teacher import resolved_teacher

if TYPE_CHECKING:
    from robdistill.experiments.estimate import Estimate

R = TypeVar("R", TeacherRecipe, StudentRecipe, SuiteRecipe)


def check_eps(eps: float | None, norm: str = "linf") -> None:
    """A one-line error unless ``eps`` (when given) is a radius of ``norm`` (L-inf: in [0, 1])."""
    if eps is not None:
        norm_of(norm).check_radius(eps, "--eps")


def with_threat_model(recipe: R | None, threat_model: str | None) -> R | None:
    """``recipe`` in the command's threat model (``Settings.threat_model``), or as it is when the
    command names none."""
    if recipe is None or threat_model is None or recipe.threat_model == threat_model:
        return recipe
    return override_recipe(recipe, threat_model=threat_model)


@dataclass
class Plan:
    """A validated request: recipes, data and suite, ready to run."""

    splits: Splits
    teacher: TeacherRecipe | None = None
    student: StudentRecipe | None = None
    perturb: str | None = None
    suite_plan: SuitePlan | None = None  # the suite resolved for the dataset: radius, default step, attacks
    test_n: int = 0
    external: LoadedModel | None = None  # a teacher loaded from a file, through the integrity gate

    @property
    def suite(self) -> SuiteRecipe | None:
        return None if self.suite_plan is None else self.suite_plan.suite

    @property
    def eps(self) -> float | None:
        return None if self.suite_plan is None else self.suite_plan.eps

    def test(self):
        return self.splits.test.head(self.test_n or None)

    def gate_images(self) -> Split:
        """The test images the integrity gate checks a model on: the evaluated ones, else the first
        ``gate.CLEAN_CHECK_IMAGES`` (a command without attacks)."""
        return self.test() if self.suite is not None else self.splits.test.head(gate.CLEAN_CHECK_IMAGES)

    @property
    def teacher_name(self) -> str:
        """The recipe's name, or an external teacher's label (``robustbench-<Name>``, a file stem)."""
        if self.external is not None:
            return self.external.provenance.label
        assert self.teacher is not None
        return self.teacher.name

    def teacher_tags(self) -> dict[str, str]:
        """An external teacher's provenance tags (a recipe teacher's are known once it is obtained)."""
        if self.external is None:
            return {}
        prov = self.external.provenance
        return schema.teacher_provenance_tags(prov.source, prov.id, prov.sha256)


def load_external(spec: str, plan: Plan, settings: Settings, options: SourceOptions) -> LoadedModel:
    """An external model for the plan's dataset, on the settings' device, through the integrity gate
    on the plan's test images (before any run starts: a bad file writes nothing)."""
    loaded = load_model(spec, plan.splits.info, options, settings.device)
    gate.admit(loaded, plan.gate_images(), plan.splits.info.num_classes, options)
    return loaded


def make_plan(settings: Settings, *, teacher: str | None = None, student: str | None = None,
              perturb: str | None = None, suite: str | None = None, eps: float | None = None,
              n_eval: int | None = None, overrides: Overrides | None = None,
              source: SourceOptions | None = None, with_teacher: bool | None = None) -> Plan:
    """Everything the user named, validated, the data loaded and an external teacher (any
    ``teacher`` that is not a recipe: robdistill.sources) loaded and through the integrity gate.
    ``with_teacher``: whether the suite's attacks will know a teacher (a transfer attack from
    ``"teacher"``); default, whether ``teacher`` is named (a sweep plans its data before its teachers)."""
    overrides = overrides or Overrides()
    source = source or SourceOptions()
    if perturb is not None:
        PERTURBATIONS.get(perturb)
    if n_eval is not None and n_eval < 0:
        raise UserError(f"--n-eval must be >= 0 (0 = the whole test set); got {n_eval}")
    external = teacher is not None and not is_recipe(teacher, source)
    if external and overrides.stage("teacher"):
        raise UserError(f"--set {overrides.first_text('teacher')}: {teacher} is an external teacher, loaded and not "
                        f"trained here; teacher.* overrides apply to recipe teachers only, drop them")
    threat = settings.threat_model
    teacher_recipe = with_threat_model(load_recipe("teacher", teacher, dataset=settings.dataset,
                                                   **overrides.stage("teacher")) if teacher and not external else None, threat)
    student_recipe = with_threat_model(load_recipe("student", student, dataset=settings.dataset,
                                                   **overrides.stage("student")) if student else None, threat)
    suite_recipe = None
    if suite is not None:
        suite_recipe = with_threat_model(load_recipe("suite", suite, **overrides.stage("suite")), threat)
    # the suite resolved for the dataset (its radius checked) before the data is read
    suite_plan = resolve_suite(suite_recipe, DATASETS.get(settings.dataset), eps, "--eps") if suite_recipe else None
    if suite_plan is None:
        check_eps(eps, threat or "linf")
    splits = load_dataset(settings.dataset, settings.data_root, settings.download).to(settings.device)
    plan = Plan(splits, teacher_recipe, student_recipe, perturb, suite_plan)
    if suite_plan is not None:
        plan.test_n = n_eval if n_eval is not None else suite_plan.suite.n_eval
        # build every attack now: bad parameters fail early (a transfer attack from "teacher" gets its
        # teacher at evaluation; a stand-in here, where a teacher is planned)
        knows_teacher = teacher if with_teacher is None else with_teacher
        plan.suite_plan.attacks(surrogates={"teacher": nn.Identity()} if knows_teacher else None)
    if external:
        assert teacher is not None
        plan.external = load_external(teacher, plan, settings, source)
    return plan


def teacher_handle(plan: Plan, settings: Settings) -> TeacherHandle:
    """The plan's teacher: the external one, or the recipe's (trained, or reused from the cache or
    the model registry)."""
    if plan.external is not None:
        return external_teacher(plan.external.model, plan.external.provenance)
    assert plan.teacher is not None
    return obtain_teacher(plan.teacher, plan.splits, settings)


def log_teacher(handle: TeacherHandle, plan: Plan, tags: dict[str, str], seed: int) -> None:
    """The teacher's parameters (a recipe's resolved fields and key, and where it came from) on the
    active run, and its provenance tags on the run and in ``tags`` (for the runs that follow). A
    teacher not trained in this run (reused from the cache or registry, or published) becomes a
    logged model of this run without artifacts (robdistill.tracking.logged_models)."""
    assert handle.provenance is not None
    recipe = resolved_teacher(plan.teacher, plan.splits.info) if plan.teacher is not None else {}
    tracking.log_params("teacher", {"key": handle.key, **recipe, **handle.provenance.params()})
    for key, value in handle.provenance_tags.items():
        tags[key] = value
        tracking.set_tag(key, value)
    if handle.model_id is None:
        handle.model_id = logged_models.log_model(
            schema.teacher_model_name(plan.teacher_name, seed), schema.ROLE_TEACHER, tracking.active_run_id(),
            checkpoint=None, params={"key": handle.key, **recipe, **handle.provenance.params()},
            tags={**tags, **({schema.TAG_REUSED_FROM: handle.source} if handle.source else {})})


@dataclass
class Outcome:
    run_id: str
    tracking_uri: str
    results: dict[str, EvaluationResult] = field(default_factory=dict)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    teacher_reused: bool = False  # found in the cache or the model registry (teacher_source)
    analyses: dict[str, Analysis] = field(default_factory=dict)
    models: dict[str, nn.Module] = field(default_factory=dict)
    test: Split | None = None  # the evaluated test images
    teacher_source: str | None = None
    teacher_provenance: Provenance | None = None  # where the teacher came from (robdistill.sources)
    eps_curves: dict[str, dict[float, EvaluationResult]] = field(default_factory=dict)
    eval_name: str | None = None  # a split evaluation's name (evaluate --shard)

    @property
    def table(self) -> str:
        return results_table(self.results)

    @property
    def experiment_id(self) -> str:
        return tracking.experiment_of(self.run_id)


def _log_comparison(results: dict[str, EvaluationResult], analyses: dict[str, Analysis], models: dict,
                    plan: Plan) -> None:
    """Parent-run summary: prefixed metrics, the results table (also the run's description, in
    Markdown), and the figures (logit statistics,
    AALP's confidence scatter and feature-contribution histograms). Rank 0 only under torchrun."""
    if not distributed.is_main():
        return
    for name, result in results.items():
        tracking.log_metrics(schema.scoped_metrics(name, result.metrics()))
    tracking.log_table(results_table_records(results), schema.RESULTS_TABLE_ARTIFACT)
    tracking.log_json({name: r.to_json() for name, r in results.items()}, schema.RESULTS_ARTIFACT)
    tracking.set_description(results_markdown(results))
    with tracking.scratch_dir() as tmp:
        logits = {name: logits_of(model, plan.test().x) for name, model in models.items()}
        plot_logit_statistics(logits, tmp / "logit_statistics.png",
                              title=f"Logit statistics on {plan.splits.info.name} test")
        tracking.log_file(tmp / "logit_statistics.png")
        plot_confidence_scatter({n: a.consistency for n, a in analyses.items()}, tmp / "confidence_scatter.png")
        tracking.log_file(tmp / "confidence_scatter.png")
        plot_feature_contributions({n: a.contributions for n, a in analyses.items()},
                                   tmp / "feature_contributions.png")
        tracking.log_file(tmp / "feature_contributions.png")


def run_plan(settings: Settings, spec: RunSpec) -> Plan:
    """The plan of a `run` (the same for running it and for estimating it)."""
    plan = make_plan(settings, teacher=spec.teacher, student=spec.student, perturb=spec.perturb,
                     suite=spec.suite_for(settings.dataset), eps=spec.eps, n_eval=spec.n_eval,
                     overrides=spec.overrides, source=spec.source)
    assert plan.student and plan.suite and plan.eps is not None
    return plan


def _kept(found: list, value):
    """``value``, also appended to ``found`` (what a callback computed, for its caller to log)."""
    found.append(value)
    return value


def run_experiment(settings: Settings, spec: RunSpec, *, nested: bool = False,
                   extra_tags: dict[str, str] | None = None,
                   announce: Callable[[Callable[[], Estimate]], None] | None = None) -> Outcome:
    """`robdistill run`: teacher (trained or reused, or an external one: robdistill.sources) ->
    distilled student -> attacks on both, as ``spec`` asks. ``nested``: a child of the active MLflow
    run (one cell of a sweep). ``announce``: called, once every input is checked and the tracking
    store answers, with a function that times batches and returns the estimated duration, before
    anything starts."""
    plan = run_plan(settings, spec)
    perturb, suite, n_eval, overrides = spec.perturb, spec.suite, spec.n_eval, spec.overrides
    evaluate_teacher = spec.evaluate_teacher
    uri = tracking.configure(settings.tracking_uri, settings.experiment)  # an unreachable store: refused first
    estimated: list[Estimate] = []  # what the announced estimate said, logged on the run
    if announce is not None:
        announce(lambda: _kept(estimated, experiment_estimate(plan, settings, perturb, evaluate_teacher)))
    teacher_name = plan.teacher_name
    tags = schema.run_tags(settings.dataset, teacher_name, perturb, plan.student.name, settings.seed,
                           plan.suite.name, {**(extra_tags or {}), **plan.teacher_tags(),
                                             schema.TAG_THREAT_MODEL: plan.suite.threat_model})
    variant = ([f"suite {plan.suite.name}"] if suite is not None and suite != default_suite(settings.dataset) else []) \
        + ([f"n {n_eval}"] if n_eval is not None else []) + list(overrides)
    name = schema.pipeline_run_name(teacher_name, perturb, settings.seed, plan.student.name, plan.suite.threat_model,
                                    variant)
    with tracking.tracked_run(name, nested=nested, tags=schema.stage_tags(schema.STAGE_RUN, tags)) as parent:
        tracking.log_params("", {"dataset": settings.dataset, "seed": settings.seed, "perturb": perturb,
                                 "threat_model": plan.suite.threat_model, "eps": plan.eps, "n_eval": len(plan.test())})
        if estimated:
            tracking.log_metrics(schema.estimate_metrics(estimated[0].low, estimated[0].high))
        log_dataset_input(plan.splits, "training")
        log_dataset_input(plan.splits, "test", plan.test())
        tracking.log_params("student", to_dict(plan.student))
        tracking.log_params("suite", to_dict(plan.suite))
        handle = teacher_handle(plan, settings)
        log_teacher(handle, plan, tags, settings.seed)
        student_model, student_path, student_model_id = distill_student(handle, plan.student, perturb, plan.splits,
                                                                        settings, teacher_name)
        models = ({schema.ROLE_TEACHER: handle.model, schema.ROLE_STUDENT: student_model} if evaluate_teacher
                  else {schema.ROLE_STUDENT: student_model})
        model_ids = {schema.ROLE_TEACHER: handle.model_id, schema.ROLE_STUDENT: student_model_id}
        evaluated_images = replace(plan.splits, test=plan.test())
        evaluated = {role: evaluate_model(model, role, evaluated_images, plan.suite_plan, settings,
                                          schema.role_tags(tags, role), model_id=model_ids[role],
                                          run_name=schema.role_evaluation_run_name(
                                              role, teacher_name, perturb, settings.seed, plan.student.name),
                                          surrogates={"teacher": handle.model},
                                          subject="teacher" if role == schema.ROLE_TEACHER else perturb)
                     for role, model in models.items()}
        results = {role: result for role, (result, _) in evaluated.items()}
        analyses = {role: analysis for role, (_, analysis) in evaluated.items()}
        _log_comparison(results, analyses, models, plan)
    return Outcome(parent.info.run_id, uri, results, {"teacher": handle.path, "student": student_path},
                   handle.reused, analyses, {"teacher": handle.model, "student": student_model}, plan.test(),
                   teacher_source=handle.source, teacher_provenance=handle.provenance)


def estimate_run(settings: Settings, spec: RunSpec, *, on_start: Callable[[], None] | None = None) -> Estimate:
    """How long :func:`run_experiment` of ``spec`` would take here (nothing is trained, logged or
    written: robdistill.experiments.estimate). ``on_start``: called once every input is checked,
    before batches are timed."""
    plan = run_plan(settings, spec)
    if on_start is not None:
        on_start()
    return experiment_estimate(plan, settings, spec.perturb, spec.evaluate_teacher)


def experiment_estimate(plan: Plan, settings: Settings, perturb: str, evaluate_teacher: bool = True) -> Estimate:
    """The planned `run`'s stages, timed on batches: the teacher's training (unless it is cached
    here or published), the student's distillation, the suite on both (an upper bound)."""
    from robdistill.experiments import estimate

    with estimate.preserved_rng(settings.device):
        return estimate.Estimate(_timed_stages(plan, settings, perturb, evaluate_teacher))


def _timed_stages(plan: Plan, settings: Settings, perturb: str, evaluate_teacher: bool) -> list:
    from robdistill.experiments import estimate
    from robdistill.train.loop import initial_model

    assert plan.student and plan.suite and plan.eps is not None
    info = plan.splits.info
    stages = []
    teacher_model = _estimated_teacher(plan, settings)
    if plan.external is None and not teacher_is_cached(plan, settings):
        stages.append(estimate.teacher_estimate(plan.teacher, plan.splits, settings.seed, settings.device))
    stages.append(estimate.student_estimate(plan.student, perturb, teacher_model, plan.splits, settings.seed,
                                            settings.device))
    student_model = initial_model(plan.student.model, info, settings.seed, "student", settings.device)
    roles = {"teacher": teacher_model, "student": student_model} if evaluate_teacher else {"student": student_model}
    for role, model in roles.items():
        suite = plan.suite.for_subject("teacher" if role == "teacher" else perturb)
        stages.append(estimate.attacks_estimate(role, model, suite, plan.eps, len(plan.test()), info,
                                                settings.device, surrogates={"teacher": teacher_model}))
    return stages


def _estimated_teacher(plan: Plan, settings: Settings) -> nn.Module:
    """The teacher an estimate times: the external one, or the recipe's initial model (its cost per
    image is the trained one's)."""
    from robdistill.train.loop import initial_model

    if plan.external is not None:
        return plan.external.model
    assert plan.teacher is not None
    return initial_model(plan.teacher.model, plan.splits.info, settings.seed, "teacher", settings.device)


def student_attacks_estimate(plan: Plan, settings: Settings, perturb: str):
    """The suite's attacks on a student of ``perturb`` (the estimate's upper bound as
    :func:`experiment_estimate` times it), for a sweep whose suite runs some attacks on some
    perturbations only."""
    from robdistill.experiments import estimate
    from robdistill.train.loop import initial_model

    assert plan.student and plan.suite and plan.eps is not None
    info = plan.splits.info
    with estimate.preserved_rng(settings.device):
        teacher = _estimated_teacher(plan, settings)
        student = initial_model(plan.student.model, info, settings.seed, "student", settings.device)
        return estimate.attacks_estimate("student", student, plan.suite.for_subject(perturb), plan.eps,
                                         len(plan.test()), info, settings.device, surrogates={"teacher": teacher})


def teacher_is_cached(plan: Plan, settings: Settings) -> bool:
    """Whether the plan's recipe teacher is in the local cache for ``settings.seed`` (an external
    teacher counts as cached: it is never trained)."""
    from robdistill.experiments.stages import teacher_cache_path

    return plan.teacher is None or teacher_cache_path(plan.teacher, plan.splits.info, settings).is_file()


def train_teacher_only(settings: Settings, teacher: str, overrides: Overrides) -> Outcome:
    if not is_recipe(teacher):
        raise UserError(f"train-teacher trains recipes, and {teacher} is an external model; pass it as --teacher "
                        f"of run or distill")
    plan = make_plan(settings, teacher=teacher, overrides=overrides)
    assert plan.teacher
    uri = tracking.configure(settings.tracking_uri, settings.experiment)
    handle = obtain_teacher(plan.teacher, plan.splits, settings)
    return Outcome(handle.run_id, uri, checkpoints={"teacher": handle.path}, teacher_reused=handle.reused,
                   teacher_source=handle.source, teacher_provenance=handle.provenance)


def distill_only(settings: Settings, teacher: str, perturb: str, student: str,
                 overrides: Overrides, source: SourceOptions | None = None) -> Outcome:
    plan = make_plan(settings, teacher=teacher, student=student, perturb=perturb, overrides=overrides, source=source)
    assert plan.student
    uri = tracking.configure(settings.tracking_uri, settings.experiment)
    teacher_name = plan.teacher_name
    name = schema.distill_run_name(teacher_name, perturb, settings.seed, plan.student.name)
    tags = {**schema.distill_tags(settings.dataset), **plan.teacher_tags()}
    with tracking.tracked_run(name, tags=tags) as parent:
        log_dataset_input(plan.splits, "training")
        handle = teacher_handle(plan, settings)
        log_teacher(handle, plan, tags, settings.seed)
        _, path, _ = distill_student(handle, plan.student, perturb, plan.splits, settings, teacher_name)
    return Outcome(parent.info.run_id, uri, checkpoints={"teacher": handle.path, "student": path},
                   teacher_reused=handle.reused, teacher_source=handle.source, teacher_provenance=handle.provenance)


def _evaluation_dataset(settings: Settings, specs: list[str], options: list[SourceOptions]) -> str:
    """The dataset of an evaluation: robdistill checkpoints name theirs (all the same one); with any
    other model among them, ``--dataset``."""
    kinds = [find_source(spec, option).name for spec, option in zip(specs, options)]
    recipes = [spec for spec, kind in zip(specs, kinds) if kind == SOURCE_RECIPE]
    if recipes:
        raise UserError(f"evaluate takes models, and '{recipes[0]}' is not a file: pass a checkpoint, "
                        f"robustbench:<Name>, a TorchScript file, or a state dict with --model")
    if any(kind != SOURCE_CHECKPOINT for kind in kinds):
        return settings.dataset
    datasets = {read_checkpoint(Path(spec))["dataset"] for spec in specs}
    if len(datasets) != 1:
        raise UserError(f"checkpoints come from different datasets ({', '.join(sorted(datasets))}); "
                        f"evaluate them separately")
    return datasets.pop()


def evaluate_checkpoints(settings: Settings, checkpoints: list[str] | list[Path], suite: str | None,
                         eps: float | None, n_eval: int | None, overrides: Overrides,
                         eps_values: list[float] | None = None, shard: tuple[int, int] | None = None,
                         sources: list[SourceOptions] | None = None) -> Outcome:
    """`robdistill evaluate`: attack models (robdistill checkpoints, ``robustbench:<Name>``,
    TorchScript files, state dicts with ``--model``: robdistill.sources; ``sources`` holds each
    one's options) with a suite, each through the integrity gate first; with ``eps_values`` also
    the whole suite at every radius (table and curves). With ``shard`` (i, n) only test rows i-1,
    i-1+n, ... are attacked and tagged with an ``eval_name`` shared by every shard, for
    :func:`merged_evaluation` to put back together."""
    if shard is not None and eps_values:
        raise UserError("--shard and --eps-sweep do not go together; split the eps sweep by running one "
                        "--eps per machine")
    specs = [str(spec) for spec in checkpoints]
    options = sources or [SourceOptions()] * len(specs)
    dataset = _evaluation_dataset(settings, specs, options)
    settings = Settings(**{**vars(settings), "dataset": dataset})
    plan = make_plan(settings, suite=suite or default_suite(dataset), eps=eps, n_eval=n_eval,
                     overrides=overrides)
    assert plan.suite and plan.eps is not None
    for value in eps_values or []:
        plan.suite.norm.check_radius(value, "every --eps-sweep radius")
    loaded = [load_external(spec, plan, settings, option) for spec, option in zip(specs, options)]
    uri = tracking.configure(settings.tracking_uri, settings.experiment)
    names = [_model_name(item.provenance) for item in loaded]
    models = {name: item for name, item in zip(names, loaded)}
    test, rows, shard_tags = plan.test(), None, {}
    if shard is not None:
        if shard[1] > len(test):
            raise UserError(f"--shard {shard[0]}/{shard[1]}: more shards than the {len(test)} test images; "
                            f"use at most {len(test)} shards")
        rows = list(range(shard[0] - 1, len(test), shard[1]))
        test = Split(test.x[rows], test.y[rows])
        shard_tags = schema.eval_shard_tags(evaluation_name([item.provenance for item in loaded], plan), *shard)
    with tracking.tracked_run(schema.evaluate_run_name(dataset), tags=schema.evaluate_tags(dataset, shard_tags)) as parent:
        log_dataset_input(plan.splits, "test", test)
        evaluated = {}
        for name, item in models.items():
            prov = item.provenance
            tags = {**schema.checkpoint_evaluation_tags(dataset, name, shard_tags),
                    **schema.model_provenance_tags(prov.source, prov.id, prov.sha256)}
            evaluated[name] = evaluate_model(item.model, name, replace(plan.splits, test=test), plan.suite_plan,
                                             settings, tags, rows, prov)
        results = {name: result for name, (result, _) in evaluated.items()}
        analyses = {name: analysis for name, (_, analysis) in evaluated.items()}
        _log_comparison(results, analyses, {n: item.model for n, item in models.items()}, plan)
        curves = {name: eps_sweep(item.model, plan.test(), plan.suite, sorted(eps_values), name=name,
                                  progress=settings.progress,
                                  step_ratio=plan.suite_plan.step_ratio)
                  for name, item in models.items()} if eps_values else {}
        if curves:
            _log_eps_curves(curves, dataset)
    return Outcome(parent.info.run_id, uri, results, analyses=analyses, eps_curves=curves,
                   eval_name=shard_tags.get(schema.TAG_EVAL_NAME))


def _model_name(provenance: Provenance) -> str:
    """How `evaluate` names a model (its ``model`` tag, run name and metric scope): ``<kind>:<file
    stem>``, the kind a robdistill checkpoint's (teacher, student) or the source's."""
    kind = provenance.details.get("kind") or provenance.source
    return schema.checkpoint_model_name(str(kind), provenance.path or provenance.id)


def evaluation_name(models: list[Provenance], plan: Plan) -> str:
    """The same on every machine that splits one evaluation: the models' file hashes, suite, eps, n."""
    from robdistill.config.recipes import fingerprint, key_fields

    digests = [prov.sha256 for prov in models]
    return "eval-" + fingerprint({"checkpoints": digests, "suite": key_fields(to_dict(plan.suite)), "eps": plan.eps,
                                  "n": len(plan.test())})


def merged_evaluation(tracking_uri: str | None, experiment: str, eval_name: str) -> dict[str, EvaluationResult]:
    """Every model of a split evaluation, merged from the per-sample flags its shards logged (the
    newest finished run of each shard); a missing shard is an error naming it."""
    import tempfile

    from robdistill.tracking.results import load_results
    from robdistill.tracking.search import find_runs
    from robdistill.eval.results import merge_shards

    runs = find_runs(tracking_uri, experiment, schema.STAGE_EVALUATION, None, {schema.TAG_EVAL_NAME: eval_name})
    newest: dict[tuple[str, str], object] = {}
    for run in runs:  # newest first
        key = (run.data.tags.get(schema.TAG_MODEL, ""), run.data.tags.get(schema.TAG_SHARD, ""))
        if run.info.status == "FINISHED" and key not in newest:
            newest[key] = run
    if not newest:
        raise UserError(f"no finished evaluations tagged {schema.TAG_EVAL_NAME}={eval_name} in experiment "
                        f"'{experiment}'")
    merged = {}
    with tempfile.TemporaryDirectory(prefix="robdistill-eval-") as tmp:
        for model in sorted({m for m, _ in newest}):
            shards = {s: run for (m, s), run in newest.items() if m == model}  # newest run first
            count = schema.parse_shard_value(next(iter(shards)))[1]  # the split of the newest run; others ignored
            wanted = [schema.shard_value(i, count) for i in range(1, count + 1)]
            shards = {s: run for s, run in shards.items() if s in wanted}
            missing = [s for s in wanted if s not in shards]
            if missing:
                raise UserError(f"{model}: shard {', '.join(missing)} of {eval_name} has not finished; run "
                                f"`robdistill evaluate ... --shard {missing[0]}` with the same arguments")
            merged[model] = merge_shards([load_results(run, tmp) for _, run in sorted(shards.items())])
    return merged


def _log_eps_curves(curves: dict[str, dict[float, EvaluationResult]], dataset: str) -> None:
    records: dict[str, list] = {"model": [], "norm": [], "eps": [], "metric": [], "accuracy": [], "ci_low": [],
                                "ci_high": []}
    for name, by_eps in curves.items():
        for eps, result in by_eps.items():
            for key, p in result.accuracies().items():
                for column, value in zip(records, [name, result.norm, eps, key, p.value, p.low, p.high]):
                    records[column].append(value)
    tracking.log_table(records, "eps_sweep.json")
    with tracking.scratch_dir() as tmp:
        plot_eps_curves(curves, tmp / "eps_curves.png", title=f"Accuracy versus eps on {dataset}")
        tracking.log_file(tmp / "eps_curves.png")


__all__ = ["run_experiment", "train_teacher_only", "distill_only", "evaluate_checkpoints", "merged_evaluation",
           "failed_checks", "Settings", "default_suite"]
