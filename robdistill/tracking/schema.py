"""The MLflow layout, spelled once: the run names, the run tags (keys, values, and which stage
carries which), the accuracy metric names, the artifact names and the names of the checkpoints
the runs log. Everything that writes runs builds its tags here, everything that reads them back
(``robdistill compare``, ``sweep-report``, ``evaluate-report``, study scripts) reads them through
here (:func:`identity`) -- never by parsing a run's name. (An `evaluate` evaluation's tags name only
its checkpoint; :func:`parse_checkpoint_name` is the inverse of the names spelled here.)

Runs and their tags, by stage (the ``stage`` tag)::

    run         one `robdistill run` (or sweep cell): dataset teacher perturb student seed suite
                teacher_source teacher_id teacher_sha256 [sweep_id sweep_name shard] [regress]
      teacher     dataset teacher seed teacher_key reused [reused_from] [source_run_id] [registered_version]
                  (a recipe teacher only: an external one is loaded, not trained)
      student     dataset teacher perturb student seed teacher_key student_inputs teacher_source teacher_id
                  teacher_sha256
      evaluation  the run's tags + role (teacher | student) + sanity_checks
    distill     `robdistill distill`: dataset teacher_source teacher_id teacher_sha256
    evaluate    `robdistill evaluate`: dataset [eval_name shard]
      evaluation  dataset model model_source model_id model_sha256 [eval_name shard] + sanity_checks
    sweep       `robdistill sweep`: dataset teachers perturbs seeds student suite sweep_name [shard]

Every run also carries ``git_commit``, ``command`` and ``versions``; a resumed one ``resumed``. A teacher's model-registry
version (:mod:`robdistill.tracking.model_registry`): teacher_key seed dataset git_commit."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from robdistill.core import metrics as _metrics

# -- accuracy metrics: spelled in robdistill.core.metrics, below tracking, so that the evaluation
# names them without importing tracking; part of the schema all the same --------------------------
ACCURACY_METRICS = _metrics.ACCURACY_METRICS  # ("clean", "pgd", "cw", "autoattack", "worst")
CI_LOW_SUFFIX = _metrics.CI_LOW_SUFFIX
CI_HIGH_SUFFIX = _metrics.CI_HIGH_SUFFIX
accuracy_prefix = _metrics.accuracy_prefix                # ("teacher") -> "teacher/acc/"
accuracy_metric = _metrics.accuracy_metric                # ("pgd", "teacher") -> "teacher/acc/pgd"
accuracy_metric_names = _metrics.accuracy_metric_names    # ("pgd") -> ("acc/pgd", "acc/pgd_ci_low", "acc/pgd_ci_high")
interval_metric_names = _metrics.interval_metric_names    # ("acc/pgd") -> ("acc/pgd_ci_low", "acc/pgd_ci_high")
is_interval_metric = _metrics.is_interval_metric
scoped_metric = _metrics.scoped_metric                    # ("teacher", "acc/pgd") -> "teacher/acc/pgd"
scoped_metrics = _metrics.scoped_metrics

# -- stages: the value of the ``stage`` tag -------------------------------------------------------
STAGE_RUN = "run"
STAGE_TEACHER = "teacher"
STAGE_STUDENT = "student"
STAGE_EVALUATION = "evaluation"
STAGE_DISTILL = "distill"
STAGE_EVALUATE = "evaluate"
STAGE_SWEEP = "sweep"
STAGES = (STAGE_RUN, STAGE_TEACHER, STAGE_STUDENT, STAGE_EVALUATION, STAGE_DISTILL, STAGE_EVALUATE, STAGE_SWEEP)

# -- roles: the value of the ``role`` tag of a run's evaluations ----------------------------------
ROLE_TEACHER = "teacher"
ROLE_STUDENT = "student"
ROLES = (ROLE_TEACHER, ROLE_STUDENT)

# -- tag keys ------------------------------------------------------------------------------------
TAG_STAGE = "stage"
TAG_DATASET = "dataset"
TAG_TEACHER = "teacher"
TAG_PERTURB = "perturb"
TAG_STUDENT = "student"
TAG_SEED = "seed"
TAG_SUITE = "suite"
TAG_THREAT_MODEL = "threat_model"  # the norm every attack of the run used (linf, l2); its radius is the eps param
TAG_ROLE = "role"
TAG_MODEL = "model"                  # an `evaluate` evaluation: <kind>:<checkpoint stem>
TAG_TEACHER_KEY = "teacher_key"      # the teacher's recipe hash (also on its model-registry versions)
TAG_REUSED = "reused"
TAG_REUSED_FROM = "reused_from"
TAG_SOURCE_RUN_ID = "source_run_id"
TAG_REGISTERED_VERSION = "registered_version"
TAG_STUDENT_INPUTS = "student_inputs"
TAG_SANITY_CHECKS = "sanity_checks"
TAG_EVAL_NAME = "eval_name"
TAG_SHARD = "shard"
TAG_SWEEP_ID = "sweep_id"
TAG_SWEEP_NAME = "sweep_name"
TAG_REGRESS = "regress"
TAG_GIT_COMMIT = "git_commit"
TAG_RESUMED = "resumed"
TAG_COMMAND = "command"            # the command line of the process that started the run
TAG_VERSIONS = "versions"          # robdistill, Python, torch and MLflow versions of that process
TAG_THREADS = "threads"  # torch intra-op threads of the process (`--threads`; numbers depend on it)
TAG_PARENT_RUN_ID = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"     # a run's description in the UI: a parent's results in Markdown
# where a teacher (a run's, a distillation's) or an evaluated model came from (robdistill.sources)
TAG_TEACHER_SOURCE = "teacher_source"  # recipe | checkpoint | robustbench | torchscript | state-dict
TAG_TEACHER_ID = "teacher_id"          # the recipe name, robustbench:<Name>, or the file as named
TAG_TEACHER_SHA256 = "teacher_sha256"  # the SHA-256 of the teacher's file (a recipe teacher's checkpoint)
TAG_MODEL_SOURCE = "model_source"      # the same for an `evaluate` evaluation's model
TAG_MODEL_ID = "model_id"
TAG_MODEL_SHA256 = "model_sha256"
# a sweep parent's grid (tags and params)
TAG_TEACHERS = "teachers"
TAG_PERTURBS = "perturbs"
TAG_SEEDS = "seeds"

# the tags that identify a run in a table (``robdistill compare``)
IDENTITY_TAGS = (TAG_DATASET, TAG_TEACHER, TAG_PERTURB, TAG_SEED, TAG_SUITE)

# -- tag values ----------------------------------------------------------------------------------
TRUE = "true"
FALSE = "false"
SOURCE_CACHE = "cache"          # reused_from
SOURCE_REGISTRY = "registry"
INPUTS_ADVERSARIAL = "adversarial"  # student_inputs
INPUTS_CLEAN = "clean"
CHECKS_PASSED = "passed"         # sanity_checks

# -- artifacts -----------------------------------------------------------------------------------
RESULTS_ARTIFACT = _metrics.RESULTS_ARTIFACT  # an evaluation's EvaluationResult.to_json(); a parent's {name: ...}
RESULTS_TABLE_ARTIFACT = "results_table.json"
CHECKPOINT_ARTIFACT_DIR = "checkpoint"
SECONDS_PREFIX = "seconds/"


def flag(value: bool) -> str:
    """A boolean tag value: ``true`` / ``false``."""
    return TRUE if value else FALSE


def shard_value(index: int, count: int) -> str:
    """The ``shard`` tag value of shard ``index`` of ``count``: ``i/n``."""
    return f"{index}/{count}"


def parse_shard_value(value: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3)."""
    index, _, count = value.partition("/")
    return int(index), int(count)


