"""Sweeps read back from the tracking store: the cells a sweep finished (so a re-run skips them),
the state of every cell of its grid, and one or more sweeps' evaluations (every shard, per-sample
flags included) with the teacher logits their sweep runs logged, for `sweep-report` and `report`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from robdistill.analysis.seguin import ClaimTables, TeacherLogits, teacher_claims
from robdistill.analysis.study import TEACHER_ROW, Cell
from robdistill.core.errors import UserError
from robdistill.tracking import schema
from robdistill.train.perturbations import PERTURBATIONS

TEACHER_LOGITS_DIR = "teacher_logits"  # where a sweep run logs each (teacher, seed)'s test logits
MERGE_MUST_MATCH = ("dataset", "student", "suite", "eps", "n_eval", "overrides", "protocol")


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
