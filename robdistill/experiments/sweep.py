"""`robdistill sweep`: the teacher x perturbation x seed grid of Seguin et al.'s study under one
parent MLflow run, each teacher trained once per seed and reused by every perturbation, and the
summaries a reader needs: accuracy per cell as mean and 95% interval over seeds, and paired
comparisons of each perturbation against ``keep`` (Seguin et al. claim 3)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from robdistill.tracking import schema
from robdistill.tracking import store as tracking
from robdistill.analysis.study import TEACHER_ROW, Cell, groups_of, metrics_of, paired_rows, summary_rows, sweep_markdown
from robdistill.core.errors import UserError
from robdistill.models.inference import logits_of
from robdistill.tracking.sweeps import TEACHER_LOGITS_DIR, finished_cells
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.config.overrides import Overrides
from robdistill.experiments.pipeline import Outcome, make_plan, run_experiment
from robdistill.experiments.stages import log_dataset_input
from robdistill.api import load_recipe
from robdistill.analysis.seguin import ClaimTables, TeacherLogits, confidence_difference_grids, teacher_claims
from robdistill.config.settings import Settings
from robdistill.experiments.specs import SweepSpec
from robdistill.core.stats import seed_summary
from robdistill.sources.registry import SourceOptions, is_recipe


if TYPE_CHECKING:
    from robdistill.experiments.estimate import Estimate, StageEstimate


@dataclass
class SweepOutcome:
    run_id: str
    tracking_uri: str
    name: str = ""
    cells: list[Cell] = field(default_factory=list)
    runs: list[Outcome] = field(default_factory=list)
    claims: ClaimTables | None = None  # Seguin et al. claims (1) and (2), when "standard" is in the grid

    @property
    def experiment_id(self) -> str:
        return tracking.experiment_of(self.run_id)


def parse_list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UserError(f"--{what} is empty; give a comma-separated list")
    if len(set(items)) != len(items):
        raise UserError(f"--{what} names an entry twice: {text}")
    return items


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in parse_list(text, "seeds")]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers (e.g. 0,1,2); got '{text}'") from None
    if any(seed < 0 for seed in seeds):
        raise UserError(f"--seeds must be non-negative integers (e.g. 0,1,2); got '{text}'")
    return seeds


def validate_grid(teachers: Sequence[str], perturbs: Sequence[str], student: str, suite: str,
                  overrides: Overrides, source: SourceOptions | None = None) -> None:
    """Every name and override checked before anything runs or is logged. ``teacher.*`` overrides
    apply to the grid's recipe teachers (an external teacher is loaded, not trained)."""
    source = source or SourceOptions()
    for name in perturbs:
        PERTURBATIONS.get(name)
    recipes = [name for name in teachers if is_recipe(name, source)]
    if overrides.stage("teacher") and not recipes:
        raise UserError(f"--set {overrides.first_text('teacher')}: every teacher of the grid is external (loaded, not "
                        f"trained); teacher.* overrides apply to recipe teachers only, drop them")
    for name in recipes:
        load_recipe("teacher", name, **overrides.stage("teacher"))
    load_recipe("student", student, **overrides.stage("student"))
    load_recipe("suite", suite, **overrides.stage("suite"))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' (1 <= i <= n) -> (i, n)."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (0, 0)
    if not sep or not 1 <= shard[0] <= shard[1]:
        raise UserError(f"--shard must be i/n with 1 <= i <= n (e.g. 2/3); got '{text}'")
    return shard


def sweep_name_of(settings: Settings, grid: dict[str, str], eps: float | None, n_eval: int | None,
                  overrides: Sequence[str]) -> str:
    """A stable name for a grid: every shard of it, on any machine, computes the same one."""
    from robdistill.config.recipes import fingerprint

    threat = {} if settings.threat_model in (None, "linf") else {"threat_model": settings.threat_model}
    return "sweep-" + fingerprint({**grid, "dataset": settings.dataset, "eps": eps, "n_eval": n_eval,
                                   "overrides": list(overrides), "protocol": protocol(), **threat})[:12]


