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
from robdistill.analysis.logits import logits_of
from robdistill.core.errors import UserError
from robdistill.eval.results import EvaluationResult
from robdistill.train.perturbations import PERTURBATIONS
from robdistill.experiments.pipeline import Outcome, default_suite, make_plan, run_experiment, split_overrides
from robdistill.experiments.stages import log_dataset_input
from robdistill.catalog import load_recipe
from robdistill.analysis.seguin import ClaimTables, TeacherLogits, confidence_difference_grids, teacher_claims
from robdistill.config.settings import Settings
from robdistill.core.stats import SeedSummary, mcnemar_exact, no_spread, seed_summary
from robdistill.sources.registry import SourceOptions, is_recipe

TEACHER_ROW = "(teacher)"
TEACHER_LOGITS_DIR = "teacher_logits"
MERGE_MUST_MATCH = ("dataset", "student", "suite", "eps", "n_eval", "overrides", "protocol")

if TYPE_CHECKING:
    from robdistill.experiments.estimate import Estimate


@dataclass
class Cell:
    """One evaluated model of the grid: a student (teacher, perturb, seed) or a teacher (perturb
    = TEACHER_ROW)."""

    teacher: str
    perturb: str
    seed: int
    result: EvaluationResult
    run_id: str


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
                  overrides: dict[str, list[str]], source: SourceOptions | None = None) -> None:
    """Every name and override checked before anything runs or is logged. ``teacher.*`` overrides
    apply to the grid's recipe teachers (an external teacher is loaded, not trained)."""
    source = source or SourceOptions()
    for name in perturbs:
        PERTURBATIONS.get(name)
    recipes = [name for name in teachers if is_recipe(name, source)]
    if overrides.get("teacher") and not recipes:
        raise UserError(f"--set teacher.{overrides['teacher'][0]}: every teacher of the grid is external (loaded, not "
                        f"trained); teacher.* overrides apply to recipe teachers only, drop them")
    for name in recipes:
        load_recipe("teacher", name, overrides.get("teacher", []))
    load_recipe("student", student, overrides.get("student", []))
    load_recipe("suite", suite, overrides.get("suite", []))


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


def grid_name(settings: Settings, *, teachers: Sequence[str], perturbs: Sequence[str], seeds: Sequence[int],
              student: str = "default", suite: str | None = None, eps: float | None = None,
              n_eval: int | None = None, overrides: Sequence[str] = ()) -> str:
    """The sweep name :func:`run_sweep` gives this grid (every shard, worker and machine computes it)."""
    grid = schema.sweep_grid(teachers, perturbs, seeds, student, suite or default_suite(settings.dataset))
    return sweep_name_of(settings, grid, eps, n_eval, overrides)


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


def external_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides of an external (published or file) teacher's cells: all but ``teacher.*``."""
    return [o for o in overrides if not o.startswith("teacher.")]


def sweep_estimate(settings: Settings, *, teachers: Sequence[str], perturbs: Sequence[str], seeds: Sequence[int],
                   student: str = "default", suite: str | None = None, eps: float | None = None,
                   n_eval: int | None = None, overrides: Sequence[str] = (), evaluate_teachers: bool = True,
                   shard: tuple[int, int] | None = None, source: SourceOptions | None = None,
                   on_start: Callable[[], None] | None = None) -> "Estimate":
    """How long :func:`run_sweep` with these arguments would take here: each teacher's stages timed
    once (robdistill.experiments.estimate), counted per seed it must be trained for (not cached
    here), its evaluation once per (teacher, seed), a student and its evaluation per cell."""
    from robdistill.experiments.estimate import Estimate, StageEstimate
    from robdistill.experiments.pipeline import experiment_estimate, teacher_is_cached

    suite = suite or default_suite(settings.dataset)
    source = source or SourceOptions()
    validate_grid(teachers, perturbs, student, suite, split_overrides(overrides), source)
    if on_start is not None:
        on_start()
    groups = shard_groups(seeds, teachers, shard)
    stages: list[StageEstimate] = []
    for teacher in teachers:
        group_seeds = [seed for seed, name in groups if name == teacher]
        if not group_seeds:
            continue
        cell_overrides = overrides if is_recipe(teacher, source) else external_overrides(overrides)
        plan = make_plan(settings, teacher=teacher, student=student, perturb=perturbs[0], suite=suite, eps=eps,
                         n_eval=n_eval, overrides=split_overrides(cell_overrides), source=source)
        untrained = [seed for seed in group_seeds if not teacher_is_cached(plan, replace(settings, seed=seed))]
        timed_settings = replace(settings, seed=untrained[0] if untrained else group_seeds[0])
        timed = experiment_estimate(plan, timed_settings, perturbs[0], evaluate_teachers)
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