def stage_tags(stage: str, tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """``tags`` with the ``stage`` tag."""
    return {TAG_STAGE: stage, **(tags or {})}


def run_tags(dataset: str, teacher: str, perturb: str, student: str, seed: int, suite: str,
             extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What identifies one teacher -> student cell (no stage): carried by the `run` and by both of
    its evaluations; ``extra`` (a sweep's :func:`sweep_cell_tags`, :func:`regress_tags`) too."""
    return {TAG_DATASET: dataset, TAG_TEACHER: teacher, TAG_PERTURB: perturb, TAG_STUDENT: student,
            TAG_SEED: str(seed), TAG_SUITE: suite, **(extra or {})}


def role_tags(tags: Mapping[str, str], role: str) -> dict[str, str]:
    """A run's tags for the evaluation of its ``role`` model (teacher or student)."""
    return {**tags, TAG_ROLE: role}


def teacher_tags(dataset: str, teacher: str, seed: int, key: str, source: str | None) -> dict[str, str]:
    """A teacher's run: ``source`` is where a reused teacher came from (``cache``, ``registry``),
    None for one trained in this run."""
    return {TAG_STAGE: STAGE_TEACHER, TAG_DATASET: dataset, TAG_TEACHER: teacher, TAG_SEED: str(seed),
            TAG_TEACHER_KEY: key, TAG_REUSED: flag(source is not None),
            **({TAG_REUSED_FROM: source} if source else {})}


def student_tags(dataset: str, teacher: str, perturb: str, student: str, seed: int, teacher_key: str,
                 adversarial_inputs: bool) -> dict[str, str]:
    """A distillation's run."""
    return {TAG_STAGE: STAGE_STUDENT, TAG_DATASET: dataset, TAG_TEACHER: teacher, TAG_PERTURB: perturb,
            TAG_STUDENT: student, TAG_SEED: str(seed), TAG_TEACHER_KEY: teacher_key,
            TAG_STUDENT_INPUTS: INPUTS_ADVERSARIAL if adversarial_inputs else INPUTS_CLEAN}


def teacher_provenance_tags(source: str, source_id: str, sha256: str) -> dict[str, str]:
    """Where a teacher came from: carried by the `run` / `distill` run, its student and evaluations."""
    return {TAG_TEACHER_SOURCE: source, TAG_TEACHER_ID: source_id, TAG_TEACHER_SHA256: sha256}


def model_provenance_tags(source: str, source_id: str, sha256: str) -> dict[str, str]:
    """Where an `evaluate` evaluation's model came from."""
    return {TAG_MODEL_SOURCE: source, TAG_MODEL_ID: source_id, TAG_MODEL_SHA256: sha256}


def evaluation_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """An evaluation's run: the ``tags`` its caller identifies the model with (:func:`role_tags`,
    :func:`checkpoint_evaluation_tags`, or a study's own)."""
    return stage_tags(STAGE_EVALUATION, tags)


def sanity_checks_value(failed: Iterable[str]) -> str:
    """The ``sanity_checks`` tag value: ``passed``, or ``FAILED: <name>; <name>``."""
    failed = list(failed)
    return CHECKS_PASSED if not failed else "FAILED: " + "; ".join(failed)


def distill_tags(dataset: str) -> dict[str, str]:
    """A `robdistill distill` parent run."""
    return {TAG_STAGE: STAGE_DISTILL, TAG_DATASET: dataset}


def eval_shard_tags(eval_name: str, index: int, count: int) -> dict[str, str]:
    """What every run of shard ``index`` of ``count`` of a split evaluation carries."""
    return {TAG_EVAL_NAME: eval_name, TAG_SHARD: shard_value(index, count)}


def evaluate_tags(dataset: str, shard_tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """A `robdistill evaluate` parent run."""
    return {TAG_STAGE: STAGE_EVALUATE, TAG_DATASET: dataset, **(shard_tags or {})}


def checkpoint_evaluation_tags(dataset: str, model: str, shard_tags: Mapping[str, str] | None = None
                               ) -> dict[str, str]:
    """The identifying tags of a saved checkpoint's evaluation (``model``: :func:`checkpoint_model_name`)."""
    return {TAG_DATASET: dataset, TAG_MODEL: model, **(shard_tags or {})}


def sweep_grid(teachers: Iterable[str], perturbs: Iterable[str], seeds: Iterable[int], student: str,
               suite: str) -> dict[str, str]:
    """A sweep's grid: tags and params of its parent run."""
    return {TAG_TEACHERS: ",".join(teachers), TAG_PERTURBS: ",".join(perturbs),
            TAG_SEEDS: ",".join(map(str, seeds)), TAG_STUDENT: student, TAG_SUITE: suite}


def sweep_shard_tags(sweep_name: str, shard: tuple[int, int] | None) -> dict[str, str]:
    """What every run of a sweep (or of one shard of it) carries."""
    return {TAG_SWEEP_NAME: sweep_name, **({TAG_SHARD: shard_value(*shard)} if shard else {})}


def sweep_tags(dataset: str, grid: Mapping[str, str], shard_tags: Mapping[str, str]) -> dict[str, str]:
    """A sweep's parent run."""
    return {TAG_STAGE: STAGE_SWEEP, TAG_DATASET: dataset, **grid, **shard_tags}


def sweep_cell_tags(sweep_id: str, shard_tags: Mapping[str, str]) -> dict[str, str]:
    """The extra tags of a sweep cell's `run` and its evaluations (``sweep_id``: the parent's run id)."""
    return {TAG_SWEEP_ID: sweep_id, **shard_tags}


def regress_tags() -> dict[str, str]:
    """The extra tags of the runs of `robdistill regress`."""
    return {TAG_REGRESS: TRUE}


def resumed_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags set on a run reopened by ``--resume``."""
    return {**tags, TAG_RESUMED: TRUE}


# -- run names: the distinguishing parts first (teacher, perturbation, seed), so that a name cut
# short in the UI's runs table still tells runs apart; never parsed (identity is in the tags) ----

RUN_NAME_SEPARATOR = " · "
DEFAULT_STUDENT = "default"  # the student recipe a name leaves out


def cell_name(teacher: str, perturb: str, seed: int, student: str = DEFAULT_STUDENT) -> str:
    """``alp · nonmax-shuffle · s0`` (`` · <student>`` after it for a student recipe other than default)."""
    parts = [teacher, perturb, f"s{seed}"] + ([student] if student != DEFAULT_STUDENT else [])
    return RUN_NAME_SEPARATOR.join(parts)


def pipeline_run_name(teacher: str, perturb: str, seed: int, student: str = DEFAULT_STUDENT,
                      threat_model: str = "linf", variant: Sequence[str] = ()) -> str:
    """A `run`: ``alp · nonmax-shuffle · s0``; after it `` · l2`` under a threat model other than
    linf, and what sets the run apart from the default one (``variant``: a suite other than the
    dataset's, ``--n-eval``, ``--set`` overrides) as `` · suite smoke, n 24, teacher.epochs=2``, so a
    smoke test and a full run of the same cell are told apart in the runs view."""
    name = cell_name(teacher, perturb, seed, student) + ("" if threat_model == "linf" else RUN_NAME_SEPARATOR + threat_model)
    return name + (RUN_NAME_SEPARATOR + ", ".join(variant) if variant else "")


def teacher_run_name(teacher: str, seed: int) -> str:
    """``teacher alp · s0``."""
    return f"teacher {teacher}{RUN_NAME_SEPARATOR}s{seed}"


def student_run_name(teacher: str, perturb: str, seed: int, student: str = DEFAULT_STUDENT) -> str:
    """``student alp · nonmax-shuffle · s0``."""
    return f"student {cell_name(teacher, perturb, seed, student)}"


def teacher_model_name(teacher: str, seed: int) -> str:
    """A teacher's MLflow logged-model name: ``teacher-alp-s0`` (a file or RobustBench teacher's
    name is made safe: ``teacher-robustbench-Carmon2019Unlabeled-s0``)."""
    return _model_name(["teacher", teacher, f"s{seed}"])


def student_model_name(teacher: str, perturb: str, seed: int, student: str = DEFAULT_STUDENT) -> str:
    """A student's MLflow logged-model name: ``student-alp-nonmax-shuffle-s0`` (``-<student>`` after it
    for a student recipe other than default)."""
    return _model_name(["student", teacher, perturb, f"s{seed}"] + ([student] if student != DEFAULT_STUDENT else []))


def _model_name(parts: list[str]) -> str:
    import re

    return "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", part).strip("_") or "_" for part in parts)


def evaluation_run_name(model: str) -> str:
    """``eval <model>``: a `run`'s ``eval teacher alp · s0`` / ``eval student alp · nonmax-shuffle · s0``
    (:func:`role_evaluation_run_name`), an `evaluate`'s ``eval teacher:<checkpoint stem>``."""
    return f"eval {model}"


def role_evaluation_run_name(role: str, teacher: str, perturb: str, seed: int,
                             student: str = DEFAULT_STUDENT) -> str:
    """The evaluation of a `run`'s teacher or student."""
    model = (teacher_run_name(teacher, seed) if role == ROLE_TEACHER
             else student_run_name(teacher, perturb, seed, student))
    return evaluation_run_name(model)


def distill_run_name(teacher: str, perturb: str, seed: int, student: str = DEFAULT_STUDENT) -> str:
    """``distill alp · nonmax-shuffle · s0``."""
    return f"distill {cell_name(teacher, perturb, seed, student)}"


def evaluate_run_name(dataset: str) -> str:
    return f"evaluate on {dataset}"


def sweep_run_name(teachers: Iterable[str], perturbs: Iterable[str], seeds: Iterable[int],
                   shard: tuple[int, int] | None) -> str:
    """``sweep at,alp · keep,nonmax-shuffle · s0,1`` (``sweep shard 1/2 · ...`` for a shard)."""
    parts = ([f"shard {shard[0]}/{shard[1]}"] if shard else []) + [
        ",".join(teachers), ",".join(perturbs), "s" + ",".join(map(str, seeds))]
    return "sweep " + RUN_NAME_SEPARATOR.join(parts)


# -- metric names beyond the accuracies (core.metrics) -------------------------------------------

ESTIMATE_LOW = "estimate/low_seconds"    # what the estimate printed before the job started: its range
ESTIMATE_HIGH = "estimate/high_seconds"


def estimate_metrics(low: float, high: float) -> dict[str, float]:
    """The estimate a `run` or `sweep` printed before it started, logged on its run so the report can
    put it next to the measured time (robdistill.experiments.estimate)."""
    return {ESTIMATE_LOW: low, ESTIMATE_HIGH: high}


def seconds_metrics(seconds: Mapping[str, float]) -> dict[str, float]:
    """An evaluation's time per attack: ``seconds/<key>``."""
    return {f"{SECONDS_PREFIX}{key}": value for key, value in seconds.items()}


def evaluation_cost_metrics(result: Any, device: Any, precision: str = "fp32") -> dict[str, float]:
    """:func:`cost_metrics` of an :class:`~robdistill.eval.results.EvaluationResult` run on ``device``
    with attacks crafting in ``precision`` (the peak it is measured against)."""
    from robdistill.core.devices import peak_flops

    samples = {key: result.samples(key) for key in result.costs}
    return cost_metrics(result.costs, result.seconds, samples, peak_flops(device, precision))


def cost_metrics(costs: Mapping[str, Mapping[str, float]], seconds: Mapping[str, float] | None = None,
                 samples: Mapping[str, int] | None = None, peak_flops: float | None = None) -> dict[str, float]:
    """An evaluation's cost per attack: passes per sample (``cost/<key>_forward_per_sample``,
    ``cost/<key>_backward_per_sample``) and FLOPs per sample (``cost/<key>_gflop_per_sample``); with
    each attack's ``seconds`` and ``samples`` also ``cost/<key>_images_per_second`` and the achieved
    ``cost/<key>_tflops_per_second``, and with the device's ``peak_flops`` (robdistill.core.devices)
    ``cost/<key>_peak_fraction``."""
    out = {f"cost/{key}_{kind}": value for key, parts in costs.items() for kind, value in parts.items()}
    for key, parts in costs.items():
        took, n = (seconds or {}).get(key), (samples or {}).get(key)
        if not took or not n:
            continue
        out[f"cost/{key}_images_per_second"] = n / took
        if "gflop_per_sample" in parts:
            rate = parts["gflop_per_sample"] * 1e9 * n / took
            out[f"cost/{key}_tflops_per_second"] = rate / 1e12
            if peak_flops:
                out[f"cost/{key}_peak_fraction"] = rate / peak_flops
    return out


# -- checkpoints: the files the teacher and student runs log (``checkpoint/<name>``) -------------

CHECKPOINT_SUFFIX = ".pt"


def teacher_checkpoint_name(dataset: str, teacher: str, seed: int, key: str) -> str:
    """``<dataset>-<teacher>-s<seed>-<teacher_key>.pt`` (the teacher cache's file name too)."""
    return f"{dataset}-{teacher}-s{seed}-{key}{CHECKPOINT_SUFFIX}"


def student_checkpoint_name(dataset: str, teacher: str, perturb: str, student: str, seed: int, run_id: str) -> str:
    """``<dataset>-<teacher>-<perturb>-<student>-s<seed>-<run id[:8]>.pt``."""
    return f"{dataset}-{teacher}-{perturb}-{student}-s{seed}-{run_id[:8]}{CHECKPOINT_SUFFIX}"


def checkpoint_model_name(kind: str, path: str | Path) -> str:
    """How `robdistill evaluate` names a checkpoint (its ``model`` tag, run name and metric scope):
    ``<kind>:<file stem>``."""
    return f"{kind}:{Path(path).stem}"


_TEACHER_STEM = re.compile(r"(?P<teacher>.+)-s(?P<seed>\d+)-(?P<key>[0-9a-f]{16})")
_STUDENT_STEM = re.compile(r"(?P<cell>.+)-s(?P<seed>\d+)-(?P<run>[0-9a-f]{8})")


@dataclass(frozen=True)
class RunIdentity:
    """Which model a run (or a checkpoint) is about; None where the tags do not say."""

    stage: str | None = None
    dataset: str | None = None
    teacher: str | None = None
    perturb: str | None = None
    student: str | None = None
    seed: int | None = None
    role: str | None = None      # teacher | student
    suite: str | None = None
    model: str | None = None     # an `evaluate` evaluation's <kind>:<checkpoint stem>


def parse_checkpoint_name(name: str, dataset: str, perturbations: Iterable[str] = ()) -> RunIdentity | None:
    """The inverse of :func:`teacher_checkpoint_name` / :func:`student_checkpoint_name` for a file
    name or stem of ``dataset`` (``role`` says which); a student's teacher, perturbation and
    student recipe are split at the longest of ``perturbations`` (the registered names) that fits,
    so without them only its seed is known. None for a name of another form."""
    stem = name[:-len(CHECKPOINT_SUFFIX)] if name.endswith(CHECKPOINT_SUFFIX) else name
    prefix = f"{dataset}-"
    if not stem.startswith(prefix):
        return None
    rest = stem[len(prefix):]
    match = _TEACHER_STEM.fullmatch(rest)
    if match:
        return RunIdentity(dataset=dataset, teacher=match["teacher"], seed=int(match["seed"]), role=ROLE_TEACHER)
    match = _STUDENT_STEM.fullmatch(rest)
    if not match:
        return None
    cell, seed = match["cell"], int(match["seed"])
    for perturb in sorted(perturbations, key=len, reverse=True):
        teacher, sep, student = cell.partition(f"-{perturb}-")
        if sep and teacher and student:
            return RunIdentity(dataset=dataset, teacher=teacher, perturb=perturb, student=student, seed=seed,
                               role=ROLE_STUDENT)
    return RunIdentity(dataset=dataset, seed=seed, role=ROLE_STUDENT)


def identity(tags: Mapping[str, str], perturbations: Iterable[str] = ()) -> RunIdentity:
    """Which model a run is about, from its tags. An `evaluate` evaluation carries only the
    checkpoint's name (``model``, ``<kind>:<stem>``): its teacher, perturbation and seed come from
    :func:`parse_checkpoint_name` (with ``perturbations`` for a student's)."""
    seed = tags.get(TAG_SEED)
    found = RunIdentity(stage=tags.get(TAG_STAGE), dataset=tags.get(TAG_DATASET), teacher=tags.get(TAG_TEACHER),
                        perturb=tags.get(TAG_PERTURB), student=tags.get(TAG_STUDENT),
                        seed=int(seed) if seed not in (None, "") else None, role=tags.get(TAG_ROLE),
                        suite=tags.get(TAG_SUITE), model=tags.get(TAG_MODEL))
    if found.model is None or found.teacher is not None or found.dataset is None:
        return found
    kind, _, stem = found.model.partition(":")
    parsed = parse_checkpoint_name(stem, found.dataset, perturbations)
    if parsed is None or parsed.role != kind:
        return found
    return RunIdentity(stage=found.stage, dataset=found.dataset, teacher=parsed.teacher, perturb=parsed.perturb,
                       student=parsed.student, seed=parsed.seed, role=parsed.role, suite=found.suite,
                       model=found.model)


# -- search filters ------------------------------------------------------------------------------

def quote(value: str) -> str:
    """A string literal of MLflow's search syntax."""
    return "'" + value.replace("'", "\\'") + "'"


def tag_filter(key: str, value: str) -> str:
    """The MLflow search clause that a run's tag ``key`` is ``value``: ``tags.<key> = '<value>'``."""
    return f"tags.{key} = {quote(value)}"


def tags_filter(tags: Mapping[str, str]) -> str:
    """Every tag of ``tags`` as one MLflow search filter ('' for none)."""
    return " and ".join(tag_filter(key, value) for key, value in tags.items())