def grid_name(settings: Settings, spec: SweepSpec) -> str:
    """The sweep name :func:`run_sweep` gives ``spec``'s grid (every shard, worker and machine computes it)."""
    grid = schema.sweep_grid(spec.teachers, spec.perturbs, spec.seeds, spec.student, spec.suite_for(settings.dataset))
    return sweep_name_of(settings, grid, spec.eps, spec.n_eval, spec.overrides)


def protocol() -> str:
    """What, besides the grid, decides a sweep's numbers: the random-stream derivation and the
    training code version. Sweeps (and shards) of different protocols are never merged."""
    from robdistill.experiments.stages import TRAINING_CODE_VERSION
    from robdistill.core.streams import STREAMS_VERSION

    return f"streams {STREAMS_VERSION}, training code {TRAINING_CODE_VERSION}"


def shard_groups(seeds: Sequence[int], teachers: Sequence[str], shard: tuple[int, int] | None) -> list[tuple[int, str]]:
    """The (seed, teacher) groups a shard runs: group j goes to shard j mod n, so each teacher is
    trained by exactly one shard."""
    groups = [(seed, teacher) for seed in seeds for teacher in teachers]
    if shard is None:
        return groups
    index, count = shard
    return [g for j, g in enumerate(groups) if j % count == index - 1]


def sweep_estimate(settings: Settings, spec: SweepSpec, *, shard: tuple[int, int] | None = None,
                   on_start: Callable[[], None] | None = None) -> "Estimate":
    """How long :func:`run_sweep` of ``spec`` would take here: each teacher's stages timed
    once (robdistill.experiments.estimate), counted per seed it must be trained for (not cached
    here), its evaluation once per (teacher, seed), a student and its evaluation per cell."""
    from robdistill.experiments.estimate import Estimate, StageEstimate
    from robdistill.experiments.pipeline import experiment_estimate, teacher_is_cached

    teachers, perturbs, seeds = spec.teachers, spec.perturbs, spec.seeds
    suite, source = spec.suite_for(settings.dataset), spec.source
    validate_grid(teachers, perturbs, spec.student, suite, spec.overrides, source)
    if on_start is not None:
        on_start()
    groups = shard_groups(seeds, teachers, shard)
    stages: list[StageEstimate] = []
    for teacher in teachers:
        group_seeds = [seed for seed, name in groups if name == teacher]
        if not group_seeds:
            continue
        cell = spec.cell(teacher, perturbs[0], True)
        plan = make_plan(settings, teacher=teacher, student=spec.student, perturb=perturbs[0], suite=suite,
                         eps=spec.eps, n_eval=spec.n_eval, overrides=cell.overrides, source=source)
        untrained = [seed for seed in group_seeds if not teacher_is_cached(plan, replace(settings, seed=seed))]
        timed_settings = replace(settings, seed=untrained[0] if untrained else group_seeds[0])
        timed = experiment_estimate(plan, timed_settings, perturbs[0], spec.evaluate_teachers)
        cells, label = len(group_seeds) * len(perturbs), plan.teacher_name
        for stage in timed.stages:  # teacher <name>, student [<perturb>], attacks on the teacher / student
            if stage.name.startswith("teacher"):
                name, count, what = stage.name, len(untrained), f"{len(untrained)} seed(s) to train"
            elif stage.name == "attacks on the teacher":
                name, count, what = f"attacks on teacher {label}", len(group_seeds), f"{len(group_seeds)} seed(s)"
            elif stage.name.startswith("student"):
                name, count, what = f"students of {label}", cells, f"{cells} cell(s)"
            else:
                stages += _student_attack_stages(plan, timed_settings, perturbs, stage, len(group_seeds), label)
                continue
            stages.append(StageEstimate(name, stage.low * count, stage.high * count, f"{what}, each {stage.span()}"))
    return Estimate(stages)