def run_sweep(settings: Settings, *, teachers: Sequence[str], perturbs: Sequence[str], seeds: Sequence[int],
              student: str = "default", suite: str | None = None, eps: float | None = None,
              n_eval: int | None = None, overrides: Sequence[str] = (), evaluate_teachers: bool = True,
              on_cell: Callable[[int, int, str], None] | None = None,
              reference: str = "standard", shard: tuple[int, int] | None = None,
              source: SourceOptions | None = None, estimate: "Estimate | None" = None) -> SweepOutcome:
    """Run the grid (or one shard of it); cell (teacher, perturb, seed) is a nested `run`. The
    teacher is attacked once per (teacher, seed), in the run of the first perturbation. Every run is
    tagged with the grid's ``sweep_name``, so shards run on several machines sharing one tracking
    server can be merged by :func:`load_sweeps` (``robdistill sweep-report``). ``estimate``: what
    :func:`sweep_estimate` said of this grid, logged on the sweep's run (the report sets it beside
    the measured time)."""
    suite = suite or default_suite(settings.dataset)
    source = source or SourceOptions()
    validate_grid(teachers, perturbs, student, suite, split_overrides(overrides), source)
    plan = make_plan(settings, suite=suite, eps=eps, n_eval=n_eval,  # eps, n_eval and the data, before any run
                     overrides={"suite": split_overrides(overrides).get("suite", [])}, with_teacher=True)
    for teacher in teachers:  # external teachers loaded and through the integrity gate, before any run
        if not is_recipe(teacher, source):
            make_plan(settings, teacher=teacher, suite=suite, eps=eps, n_eval=n_eval, source=source,
                      overrides={"suite": split_overrides(overrides).get("suite", [])})
    untrained = external_overrides(overrides)
    uri = tracking.configure(settings.tracking_uri, settings.experiment)
    grid = schema.sweep_grid(teachers, perturbs, seeds, student, suite)
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
                run = run_experiment(replace(settings, seed=seed), teacher=teacher, perturb=perturb,
                                     student=student, suite=suite, eps=eps, n_eval=n_eval,
                                     overrides=overrides if recipe else untrained,
                                     evaluate_teacher=evaluate_teachers and i == 0,
                                     nested=True, extra_tags=schema.sweep_cell_tags(sweep_id, shard_tags),
                                     source=source)
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


@dataclass
class StoredCell:
    """A cell a previous run of the same sweep finished: its `run` and the evaluations under it."""

    run_id: str
    cells: list[Cell]
    logits: torch.Tensor | None


def finished_cells(tracking_uri: str | None, experiment: str, name: str,
                   current: str = "") -> dict[tuple[str, str, int], StoredCell]:
    """The cells (teacher, perturb, seed) of sweep ``name`` whose `run` FINISHED in an earlier
    sweep run (any shard, this machine or another sharing the store), with their evaluations read
    back and the teacher logits that sweep logged: re-running a sweep skips them. A cell whose run
    was killed or failed is not among them and runs again (``--resume`` continues its saved state)."""
    import tempfile

    from robdistill.tracking.results import load_results
    from robdistill.tracking.search import find_experiment, find_runs, run_identity

    try:
        find_experiment(tracking_uri, experiment)
    except UserError:
        return {}  # a new store or experiment: nothing ran yet
    runs = [r for r in find_runs(tracking_uri, experiment, schema.STAGE_RUN, None, {schema.TAG_SWEEP_NAME: name},
                                 limit=10000) if r.info.status == "FINISHED"]
    if not runs:
        return {}
    evaluations: dict[str, list] = {}
    for run in find_runs(tracking_uri, experiment, schema.STAGE_EVALUATION, None, {schema.TAG_SWEEP_NAME: name},
                         limit=10000):
        if run.info.status == "FINISHED":
            evaluations.setdefault(run.data.tags.get(schema.TAG_PARENT_RUN_ID, ""), []).append(run)
    parents = [p for p in _sweep_parents(tracking_uri, experiment, name) if p.info.run_id != current]
    found: dict[tuple[str, str, int], StoredCell] = {}
    with tempfile.TemporaryDirectory(prefix="robdistill-sweep-") as tmp:
        logits = _logged_teacher_logits(parents, f"{tmp}/logits")
        for run in runs:  # newest first: a cell finished twice counts once, the newest
            cell = run_identity(run)
            key = (cell.teacher or "", cell.perturb or "", cell.seed)
            if key in found or cell.seed is None:
                continue
            cells = []
            for evaluation in evaluations.get(run.info.run_id, []):
                role = run_identity(evaluation).role
                perturb = TEACHER_ROW if role == schema.ROLE_TEACHER else key[1]
                cells.append(Cell(key[0], perturb, key[2], load_results(evaluation, tmp), run.info.run_id))
            if any(c.perturb != TEACHER_ROW for c in cells):  # its student was evaluated
                found[key] = StoredCell(run.info.run_id, cells, logits.get((key[0], key[2])))
    return found


CELL_STATES = ("finished", "running", "failed", "killed", "missing")


@dataclass
class SweepStatus:
    """Every cell (teacher, perturb, seed) of a sweep's grid and its state in the store: finished,
    running, failed, killed (its newest run's status) or missing (never started)."""

    name: str
    grid: dict[str, str]
    cells: dict[tuple[str, str, int], str]

    def counts(self) -> dict[str, int]:
        return {state: sum(v == state for v in self.cells.values()) for state in CELL_STATES}

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """One row per (teacher, seed): each perturbation's state."""
        perturbs = self.grid[schema.TAG_PERTURBS].split(",")
        header = ["teacher", "seed", *perturbs]
        rows = []
        for teacher in self.grid[schema.TAG_TEACHERS].split(","):
            for seed in (int(s) for s in self.grid[schema.TAG_SEEDS].split(",")):
                rows.append([teacher, str(seed), *(self.cells[(teacher, p, seed)] for p in perturbs)])
        return header, rows


def sweep_status(tracking_uri: str | None, experiment: str, name: str) -> SweepStatus:
    """The state of every cell of sweep ``name`` (all its shards, on any machine sharing the store):
    the grid from its sweep runs' parameters, each cell's newest `run`. A name no sweep run carries
    is a one-line error that says what a sweep name looks like."""
    from robdistill.tracking.search import find_runs, run_identity

    parents = _sweep_parents(tracking_uri, experiment, name)
    if not parents:
        hint = (" (that looks like a run id; a sweep name is what `sweep` prints: sweep-<12 hex digits>)"
                if not name.startswith("sweep-") else "")
        raise UserError(f"no sweep named {name} in experiment '{experiment}'{hint}")
    grid = {key: parents[0].data.params.get(key, "") for key in
            (schema.TAG_TEACHERS, schema.TAG_PERTURBS, schema.TAG_SEEDS, schema.TAG_STUDENT, schema.TAG_SUITE)}
    cells = {(t, p, int(s)): "missing" for t in grid[schema.TAG_TEACHERS].split(",")
             for p in grid[schema.TAG_PERTURBS].split(",") for s in grid[schema.TAG_SEEDS].split(",")}
    seen: set[tuple[str, str, int]] = set()
    for run in find_runs(tracking_uri, experiment, schema.STAGE_RUN, None, {schema.TAG_SWEEP_NAME: name},
                         limit=10000):  # newest first
        cell = run_identity(run)
        key = (cell.teacher or "", cell.perturb or "", cell.seed)
        if key in cells and key not in seen:
            seen.add(key)
            cells[key] = run.info.status.lower() if run.info.status != "SCHEDULED" else "running"
    return SweepStatus(name, grid, cells)


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