def _student_attack_stages(plan, settings: Settings, perturbs: Sequence[str], first: "StageEstimate", seeds: int,
                           label: str) -> list["StageEstimate"]:
    """The attacks on a teacher's students: one stage for every group of perturbations the suite
    attacks alike (an attack whose table sets ``only`` makes several), each timed once."""
    from robdistill.experiments.estimate import StageEstimate
    from robdistill.experiments.pipeline import student_attacks_estimate

    groups: dict[tuple, list[str]] = {}
    for perturb in perturbs:
        groups.setdefault(tuple(e.get("key", e["name"]) for e in plan.suite.for_subject(perturb).attack),
                          []).append(perturb)
    stages = []
    for group in groups.values():
        timed = first if group[0] == perturbs[0] else student_attacks_estimate(plan, settings, group[0])
        cells = seeds * len(group)
        which = "" if len(groups) == 1 else f" [{', '.join(group)}]"
        stages.append(StageEstimate(f"attacks on the students of {label}{which}", timed.low * cells,
                                    timed.high * cells, f"{cells} cell(s), each {timed.span()}"))
    return stages


def run_sweep(settings: Settings, spec: SweepSpec, *, shard: tuple[int, int] | None = None,
              on_cell: Callable[[int, int, str], None] | None = None, reference: str = "standard",
              estimate: "Estimate | None" = None) -> SweepOutcome:
    """Run ``spec``'s grid (or one shard of it); cell (teacher, perturb, seed) is a nested `run`. The
    teacher is attacked once per (teacher, seed), in the run of the first perturbation. Every run is
    tagged with the grid's ``sweep_name``, so shards run on several machines sharing one tracking
    server can be merged by :func:`load_sweeps` (``robdistill sweep-report``). ``estimate``: what
    :func:`sweep_estimate` said of this grid, logged on the sweep's run (the report sets it beside
    the measured time)."""
    teachers, perturbs, seeds, overrides = spec.teachers, spec.perturbs, spec.seeds, spec.overrides
    suite, source, eps, n_eval = spec.suite_for(settings.dataset), spec.source, spec.eps, spec.n_eval
    validate_grid(teachers, perturbs, spec.student, suite, overrides, source)
    plan = make_plan(settings, suite=suite, eps=eps, n_eval=n_eval,  # eps, n_eval and the data, before any run
                     overrides=overrides.only("suite"), with_teacher=True)
    for teacher in teachers:  # external teachers loaded and through the integrity gate, before any run
        if not is_recipe(teacher, source):
            make_plan(settings, teacher=teacher, suite=suite, eps=eps, n_eval=n_eval, source=source,
                      overrides=overrides.only("suite"))
    uri = tracking.configure(settings.tracking_uri, settings.experiment)
    grid = schema.sweep_grid(teachers, perturbs, seeds, spec.student, suite)
    name = sweep_name_of(settings, grid, eps, n_eval, overrides)
    groups = shard_groups(seeds, teachers, shard)
    if not groups:
        raise UserError(f"shard {shard[0]}/{shard[1]} gets none of the {len(seeds) * len(teachers)} (seed, teacher) "
                        f"groups; use at most {len(seeds) * len(teachers)} shards")
    total = len(groups) * len(perturbs)
    shard_tags = schema.sweep_shard_tags(name, shard)
    title = schema.sweep_run_name(teachers, perturbs, seeds, shard)
    with tracking.tracked_run(title, tags=schema.sweep_tags(settings.dataset, grid, shard_tags)) as parent:
        sweep_id = parent.info.run_id
        tracking.log_params("", {**grid, "dataset": settings.dataset, "eps": eps, "n_eval": n_eval,
                                 "overrides": list(overrides), "protocol": protocol()})
        if estimate is not None:
            tracking.log_metrics(schema.estimate_metrics(estimate.low, estimate.high))
        log_dataset_input(plan.splits, "training")
        log_dataset_input(plan.splits, "test", plan.test())
        outcome = SweepOutcome(sweep_id, uri, name)
        teacher_logits: TeacherLogits = {}
        finished = finished_cells(settings.tracking_uri, settings.experiment, name, sweep_id)
        done = 0
        for seed, teacher in groups:
            for i, perturb in enumerate(perturbs):
                done += 1
                stored = finished.get((teacher, perturb, seed))
                if stored is not None and is_recipe(teacher, source):
                    if on_cell is not None:
                        on_cell(done, total, f"teacher {teacher}, perturb {perturb}, seed {seed}: finished in "
                                             f"run {stored.run_id}, not run again")
                    outcome.cells += stored.cells
                    if stored.logits is not None:
                        teacher_logits.setdefault((teacher, seed), stored.logits)
                    continue
                if on_cell is not None:
                    on_cell(done, total, f"teacher {teacher}, perturb {perturb}, seed {seed}")
                recipe = is_recipe(teacher, source)
                run = run_experiment(replace(settings, seed=seed), spec.cell(teacher, perturb, i == 0), nested=True,
                                     extra_tags=schema.sweep_cell_tags(sweep_id, shard_tags))
                outcome.runs.append(run)
                # an external teacher is named as its runs are tagged (and sweep-report reads them)
                name = teacher if recipe or run.teacher_provenance is None else run.teacher_provenance.label
                if (name, seed) not in teacher_logits:  # logged at once, so a shard killed later keeps it
                    teacher_logits[(name, seed)] = _log_teacher_logits(name, seed, run)
                outcome.cells.append(Cell(name, perturb, seed, run.results[schema.ROLE_STUDENT], run.run_id))
                if schema.ROLE_TEACHER in run.results:
                    outcome.cells.append(Cell(name, TEACHER_ROW, seed, run.results[schema.ROLE_TEACHER], run.run_id))
        _log_summaries(outcome.cells)
        outcome.claims = _teacher_claims(outcome.runs[0].test if outcome.runs else plan.test(), teacher_logits,
                                         reference)
    return outcome