@dataclass
class StoredSweeps:
    """One or more sweeps read back from the tracking store: their cells and teacher logits."""

    cells: list[Cell]
    logits: TeacherLogits

    def missing_logits(self) -> list[tuple[str, int]]:
        """(teacher, seed) pairs with cells but no logged logits (an older robdistill, or a shard
        stopped before its teacher's first cell finished): claims (1) and (2) leave them out."""
        return sorted({(c.teacher, c.seed) for c in self.cells} - set(self.logits))

    def claims(self, reference: str = "standard") -> ClaimTables | None:
        """Claims (1) and (2) over every logged teacher (the reference first, as `sweep` prints
        them), or None without the reference teacher."""
        if not any(t == reference for t, _ in self.logits):
            return None
        order = sorted(self.logits, key=lambda key: (key[0] != reference, key))
        return teacher_claims({key: self.logits[key] for key in order}, reference)


def _sweep_parents(tracking_uri: str | None, experiment: str, name: str) -> list:
    from robdistill.tracking.search import find_runs

    return find_runs(tracking_uri, experiment, schema.STAGE_SWEEP, None, {schema.TAG_SWEEP_NAME: name})


def check_mergeable(parents: dict[str, list]) -> None:
    """Sweeps merge only when they differ in teachers, perturbations or seeds: the same dataset,
    student, suite, eps, test images and overrides, so that every cell is measured alike."""
    settings = {}
    for name, runs in parents.items():
        if runs:
            settings[name] = {key: runs[0].data.params.get(key, "") for key in MERGE_MUST_MATCH}
    if not settings:
        return
    first_name, first = next(iter(settings.items()))
    for name, values in settings.items():
        for key in MERGE_MUST_MATCH:
            if values[key] != first[key]:
                raise UserError(f"sweeps {first_name} and {name} differ in {key} ({first[key] or '-'} vs "
                                f"{values[key] or '-'}); only sweeps that differ in teachers, perturbations or "
                                f"seeds can be merged")


def load_sweeps(tracking_uri: str | None, experiment: str, names: Sequence[str]) -> StoredSweeps:
    """Every evaluated cell of the named sweeps (all their shards) from the tracking store, rebuilt
    with their per-sample flags from each evaluation run's ``results.json``, and the teacher logits
    their sweep runs logged. Within a sweep a cell run twice (a shard re-run) counts once, the
    newest; a student cell present in two different sweeps is an error, a teacher attacked by two
    sweeps (the same cached teacher) counts once."""
    import tempfile

    from robdistill.tracking.results import load_results
    from robdistill.tracking.search import find_runs, run_identity

    names = list(dict.fromkeys(names))
    parents = {name: _sweep_parents(tracking_uri, experiment, name) for name in names}
    check_mergeable(parents)
    cells: list[Cell] = []
    owner: dict[tuple[str, str, int | None, str], str] = {}
    logits: TeacherLogits = {}
    with tempfile.TemporaryDirectory(prefix="robdistill-sweep-") as tmp:
        for name in names:
            runs = [run for run in find_runs(tracking_uri, experiment, schema.STAGE_EVALUATION, None,
                                             {schema.TAG_SWEEP_NAME: name})
                    if run.info.status == "FINISHED"]
            if not runs:
                hint = ("; that looks like a run id, and a sweep name is what `sweep` prints: sweep-<12 hex digits> "
                        "(`robdistill compare --sweep <run id>` lists one sweep run's cells)"
                        if not name.startswith("sweep-") else "")
                raise UserError(f"no finished evaluations tagged {schema.TAG_SWEEP_NAME}={name} in experiment "
                                f"'{experiment}'{hint}")
            for run in runs:  # newest first
                cell = run_identity(run)
                is_teacher = cell.role == schema.ROLE_TEACHER  # evaluated in the run of any perturbation
                cell_key = (cell.teacher or "", TEACHER_ROW if is_teacher else cell.perturb or "", cell.seed,
                            cell.role or "")
                if owner.get(cell_key) == name or (is_teacher and cell_key in owner):
                    continue  # a re-run, or the same cached teacher attacked by another sweep: once
                if cell_key in owner:
                    raise UserError(f"cell teacher={cell_key[0]} perturb={cell_key[1]} seed={cell_key[2]} is in both "
                                    f"sweeps {owner[cell_key]} and {name}; merge sweeps that share no cell")
                owner[cell_key] = name
                cells.append(Cell(cell.teacher, cell_key[1], cell.seed, load_results(run, tmp),
                                  run.data.tags.get(schema.TAG_PARENT_RUN_ID, "")))
            for key, z in _logged_teacher_logits(parents[name], f"{tmp}/logits-{name}").items():
                logits.setdefault(key, z)
    rank = {TEACHER_ROW: -2, "keep": -1, **{p: i for i, p in enumerate(PERTURBATIONS.names()) if p != "keep"}}
    cells.sort(key=lambda c: (c.teacher, rank.get(c.perturb, len(rank)), c.perturb, c.seed))  # the store's order is by time
    return StoredSweeps(cells, logits)


def _logged_teacher_logits(parents: Sequence, dst: str) -> TeacherLogits:
    """The ``teacher_logits/*.json`` artifacts of a sweep's parent runs (one per shard), newest first."""
    import mlflow

    from robdistill.tracking.results import load_json_artifact

    logits: TeacherLogits = {}
    for run in parents:
        listed = mlflow.MlflowClient().list_artifacts(run.info.run_id, TEACHER_LOGITS_DIR)
        for item in listed:
            payload = load_json_artifact(run, item.path, dst)
            logits.setdefault((payload["teacher"], int(payload["seed"])), torch.tensor(payload["logits"]))
    return logits


def _log_summaries(cells: Sequence[Cell]) -> None:
    """The two tables as MLflow tables (viewable in the UI), and in Markdown as the run's
    description, and the mean accuracies as metrics."""
    tables = {"sweep_summary": summary_rows(cells), "sweep_paired": paired_rows(cells)}
    for name, (header, rows) in tables.items():
        tracking.log_rows(header, rows, f"{name}.json")
    tracking.log_metrics(summary_metrics(cells))
    tracking.set_description(sweep_markdown(cells))


def sweep_markdown(cells: Sequence[Cell]) -> str:
    """A sweep parent's description: the summary and paired tables (as ``--out x.md`` writes them)."""
    from robdistill.eval.tables import markdown_table

    paired = paired_rows(cells)
    return ("Sweep summary (accuracy %; mean ± std over seeds [95% t-interval], or [95% Wilson] for one seed)"
            "\n\n" + markdown_table(*summary_rows(cells))
            + "\n\nEach perturbation against keep, same teacher and seed (Seguin et al. claim 3)\n\n"
            + (markdown_table(*paired) if paired[1] else "(no keep cells to compare against)"))