def _log_teacher_logits(teacher: str, seed: int, run: Outcome) -> torch.Tensor:
    """The teacher's logits on the evaluated test images, on the sweep run (``teacher_logits/``), so
    `sweep-report` can recompute claims (1) and (2) over shards and sweeps."""
    z = logits_of(run.models["teacher"], run.test.x)
    tracking.log_json({"teacher": teacher, "seed": seed, "logits": z.tolist()},
                      f"{TEACHER_LOGITS_DIR}/{teacher}-s{seed}.json")
    return z


def _teacher_claims(test, logits: TeacherLogits, reference: str) -> ClaimTables | None:
    """Claims (1) and (2) from each (teacher, seed)'s ``logits`` on the evaluated ``test`` images
    (the same for every cell of a sweep), logged as tables and one confidence-difference grid per
    teacher (first seed) against the reference teacher."""
    if not any(t == reference for t, _ in logits):
        return None
    claims = teacher_claims(logits, reference)
    for name, header, rows in (("seguin_claim1_logits", claims.logits_header, claims.logits_rows),
                               ("seguin_claim2_agreement", claims.agreement_header, claims.agreement_rows)):
        tracking.log_rows(header, rows, f"{name}.json")
    with tracking.scratch_dir() as tmp:
        for path in confidence_difference_grids(test.x, test.y, logits, reference, tmp):
            tracking.log_file(path, "seguin")
    return claims


def _log_summaries(cells: Sequence[Cell]) -> None:
    """The two tables as MLflow tables (viewable in the UI), and in Markdown as the run's
    description, and the mean accuracies as metrics."""
    tables = {"sweep_summary": summary_rows(cells), "sweep_paired": paired_rows(cells)}
    for name, (header, rows) in tables.items():
        tracking.log_rows(header, rows, f"{name}.json")
    tracking.log_metrics(summary_metrics(cells))
    tracking.set_description(sweep_markdown(cells))


def summary_metrics(cells: Sequence[Cell]) -> dict[str, float]:
    """Parent-run metrics: mean accuracy over seeds per teacher / perturb / metric."""
    out = {}
    for (teacher, perturb), group in groups_of(cells).items():
        role = schema.ROLE_TEACHER if perturb == TEACHER_ROW else perturb
        for metric in metrics_of(group):
            out[schema.accuracy_metric(metric, teacher, role)] = seed_summary(
                [c.result.accuracies()[metric].value for c in group]).mean
    return out


__all__ = ["run_sweep", "sweep_estimate", "SweepOutcome", "grid_name", "parse_seeds", "parse_shard", "shard_groups"]