def _metrics_of(cells: Sequence[Cell]) -> list[str]:
    """Clean, every attack of the suite in the suite's order (FGSM and a transfer attack included),
    the worst case last."""
    attacks = list(dict.fromkeys(key for cell in cells for key in cell.result.robust))
    present = {key for cell in cells for key in cell.result.accuracies()}
    return [m for m in ("clean", *attacks, "worst") if m in present]


def cell_text(cells: Sequence[Cell], metric: str) -> str:
    """Accuracy % of one metric over seeds: 'mean ± std [t-interval clipped to 0-100]' for several
    seeds, 'acc [Wilson]' for one."""
    if len(cells) == 1:
        p = cells[0].result.accuracies()[metric]
        return f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"
    s = seed_summary([c.result.accuracies()[metric].value for c in cells])
    low, high = max(s.low, 0.0), min(s.high, 1.0)  # an accuracy interval lies in [0, 1]
    return f"{100 * s.mean:.1f} ± {100 * s.std:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


def _groups(cells: Sequence[Cell]) -> dict[tuple[str, str], list[Cell]]:
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.teacher, cell.perturb), []).append(cell)
    return groups


def summary_rows(cells: Sequence[Cell]) -> tuple[list[str], list[list[str]]]:
    """Per teacher and perturbation (the teacher itself first), each metric over seeds."""
    metrics = _metrics_of(cells)
    header = ["teacher", "perturb", "seeds", "n"] + metrics
    rows = []
    for (teacher, perturb), group in _groups(cells).items():
        ordered = sorted(group, key=lambda c: c.seed)
        rows.append([teacher, perturb, ",".join(str(c.seed) for c in ordered), str(ordered[0].result.n)]
                    + [cell_text(ordered, m) if all(m in c.result.accuracies() for c in ordered) else "-"
                       for m in metrics])
    rows.sort(key=lambda r: (r[0], r[1] != TEACHER_ROW))
    return header, rows


def summary_metrics(cells: Sequence[Cell]) -> dict[str, float]:
    """Parent-run metrics: mean accuracy over seeds per teacher / perturb / metric."""
    out = {}
    for (teacher, perturb), group in _groups(cells).items():
        role = schema.ROLE_TEACHER if perturb == TEACHER_ROW else perturb
        for metric in _metrics_of(group):
            out[schema.accuracy_metric(metric, teacher, role)] = seed_summary(
                [c.result.accuracies()[metric].value for c in group]).mean
    return out


from robdistill.analysis.verdicts import Reading  # noqa: E402  (the statistics below; seguin imports it already)

PAIRED_HEADER = ["teacher", "comparison", "metric", "family", "seeds", "difference (points)", "paired t p", "p",
                 "Holm p", "TOST p (Holm)", "McNemar p per seed", "reading", "seeds needed"]


@dataclass(frozen=True)
class PairedComparison:
    """One perturbation minus the reference for one teacher and metric: the per-seed differences, the
    McNemar p per seed, and the reading within its metric's family."""

    teacher: str
    perturb: str
    metric: str
    primary: bool
    seeds: list[int]
    diff: SeedSummary
    mcnemar: list[float]
    reading: Reading


def paired_comparisons(cells: Sequence[Cell], reference: str = "keep") -> list[PairedComparison]:
    """Each perturbation minus ``reference`` for the same teacher and seed, per metric but clean (clean
    when it is the only one). Each metric's comparisons are one family (Holm within it); the primary
    metric's (AutoAttack, else the worst case) is claim 3's family, the others are secondary."""
    from robdistill.analysis.verdicts import DELTA_ACCURACY, primary_metric, read_family

    groups = _groups(cells)
    metrics = [m for m in _metrics_of(cells) if m != "clean"] or ["clean"]
    primary = primary_metric(metrics)
    found: list[tuple[str, str, str, list[int], SeedSummary, list[float]]] = []
    teachers = list(dict.fromkeys(c.teacher for c in cells))
    perturbs = list(dict.fromkeys(c.perturb for c in cells if c.perturb != TEACHER_ROW))
    for teacher in teachers:
        base = {c.seed: c for c in groups.get((teacher, reference), [])}
        for perturb in perturbs:
            if perturb == reference or not base:
                continue
            other = {c.seed: c for c in groups.get((teacher, perturb), [])}
            seeds = sorted(set(base) & set(other))
            if not seeds:
                continue
            for metric in metrics:
                if not all(metric in c.result.accuracies() for c in (*other.values(), *base.values())):
                    continue  # an attack the suite runs on some perturbations only (its table's ``only``)
                a = [other[s].result.accuracies()[metric].value for s in seeds]
                b = [base[s].result.accuracies()[metric].value for s in seeds]
                per_seed = [mcnemar_exact(_flags(other[s].result, metric), _flags(base[s].result, metric))
                            for s in seeds]
                found.append((teacher, perturb, metric, seeds, seed_summary([x - y for x, y in zip(a, b)]), per_seed))
    readings: dict[int, Reading] = {}
    for metric in metrics:  # one family per metric
        family = [i for i, f in enumerate(found) if f[2] == metric]
        readings.update(zip(family, read_family([found[i][4] for i in family], DELTA_ACCURACY)))
    return [PairedComparison(teacher, perturb, metric, metric == primary, seeds, diff, per_seed, readings[i])
            for i, (teacher, perturb, metric, seeds, diff, per_seed) in enumerate(found)]


def paired_rows(cells: Sequence[Cell], reference: str = "keep") -> tuple[list[str], list[list[str]]]:
    """Each perturbation minus ``reference`` for the same teacher and seed (Seguin et al. claim 3),
    from :func:`paired_comparisons`. The seed is the experimental unit: the difference in points has a
    95% t-interval over seeds and a paired t-test (>= 2 seeds). When the per-seed differences have no
    spread (see ``no_spread``) the t-test is undefined: "paired t p" is then "-" and an exact sign test
    over seeds gives "p". "Holm p" is "p" Holm-adjusted within the metric's family, "TOST p" the
    Holm-adjusted two one-sided tests against +-``DELTA_ACCURACY``; the reading and the seeds an
    inconclusive reading needs come from :func:`robdistill.analysis.verdicts.read_family`. McNemar's
    exact test per seed is shown too; it is conditional on those trained models (test-image noise only)."""
    from robdistill.analysis.verdicts import fmt_p

    rows = []
    for c in paired_comparisons(cells, reference):
        spread = c.diff.n > 1 and not no_spread(c.diff)
        interval = f" [{100 * c.diff.low:+.1f}, {100 * c.diff.high:+.1f}]" if spread else ""
        r = c.reading
        rows.append([c.teacher, f"{c.perturb} - {reference}", c.metric, "primary" if c.primary else "secondary",
                     str(len(c.seeds)), f"{100 * c.diff.mean:+.1f}{interval}", fmt_p(r.p) if spread else "-",
                     fmt_p(r.p), fmt_p(r.p_adjusted), fmt_p(r.tost_adjusted),
                     ", ".join(f"{p:.2g}" for p in c.mcnemar), r.text, r.seeds_text])
    return list(PAIRED_HEADER), rows


def paired_reading(diff: SeedSummary) -> str:
    """The reading of one paired difference over seeds as a family of one
    (:func:`robdistill.analysis.verdicts.read_family`, equivalence margin ``DELTA_ACCURACY``)."""
    from robdistill.analysis.verdicts import DELTA_ACCURACY, read_family

    return read_family([diff], DELTA_ACCURACY)[0].text


def _flags(result: EvaluationResult, metric: str) -> list[bool]:
    flags = {"clean": result.clean, "worst": result.worst, **result.robust}[metric]
    return flags.tolist()


__all__ = ["sweep_status", "SweepStatus", "finished_cells", "run_sweep", "summary_rows", "paired_rows", "paired_comparisons", "load_sweeps", "Cell"]
