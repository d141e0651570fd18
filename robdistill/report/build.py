"""A study report's content (:class:`~robdistill.report.content.Report`) from the tracking store:
the named sweeps read back with :func:`robdistill.tracking.sweeps.load_sweeps` (every shard, every
finished evaluation, the teacher logits), plus what their runs logged besides (AALP consistency
tables, eps sweeps of the same models, confidence scatters, commands and versions).

Every table is the one the command line prints (``summary_rows``, ``paired_rows``, Seguin et al.'s
claim tables); every figure comes from the plotting function that made it for the runs
(``plot_logit_statistics``, ``plot_confidence_difference_grid``, ``plot_eps_curves``) or is the
PNG a run logged (``confidence_scatter.png``)."""
from __future__ import annotations

import json
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from robdistill.core.errors import UserError
from robdistill.report.content import (Check, Checks, Code, EvaluationChecks,
                                       Figure, Paragraph, Report, Section, Table)
from robdistill.core.progress import duration
from robdistill.core.threat import norm_of
from robdistill.tracking import schema

DEFAULT_EXPERIMENT = "robdistill"
CONSISTENCY_ARTIFACT = "consistency_table.json"   # robdistill.analysis.consistency.log_analysis
CONFIDENCE_SCATTER_ARTIFACT = "confidence_scatter.png"  # robdistill.experiments.pipeline._log_comparison
EPS_SWEEP_ARTIFACT = "eps_sweep.json"             # robdistill.experiments.pipeline._log_eps_curves
SEGUIN_ARTIFACT_DIR = "seguin"                    # robdistill.experiments.sweep._teacher_claims
NOT_RECORDED = "not recorded"
LISTED_SWEEPS = 20  # an unknown name's error lists at most this many of the sweeps that exist

# the headings `robdistill sweep` / `sweep-report` print above the same tables (cli.output.print_sweep_tables)
SUMMARY_TITLE = "sweep summary (accuracy %; mean ± std over seeds [95% t-interval], or [95% Wilson] for one seed)"
PAIRED_TITLE = "each perturbation against keep, same teacher and seed (Seguin et al. claim 3)"
CLAIM1_TITLE = ("teacher logits on the evaluated test images (Seguin et al. claim 1: AT lowers the mean max logit "
                "and gap); mean over seeds [95% t-interval]")
CLAIM2_TITLE = ("sample-wise confidence agreement (Seguin et al. claim 2: AT and standard teachers differ on which "
                "samples are confident)")
CLAIM3_PERTURBS = ("nonmax-shuffle", "nonmax-flatten")


@dataclass
class _Store:
    uri: str
    experiment: str
    scratch: Path

    def runs(self, stage: str | None, tags: dict[str, str] | None = None, limit: int = 10000) -> list:
        from robdistill.tracking.search import find_runs

        return find_runs(self.uri, self.experiment, stage, None, tags or {}, limit)

    def json(self, run: Any, path: str) -> Any:
        from robdistill.tracking.results import load_json_artifact

        return load_json_artifact(run, path, self.scratch)

    def file(self, run_id: str, path: str) -> bytes:
        import mlflow

        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path,
                                                    dst_path=str(self.scratch / run_id))
        return Path(local).read_bytes()

    def listing(self, run_id: str, path: str | None = None) -> list[str]:
        import mlflow

        return [item.path for item in mlflow.MlflowClient().list_artifacts(run_id, path)]


def build_report(sweep_names: Sequence[str], *, tracking_uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, reference: str = "standard",
                 outputs: Sequence[str | Path] = ()) -> Report:
    """The report of one or more sweeps (merged as `robdistill sweep-report` merges them) from the
    tracking store at ``tracking_uri`` (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).
    ``outputs`` only goes into the command the report says made it. An unknown sweep name is a
    :class:`UserError` listing the sweeps that exist."""
    from robdistill.tracking.sweeps import load_sweeps
    from robdistill.tracking.store import resolve_tracking_uri

    names = list(dict.fromkeys(sweep_names))
    uri = resolve_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="robdistill-report-") as tmp:
        store = _Store(uri, experiment, Path(tmp))
        parents = _sweep_parents(store, names)
        stored = load_sweeps(uri, experiment, names)
        evaluations, teacher_sweeps = _evaluation_runs(store, names)
        figures_dir = Path(tmp) / "figures"
        figures_dir.mkdir()
        context = _Context(store, names, parents, stored, evaluations, teacher_sweeps, reference, figures_dir)
        sections = [
            _overview(context),
            _summary(context),
            _claims(context),
            *_beyond(context),
            _eps_curves(context),
            _figures(context),
            _consistency(context),
            _checks(context),
            _costs(context),
            _provenance(context, outputs),
        ]
    dataset = context.dataset
    title = f"Study report: {', '.join(names)}"
    subtitle = (f"{dataset}, {len(stored.cells)} evaluations; tracking store {uri}, experiment '{experiment}'; "
                f"generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    return Report(title, subtitle, sections)


# -- reading the store -------------------------------------------------------------------------

def _sweep_parents(store: _Store, names: list[str]) -> dict[str, list]:
    """Each name's sweep runs (one per shard), newest first; an unknown name lists those there are."""
    if not names:
        raise UserError("name at least one sweep: robdistill report <sweep name> ... --out report.html"
                        + _known_sweeps_text(store))
    every = store.runs(schema.STAGE_SWEEP)
    parents = {name: [r for r in every if r.data.tags.get(schema.TAG_SWEEP_NAME) == name] for name in names}
    unknown = [name for name, runs in parents.items() if not runs]
    if unknown:
        raise UserError(f"no sweep named {unknown[0]} in experiment '{store.experiment}' of {store.uri}"
                        + _known_sweeps_text(store, every))
    return parents


def _known_sweeps_text(store: _Store, every: list | None = None) -> str:
    every = store.runs(schema.STAGE_SWEEP) if every is None else every
    known: dict[str, str] = {}
    for run in every:  # newest first
        name = run.data.tags.get(schema.TAG_SWEEP_NAME)
        if name and name not in known:
            grid = " x ".join(run.data.tags.get(key, "?") for key in (schema.TAG_TEACHERS, schema.TAG_PERTURBS))
            known[name] = f"{name} ({run.data.tags.get(schema.TAG_DATASET, '?')}: {grid}, seeds " \
                          f"{run.data.tags.get(schema.TAG_SEEDS, '?')})"
    if not known:
        return "; it holds no sweeps (run `robdistill sweep` first, or pass --tracking-uri / --experiment)"
    listed = list(known.values())
    more = f"; and {len(listed) - LISTED_SWEEPS} older" if len(listed) > LISTED_SWEEPS else ""
    return "; sweeps there, newest first: " + "; ".join(listed[:LISTED_SWEEPS]) + more


def _evaluation_runs(store: _Store, names: list[str]) -> tuple[dict[tuple[str, str, int | None], Any], set[str]]:
    """(teacher, perturb or TEACHER_ROW, seed) -> the evaluation run ``load_sweeps`` read that cell from
    (the newest finished one, the first sweep named first); and the sweeps that attacked teachers."""
    from robdistill.analysis.study import TEACHER_ROW
    from robdistill.tracking.search import run_identity

    found: dict[tuple[str, str, int | None], Any] = {}
    teacher_sweeps = set()
    for name in names:
        for run in store.runs(schema.STAGE_EVALUATION, {schema.TAG_SWEEP_NAME: name}):
            if run.info.status != "FINISHED":
                continue
            cell = run_identity(run)
            perturb = TEACHER_ROW if cell.role == schema.ROLE_TEACHER else cell.perturb or ""
            found.setdefault((cell.teacher or "", perturb, cell.seed), run)
            if perturb == TEACHER_ROW:
                teacher_sweeps.add(name)
    return found, teacher_sweeps


@dataclass
class _Context:
    store: _Store
    names: list[str]
    parents: dict[str, list]
    stored: Any  # robdistill.tracking.sweeps.StoredSweeps
    evaluations: dict[tuple[str, str, int | None], Any]
    teacher_sweeps: set[str]
    reference: str
    figures_dir: Path
    eps_runs: list = field(default_factory=list)  # the `evaluate --eps-sweep` runs the eps curves come from

    @property
    def cells(self) -> list:
        return self.stored.cells

    @property
    def first_parent(self) -> Any:
        return self.parents[self.names[0]][0]

    @property
    def dataset(self) -> str:
        return self.first_parent.data.params.get("dataset") or self.first_parent.data.tags.get(schema.TAG_DATASET, "?")

    def evaluation_of(self, cell: Any) -> Any | None:
        return self.evaluations.get((cell.teacher, cell.perturb, cell.seed))

    def figure(self, name: str, title: str, caption: str, draw: Any) -> Figure:
        """A figure drawn by ``draw(path)`` (one of the existing plotting functions) into a PNG."""
        path = self.figures_dir / file_name(name)
        draw(path)
        return Figure(path.name, title, caption, path.read_bytes())


def file_name(name: str) -> str:
    """A figure's file name, safe on any file system and in a Markdown link."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def label(cell: Any) -> str:
    """How the report names one evaluated model: ``at / keep / seed 0`` (a student) or
    ``at / (teacher) / seed 0``."""
    return f"{cell.teacher} / {cell.perturb} / seed {cell.seed}"


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


# -- sections ----------------------------------------------------------------------------------

def _overview(ctx: _Context) -> Section:
    from robdistill.analysis.study import TEACHER_ROW

    first = ctx.cells[0].result
    blocks: list = [Paragraph(
        f"Merged from the tracking store as `robdistill sweep-report` merges sweeps: every finished evaluation "
        f"tagged with the sweep name (all shards), the newest of a re-run cell. {len(ctx.cells)} evaluations "
        f"({sum(c.perturb == TEACHER_ROW for c in ctx.cells)} teachers, "
        f"{sum(c.perturb != TEACHER_ROW for c in ctx.cells)} students) on the first {first.n} test images of "
        f"{ctx.dataset}, {first.threat_label}.")]
    rows = []
    for name in ctx.names:
        for run in ctx.parents[name]:
            params, tags = run.data.params, run.data.tags
            rows.append([name, tags.get(schema.TAG_SHARD, "-"), params.get("teachers", "?"), params.get("perturbs", "?"),
                         params.get("seeds", "?"), params.get("student", "?"), params.get("suite", "?"),
                         ", ".join(_overrides(params)) or "-", run.info.status, run.info.run_id])
    blocks.append(Table("the sweeps", ["sweep", "shard", "teachers", "perturbations", "seeds", "student", "suite",
                                       "overrides", "status", "MLflow run"], rows,
                        caption="One row per sweep run: a shard stopped and run again is listed once per run "
                                "(KILLED or RUNNING, then FINISHED); its cells count once, the newest."))
    missing = ctx.stored.missing_logits()
    if missing:
        blocks.append(Paragraph("Claims 1 and 2 leave out teachers whose logits no sweep logged (an older robdistill, "
                                "or a shard stopped early): " + ", ".join(f"{t} seed {s}" for t, s in missing) + "."))
    return Section("overview", "Overview", blocks)


def _summary(ctx: _Context) -> Section:
    from robdistill.analysis.study import paired_rows, summary_rows

    summary, paired = summary_rows(ctx.cells), paired_rows(ctx.cells)
    blocks: list = [Table(SUMMARY_TITLE, *summary, caption="Accuracy % per teacher and perturbation, the teacher "
                          "itself as `(teacher)`. `worst`: correct under clean input and every attack of the suite.")]
    if paired[1]:
        blocks.append(Table(PAIRED_TITLE, *paired, caption=(
            "Difference in points (perturbation minus keep), the seed as the unit: 95% t-interval and paired "
            "t-test over seeds ('p': without spread an exact sign test). Each metric's rows are one family, "
            "AutoAttack's the primary one: 'Holm p' is 'p' Holm-adjusted within it, 'TOST p (Holm)' the "
            "equivalence test against the margin delta (see the claims section); the reading follows the adjusted "
            "values, and an inconclusive one gives the seeds that would resolve it. McNemar's exact test per "
            "seed is conditional on those trained models.")))
    else:
        blocks.append(Paragraph(f"{PAIRED_TITLE}: no keep cells to compare against."))
    return Section("summary", "Summary and paired tables", blocks)


def _beyond(ctx: _Context) -> list[Section]:
    """Beyond the papers (robdistill.analysis.inheritance): PGD accuracy per class and the worst
    class; inheritance per sample against the standard teacher's student. Left out for a grid
    without PGD."""
    from robdistill.analysis.inheritance import class_table, inheritance_table

    if not any("pgd" in c.result.robust for c in ctx.cells):
        return []
    blocks: list = [Table("PGD accuracy per class", *class_table(ctx.cells, "pgd"), caption=(
        "PGD accuracy % per class (mean over seeds) per teacher and perturbation; the class worst on average, "
        "and the worst class's accuracy of each seed's model as mean [95% t-interval over seeds]."))]
    inheritance = inheritance_table(ctx.cells, "pgd", ctx.reference)
    if inheritance[1]:
        blocks.append(Table("Inheritance per sample", *inheritance, badge_column=inheritance[0].index("reading"),
                            caption=(
            f"Of the test images a teacher keeps under PGD, the share its student keeps, against the share the "
            f"{ctx.reference} teacher's student (same perturbation and seed) keeps of the same images: what the student "
            f"inherited beyond learning the task. The difference per seed, 95% t-interval, paired t-test over seeds, "
            f"Holm-adjusted over the table's rows (one family), read as the paired tables are.")))
    else:
        blocks.append(Paragraph("Inheritance per sample needs the teachers' own evaluations and a "
                                f"{ctx.reference} teacher in the grid."))
    return [Section("beyond", "Per class and per sample", blocks)]


VERDICT_HEADER = ["claim", "teacher", "comparison", "evidence (95% interval)", "p", "Holm p", "reading",
                  "seeds needed", "verdict"]


def _claims(ctx: _Context) -> Section:
    from robdistill.analysis.verdicts import (ALPHA, DELTA_ACCURACY, EQUIVALENT, FAMILIES, INCONCLUSIVE, LOWER,
                                              NOT_REPRODUCED, POWER, PRIMARY_METRIC, REPRODUCED)
    from robdistill.analysis.study import paired_comparisons

    claims = ctx.stored.claims(ctx.reference)
    rows: list[list[str]] = []
    if claims is not None:
        rows += _claim1_verdicts(claims, ctx.reference)
        rows += _claim2_verdicts(claims, ctx.reference)
    rows += _claim3_verdicts(paired_comparisons(ctx.cells), ctx.reference)
    blocks: list = [Paragraph(
        "Seguin et al. (2021) claim that adversarial training (1) lowers a teacher's mean max logit and logit gap, "
        "(2) changes which samples a teacher is confident on, and (3) that scrambling (`nonmax-shuffle`) or "
        "flattening (`nonmax-flatten`) an AT teacher's non-max logits costs its student robustness."),
        Paragraph(
        f"How a verdict is reached (`robdistill.analysis.verdicts`). The primary metric is {PRIMARY_METRIC} "
        "(the worst case when the suite has none); the other attacks are secondary, shown in the paired table "
        "with their own families and never a claim verdict. Each family below is corrected for multiple "
        f"comparisons with Holm's step-down method (family-wise alpha {ALPHA}). A difference reads '{LOWER}' or "
        f"'higher' only when its Holm-adjusted p (paired t-test over seeds; without spread an exact sign test) is "
        f"below {ALPHA}; an accuracy difference reads '{EQUIVALENT}' only when the two one-sided tests against "
        f"+-{100 * DELTA_ACCURACY:g} points (the margin fixed in advance, see the README), Holm-adjusted in the "
        f"same family, are below {ALPHA}; anything else is '{INCONCLUSIVE}' and shows its interval and the seeds "
        f"that would resolve its observed difference at {100 * POWER:g}% power given its observed spread (at "
        f"alpha / m for a family of m, Holm's first step). A claim is '{REPRODUCED}' when its comparison reads "
        f"the predicted direction, '{NOT_REPRODUCED}' when it reads the other direction or no difference beyond "
        f"delta, '{INCONCLUSIVE}' otherwise."),
        Table("families of comparisons", ["family", "comparisons"], [list(f) for f in FAMILIES])]
    if rows:
        blocks.append(Table("verdicts at a glance", VERDICT_HEADER, rows, badge_column=8, caption=(
            "Claim 1 predicts lower max logit and gap (both must read lower); claim 2 lower agreement with the "
            f"{ctx.reference} teacher than between two {ctx.reference} seeds (the difference paired by seed, with "
            f"its interval); claim 3 lower {PRIMARY_METRIC} accuracy than keep, every teacher but the "
            f"{ctx.reference} one (its rows, a control, are in the paired table and in the family). 'p' is the raw "
            "p-value, 'Holm p' the adjusted one the reading uses.")))
    if claims is None:
        blocks.append(Paragraph(f"Claims 1 and 2 need the {ctx.reference} teacher's logits, which none of these "
                                f"sweeps logged (no {ctx.reference} teacher in the grid)."))
    else:
        blocks.append(Table(CLAIM1_TITLE, claims.logits_header, claims.logits_rows))
        blocks.append(Table(CLAIM2_TITLE, claims.agreement_header, claims.agreement_rows, caption=(
            "Spearman rank correlation of the per-sample max softmax probability; the different-seed rows are the "
            "agreement to expect without AT (their pairs share models: mean and range, no interval). The 'minus' "
            "rows are claim 2's evidence: per seed, the same-seed agreement minus the mean of that reference "
            "seed's agreement with the other reference seeds, with a 95% t-interval over seeds.")))
    return Section("claims", "Seguin et al. claims 1-3", blocks)


def _p_text(readings: dict[str, Any], adjusted: bool) -> str:
    from robdistill.analysis.verdicts import fmt_p

    return "; ".join(f"{name} {fmt_p(r.p_adjusted if adjusted else r.p)}" for name, r in readings.items())


def _claim1_verdicts(claims: Any, reference: str) -> list[list[str]]:
    from robdistill.analysis.verdicts import claim_verdict, combined_verdict

    by_teacher = {row[0]: row for row in claims.logits_rows}
    rows = []
    for teacher, readings in claims.claim1.items():
        row = by_teacher[teacher]
        seeds = "; ".join(f"{name} {r.seeds_text}" for name, r in readings.items() if r.seeds_text != "-") or "-"
        rows.append(["1", teacher, f"mean max logit and logit gap - {reference}", f"max logit {row[4]}; gap {row[5]}",
                     _p_text(readings, False), _p_text(readings, True),
                     ", ".join(f"{name} {r.text}" for name, r in readings.items()), seeds,
                     combined_verdict([claim_verdict(r.word) for r in readings.values()])])
    return rows


def _claim2_verdicts(claims: Any, reference: str) -> list[list[str]]:
    from robdistill.analysis.verdicts import claim_verdict, fmt_p

    rows = []
    for teacher, (s, reading) in claims.claim2.items():
        interval = f" [{s.low:+.3f}, {s.high:+.3f}]" if s.n > 1 and s.std == s.std else ""
        evidence = (f"rho({teacher}, {reference}) minus {reference} seed-to-seed rho: {s.mean:+.3f}{interval} "
                    f"over {s.n} seed{'s' if s.n != 1 else ''}")
        rows.append(["2", teacher, f"confidence ranking vs {reference} (same seed) minus {reference} seed-to-seed",
                     evidence, fmt_p(reading.p), fmt_p(reading.p_adjusted), reading.text, reading.seeds_text,
                     claim_verdict(reading.word)])
    return rows


def _claim3_verdicts(comparisons: Sequence[Any], reference: str) -> list[list[str]]:
    from robdistill.analysis.verdicts import claim_verdict, fmt_p

    out = []
    for c in comparisons:
        if not c.primary or c.teacher == reference or c.perturb not in CLAIM3_PERTURBS:
            continue
        d, r = c.diff, c.reading
        interval = f" [{100 * d.low:+.1f}, {100 * d.high:+.1f}]" if d.n > 1 and d.std > 1e-12 else ""
        seeds = f"{d.n} seed" + ("s" if d.n != 1 else "")
        out.append(["3", c.teacher, f"{c.perturb} - keep ({c.metric})", f"{100 * d.mean:+.1f}{interval} points over "
                    f"{seeds}; TOST p (Holm) {fmt_p(r.tost_adjusted)}", fmt_p(r.p), fmt_p(r.p_adjusted), r.text,
                    r.seeds_text, claim_verdict(r.word)])
    return out


def _eps_curves(ctx: _Context) -> Section:
    curves, runs = _stored_eps_curves(ctx)
    if not curves:
        return Section("eps", "Accuracy versus eps", [Paragraph(
            "No eps sweeps were run for these models: none of the `robdistill evaluate --eps-sweep` runs in this "
            "experiment attacked a teacher or student of these sweeps. To add them, e.g.: "
            "`robdistill evaluate <checkpoint.pt> --eps-sweep 0,0.05,0.1,0.15,0.2`.")])
    from robdistill.eval.runner import plot_eps_curves

    header: list[str] = []
    rows = []
    for name, by_eps in curves.items():
        metrics = list(next(iter(by_eps.values())).points)
        header = ["model", "threat model", "eps", *metrics]
        for eps in sorted(by_eps):
            points = by_eps[eps].points
            rows.append([name, by_eps[eps].norm, f"{eps:g}",
                         *(f"{100 * p.value:.1f} [{100 * p.low:.1f}, {100 * p.high:.1f}]"
                           if p else "-" for p in (points.get(m) for m in metrics))])
    blocks: list = []
    by_norm: dict[str, dict[str, dict[float, _AtEps]]] = {}
    for name, by_eps in curves.items():
        by_norm.setdefault(next(iter(by_eps.values())).norm, {})[name] = by_eps
    for norm in sorted(by_norm, key=lambda n: n != "linf"):  # one figure per threat model, L-inf first
        label = norm_of(norm).label
        file = "eps_curves.png" if norm == "linf" else f"eps_curves_{norm}.png"
        group = by_norm[norm]
        blocks.append(ctx.figure(
            file, f"Accuracy versus eps ({label})",
            f"Accuracy % versus the {label} radius, one panel per model, one line per attack and the worst case, "
            f"with the 95% Wilson interval as a band" + (", and a last panel with every model's worst case on one "
                                                         "plot" if len(group) > 1 else "")
            + " (from `robdistill evaluate --eps-sweep`, runs " + ", ".join(runs) + ").",
            lambda path, group=group, label=label: plot_eps_curves(
                group, path, title=f"Accuracy versus eps ({label}) on {ctx.dataset}")))
    return Section("eps", "Accuracy versus eps", [
        *blocks, Table("accuracy versus eps (accuracy %, 95% Wilson interval)", header, rows)])


@dataclass
class _Point:
    value: float
    low: float
    high: float


@dataclass
class _AtEps:
    """One model at one eps as ``plot_eps_curves`` reads it (``accuracies()``), from a logged table."""

    points: dict[str, _Point]
    norm: str = "linf"  # the threat model the sweep ran in (older tables, without the column: linf)

    def accuracies(self) -> dict[str, _Point]:
        return self.points


def _stored_eps_curves(ctx: _Context) -> tuple[dict[str, dict[float, _AtEps]], list[str]]:
    """The eps sweeps (``eps_sweep.json`` of `evaluate --eps-sweep` runs) of these sweeps' models: a
    teacher matched by its file's SHA-256 or checkpoint name, a student by its checkpoint name."""
    parents = [run for run in ctx.store.runs(schema.STAGE_EVALUATE)
               if run.info.status == "FINISHED" and EPS_SWEEP_ARTIFACT in ctx.store.listing(run.info.run_id)]
    if not parents:
        return {}, []
    names = _model_names(ctx)
    curves: dict[str, dict[float, _AtEps]] = {}
    used = []
    for parent in parents:  # newest first: a model swept twice keeps its newest curve
        models = {}
        for run in ctx.store.runs(schema.STAGE_EVALUATION, {schema.TAG_PARENT_RUN_ID: parent.info.run_id}):
            tags = run.data.tags
            match = names.get(tags.get(schema.TAG_MODEL_SHA256, "")) or names.get(tags.get(schema.TAG_MODEL, ""))
            if match:
                models[tags.get(schema.TAG_MODEL, "")] = match
        fresh = {model: name for model, name in models.items() if name not in curves}
        if not fresh:
            continue
        table = _table_records(ctx.store.json(parent, EPS_SWEEP_ARTIFACT))
        for record in table:
            name = fresh.get(str(record["model"]))
            if name is None:
                continue
            norm = str(record.get("norm") or "linf")
            if norm != "linf":  # a model swept in two norms gets a curve per norm
                name = f"{name} ({norm_of(norm).label})"
            at = curves.setdefault(name, {}).setdefault(float(record["eps"]), _AtEps({}, norm))
            at.points[str(record["metric"])] = _Point(float(record["accuracy"]), float(record["ci_low"]),
                                                      float(record["ci_high"]))
        used.append(parent.info.run_id)
        ctx.eps_runs.append(parent)
    return curves, used


def _model_names(ctx: _Context) -> dict[str, str]:
    """A key an `evaluate` evaluation carries (its ``model`` tag, or a teacher's ``model_sha256``) ->
    the report's label of that sweep model."""
    from robdistill.analysis.study import TEACHER_ROW

    cells = {c.run_id: c for c in ctx.cells if c.perturb != TEACHER_ROW}
    teachers = {(c.teacher, c.seed): c for c in ctx.cells if c.perturb == TEACHER_ROW}
    out: dict[str, str] = {}
    for run in ctx.evaluations.values():
        sha = run.data.tags.get(schema.TAG_TEACHER_SHA256)
        key = (run.data.tags.get(schema.TAG_TEACHER), int(run.data.tags.get(schema.TAG_SEED, -1)))
        if sha and key in teachers and run.data.tags.get(schema.TAG_ROLE) == schema.ROLE_TEACHER:
            out[sha] = label(teachers[key])
    dataset = ctx.dataset
    for run in ctx.store.runs(schema.STAGE_STUDENT, {schema.TAG_DATASET: dataset}):
        cell = cells.get(run.data.tags.get(schema.TAG_PARENT_RUN_ID, ""))
        if cell is None:
            continue
        tags = run.data.tags
        stem = Path(schema.student_checkpoint_name(dataset, cell.teacher, cell.perturb, tags.get(schema.TAG_STUDENT, ""),
                                                   cell.seed, run.info.run_id)).stem
        out[schema.checkpoint_model_name(schema.ROLE_STUDENT, stem)] = label(cell)
        teacher = teachers.get((cell.teacher, cell.seed))
        if teacher is not None and tags.get(schema.TAG_TEACHER_KEY):
            stem = Path(schema.teacher_checkpoint_name(dataset, cell.teacher, cell.seed,
                                                       tags[schema.TAG_TEACHER_KEY])).stem
            out[schema.checkpoint_model_name(schema.ROLE_TEACHER, stem)] = label(teacher)
    return out


def _table_records(payload: Any) -> list[dict[str, Any]]:
    """The rows of an MLflow table artifact (``{"columns": [...], "data": [[...]]}``) as dicts."""
    if isinstance(payload, dict) and "columns" in payload and "data" in payload:
        return [dict(zip(payload["columns"], row)) for row in payload["data"]]
    if isinstance(payload, dict):  # column-oriented
        columns = list(payload)
        return [dict(zip(columns, values)) for values in zip(*payload.values())]
    return list(payload)


def _figures(ctx: _Context) -> Section:
    from robdistill.analysis.logits import plot_logit_statistics
    from robdistill.analysis.seguin import plot_confidence_difference_grid
    from robdistill.analysis.study import TEACHER_ROW

    import torch

    blocks: list = []
    logits = ctx.stored.logits
    order = sorted(logits, key=lambda key: (key[0] != ctx.reference, key))
    if logits:
        pooled = {}
        for teacher in dict.fromkeys(t for t, _ in order):
            seeds = [s for t, s in order if t == teacher]
            pooled[f"{teacher} (seeds {','.join(map(str, seeds))})"] = torch.cat([logits[(teacher, s)] for s in seeds])
        blocks.append(ctx.figure(
            "logit_statistics.png", "Teacher logit statistics",
            "Max logit, logit gap (largest minus second largest), max softmax probability and entropy of each "
            "teacher on the evaluated test images, seeds pooled (the `teacher_logits/` the sweeps logged); claim 1 "
            "compares the means.",
            lambda path: plot_logit_statistics(pooled, path, title=f"Teacher logit statistics on {ctx.dataset} test")))
    else:
        blocks.append(Paragraph("No teacher logits were logged by these sweeps (an older robdistill): no logit "
                                "statistics."))
    blocks += _confidence_grids(ctx, order, plot_confidence_difference_grid)
    blocks += _confidence_scatters(ctx, TEACHER_ROW)
    return Section("figures", "Logit statistics and confidence", blocks)


def _confidence_grids(ctx: _Context, order: list, plot: Any) -> list:
    """Seguin et al. Fig. 3: per teacher, the images where it is most confident relative to the
    reference teacher and the reverse, at their lowest common seed; drawn from the logged logits
    and the test images when the dataset is here, else the grids the sweep runs logged."""
    logits = ctx.stored.logits
    pairs = []
    for teacher in dict.fromkeys(t for t, _ in order):
        common = sorted(s for t, s in logits if t == teacher and (ctx.reference, s) in logits)
        if teacher != ctx.reference and common:
            pairs.append((teacher, common[0]))
    if not pairs:
        return []
    caption = ("Top row: the test images on which {t} is most confident relative to {r} ({s}); bottom row: the "
               "reverse. Each image shows its label and both max probabilities ({t} / {r}): claim 2 asks whether "
               "the two teachers are confident on different samples.")
    test = _test_images(ctx)
    if test is not None:
        x, y = test
        return [ctx.figure(f"confidence_difference_{t}_vs_{ctx.reference}.png",
                           f"Where {t} and {ctx.reference} differ in confidence", caption.format(t=t, r=ctx.reference, s=f"seed {s}"),
                           lambda path, t=t, s=s: plot(x, y, logits[(t, s)], logits[(ctx.reference, s)], t,
                                                       ctx.reference, path))
                for t, s in pairs]
    blocks: list = []
    for teacher, seed in pairs:
        name = f"confidence_difference_{teacher}_vs_{ctx.reference}.png"
        logged = _logged_file(ctx, f"{SEGUIN_ARTIFACT_DIR}/{name}")
        if logged is not None:
            blocks.append(Figure(file_name(name), f"Where {teacher} and {ctx.reference} differ in confidence",
                                 caption.format(t=teacher, r=ctx.reference, s="the sweep's lowest seed")
                                 + " (the grid the sweep run logged: the test images are not on this machine)", logged))
    if not blocks:
        blocks.append(Paragraph(f"The confidence-difference grids need the {ctx.dataset} test images, which are not "
                                f"on this machine, and no sweep run logged them."))
    return blocks


def _test_images(ctx: _Context) -> tuple[Any, Any] | None:
    """The evaluated test images (the first n of the dataset's test split), if the dataset loads
    here without a download and its labels are the ones the evaluations logged."""
    import torch

    from robdistill.data.datasets import load_dataset

    labels = ctx.cells[0].result.labels
    try:
        test = load_dataset(ctx.dataset).test.head(len(labels))
    except Exception:  # not here (no download), or unreadable: fall back to the logged grids
        return None
    if len(test.y) != len(labels) or not torch.equal(test.y.cpu(), labels.cpu()):
        return None
    return test.x, test.y


def _logged_file(ctx: _Context, path: str) -> bytes | None:
    for name in ctx.names:
        for run in ctx.parents[name]:
            folder = path.rsplit("/", 1)[0] if "/" in path else None
            if path in ctx.store.listing(run.info.run_id, folder):
                return ctx.store.file(run.info.run_id, path)
    return None


def _confidence_scatters(ctx: _Context, teacher_row: str) -> list:
    """AALP Fig. 11 (clean versus adversarial probability of the true class, by consistent and
    inconsistent set) as each cell's `run` logged it: one per teacher and perturbation, lowest seed."""
    first: dict[tuple[str, str], Any] = {}
    for cell in ctx.cells:
        if cell.perturb != teacher_row:
            first.setdefault((cell.teacher, cell.perturb), cell)
    blocks: list = [Paragraph(
        "Clean versus adversarial confidence (AALP Fig. 11), as each cell's run logged it (its lowest seed): per test "
        "image, the probability of the true class on the clean input and under PGD-20; green where both are correct "
        "(consistent), red where the attack flips a correct answer (inconsistent), grey where the clean answer is "
        "already wrong. The teacher's panel is in the run that attacked it (its first perturbation).")]
    missing = []
    for (teacher, perturb), cell in first.items():
        if CONFIDENCE_SCATTER_ARTIFACT not in ctx.store.listing(cell.run_id):
            missing.append(label(cell))
            continue
        png = ctx.store.file(cell.run_id, CONFIDENCE_SCATTER_ARTIFACT)
        blocks.append(Figure(file_name(f"confidence_scatter_{teacher}_{perturb}_s{cell.seed}.png"),
                             f"{teacher} -> {perturb}, seed {cell.seed}", f"`confidence_scatter.png` of run {cell.run_id}",
                             png, compact=True))
    if missing:
        blocks.append(Paragraph("No confidence scatter was logged for " + ", ".join(missing) + "."))
    return blocks


CONSISTENCY_COLUMNS = (("share", "share %", 100.0, 1), ("clean_prob", "clean p(y)", 1.0, 3),
                       ("adv_prob", "adv p(y)", 1.0, 3), ("clean_ce", "clean CE", 1.0, 3), ("adv_ce", "adv CE", 1.0, 3),
                       ("pairing_loss", "pairing", 1.0, 3))


def _consistency(ctx: _Context) -> Section:
    """AALP Tables 1 / 4 per teacher and perturbation: each quantity's mean over seeds of the
    ``consistency_table.json`` every evaluation run logged."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    seeds: dict[tuple[str, str], list[int]] = {}
    missing = []
    for cell in ctx.cells:
        run = ctx.evaluation_of(cell)
        records = None
        if run is not None and CONSISTENCY_ARTIFACT in ctx.store.listing(run.info.run_id):
            records = _table_records(ctx.store.json(run, CONSISTENCY_ARTIFACT))
        if not records:
            missing.append(label(cell))
            continue
        seeds.setdefault((cell.teacher, cell.perturb), []).append(cell.seed)
        for record in records:
            groups.setdefault((cell.teacher, cell.perturb, str(record["set"])), []).append(record)
    header = ["teacher", "perturb", "seeds", "set", *(title for _, title, _, _ in CONSISTENCY_COLUMNS)]
    rows = []
    for (teacher, perturb, set_name), records in groups.items():
        row = [teacher, perturb, ",".join(map(str, sorted(seeds[(teacher, perturb)]))), set_name]
        for key, _, scale, digits in CONSISTENCY_COLUMNS:
            values = [float(r[key]) for r in records if r.get(key) is not None and float(r[key]) == float(r[key])]
            row.append(_fmt(scale * sum(values) / len(values), digits) if values else "-")
        rows.append(row)
    blocks: list = []
    if rows:
        blocks.append(Table("consistent (clean and PGD-20 correct) / inconsistent (clean correct, PGD-20 wrong) sets, "
                            "AALP Sec. 2.2", header, rows, caption=(
                                "Each quantity is the mean over seeds of the per-evaluation values: the set's share of "
                                "the evaluated images, the mean probability of the true class and cross-entropy on "
                                "clean and adversarial (PGD-20) inputs, and the mean logit-pairing loss "
                                "||f(x) - f(x~)||^2 (AALP Tables 1 and 4).")))
    if missing:
        blocks.append(Paragraph("No consistency table was logged for " + ", ".join(missing) + "."))
    return Section("consistency", "Consistency table (AALP)", blocks)


def _checks(ctx: _Context) -> Section:
    evaluations = []
    for cell in ctx.cells:
        run = ctx.evaluation_of(cell)
        warnings = [f"{key}: {message}" for key, messages in cell.result.warnings.items() for message in messages]
        evaluations.append(EvaluationChecks(label(cell), run.info.run_id if run else cell.run_id,
                                            [Check(c.name, bool(c.passed), c.detail) for c in cell.result.checks],
                                            warnings))
    checks = Checks(evaluations)
    failed = checks.failed
    intro = (f"All {len(evaluations)} evaluations passed every sanity check." if not failed else
             f"{len(failed)} of {len(evaluations)} evaluations FAILED a sanity check: "
             + "; ".join(f"{e.label}: " + ", ".join(c.name for c in e.failed) for e in failed) + ".")
    return Section("checks", "Sanity checks", [Paragraph(
        intro + " The checks (METHODS section 4): a stronger attack never scores above a weaker one beyond noise, no "
        "Square-versus-white-box gap, each PGD can cross its eps ball, every adversarial image lies in the ball and "
        "in [0, 1], robust only where clean is correct, eps 0 changes nothing."), checks])


def _costs(ctx: _Context) -> Section:
    """What the study cost (robdistill.tracking.costs): wall time per stage from the runs' start and
    end times and the evaluations' seconds per attack; core-hours where the runs recorded their threads."""
    from robdistill.tracking.costs import COST_HEADER, stage_costs, total_row

    cells = {c.run_id for c in ctx.cells}  # the cell (`run`) runs the teacher and student runs are nested in
    nested = lambda stage: [r for r in ctx.store.runs(stage)  # noqa: E731
                            if r.data.tags.get(schema.TAG_PARENT_RUN_ID) in cells]
    evaluations = list({run.info.run_id: run for run in ctx.evaluations.values()}.values())
    costs = stage_costs(nested(schema.STAGE_TEACHER), nested(schema.STAGE_STUDENT), evaluations)
    rows = [c.row() for c in costs] + [total_row(costs)]
    blocks: list = [Table("Cost per stage", COST_HEADER, rows, caption=(
        "Wall time of every finished stage run (teachers trained by these sweeps, reused ones cost nothing here; "
        "students; evaluations, and within them each attack's own seconds), summed; core-hours are wall time "
        "times the threads each run recorded ('-' or '>=' where runs from before robdistill recorded them). "
        "Runs of processes that shared the machine ran side by side: wall hours add up over processes. Per attack: "
        "images per second of its own wall time, its FLOPs per image (the attacked model's forward and input-gradient "
        "FLOPs, counted once with torch.utils.flop_counter, times the passes it spent per image) and the FLOP rate "
        "that makes; '-' for runs that did not log them."))]
    estimated = []
    for name in ctx.names:
        for run in ctx.parents[name]:
            m = run.data.metrics
            if schema.ESTIMATE_LOW in m and schema.ESTIMATE_HIGH in m:
                took = (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None
                estimated.append([name, run.info.run_id, f"{duration(m[schema.ESTIMATE_LOW])} to "
                                  f"{duration(m[schema.ESTIMATE_HIGH])}", duration(took) if took else "-"])
    if estimated:
        blocks.append(Table("Estimated before it started, and measured", ["sweep", "MLflow run", "estimate", "measured"],
                            estimated, caption=(
                                "The range the sweep printed before it started (`robdistill sweep` times a few batches "
                                "of every stage on the machine as it is), and the wall time its run took. Attacks are "
                                "estimated as a range: they stop on the samples they break. A sweep run by several "
                                "processes (--executor local or slurm) logs no estimate.")))
    return Section("costs", "What it cost", blocks)


def _provenance(ctx: _Context, outputs: Sequence[str | Path]) -> Section:
    rows, commands = [], []
    for name in ctx.names:
        teachers_evaluated = name in ctx.teacher_sweeps
        for run in ctx.parents[name]:
            tags = run.data.tags
            shard = tags.get(schema.TAG_SHARD, "")
            rows.append([name, shard or "-", run.info.run_id, run.info.status,
                         time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(run.info.start_time / 1000)),
                         tags.get(schema.TAG_GIT_COMMIT, NOT_RECORDED), tags.get(schema.TAG_VERSIONS, NOT_RECORDED)])
            recorded = tags.get(schema.TAG_COMMAND)
            commands.append(f"# {name}{' shard ' + shard if shard else ''} (run {run.info.run_id})")
            commands.append(f"recorded:   {recorded}" if recorded else
                            "recorded:   (no command line recorded: a run from before robdistill recorded it)")
            commands.append("equivalent: " + sweep_command(run.data.params, shard, not teachers_evaluated))
    for run in ctx.eps_runs:
        recorded = run.data.tags.get(schema.TAG_COMMAND)
        commands.append(f"# eps curves (run {run.info.run_id}, git commit {run.data.tags.get(schema.TAG_GIT_COMMIT, '?')})")
        commands.append(f"recorded:   {recorded}" if recorded else
                        "recorded:   (no command line recorded: a run from before robdistill recorded it)")
    commits: dict[str, int] = {}
    for run in ctx.evaluations.values():
        commit = run.data.tags.get(schema.TAG_GIT_COMMIT, NOT_RECORDED)
        commits[commit] = commits.get(commit, 0) + 1
    blocks: list = [
        Table("the runs that produced it", ["sweep", "shard", "MLflow run", "status", "started", "git commit",
                                            "versions"], rows),
        Code("\n".join(commands), "The command each sweep run recorded (the process's command line) and the "
                                  "equivalent `robdistill sweep` command rebuilt from its logged parameters (external "
                                  "teachers' file options and --device are not among them)."),
        Paragraph("Evaluations by git commit: " + ", ".join(f"{commit} ({n})" for commit, n in commits.items())
                  + ("." if len(commits) == 1 else ": the evaluations ran at different commits.")),
    ]
    from robdistill.tracking.store import versions_text

    names = " ".join(shlex.quote(n) for n in ctx.names)
    outs = " ".join(f"--out {shlex.quote(str(p))}" for p in outputs) or "--out report.html"
    experiment = "" if ctx.store.experiment == DEFAULT_EXPERIMENT else f" --experiment {shlex.quote(ctx.store.experiment)}"
    blocks.append(Code(f"robdistill report {names} --tracking-uri {shlex.quote(ctx.store.uri)}{experiment} {outs}\n"
                       f"# {versions_text()}", "This report: the command that regenerates it, and the versions "
                                               "that wrote it."))
    return Section("provenance", "Commands and versions", blocks)


def sweep_command(params: dict[str, str], shard: str, skip_teacher_eval: bool) -> str:
    """The `robdistill sweep` command equivalent to a sweep run's logged parameters."""
    parts = ["robdistill", "sweep", "--dataset", params.get("dataset", "?"), "--teachers", params.get("teachers", "?"),
             "--perturbs", params.get("perturbs", "?"), "--seeds", params.get("seeds", "?"),
             "--student", params.get("student", "default"), "--suite", params.get("suite", "?")]
    for option, key in (("--eps", "eps"), ("--n-eval", "n_eval")):
        value = params.get(key, "null")
        if value not in ("null", "None", ""):
            parts += [option, value]
    for override in _overrides(params):
        parts += ["--set", str(override)]
    if skip_teacher_eval:
        parts.append("--skip-teacher-eval")
    if shard:
        parts += ["--shard", shard]
    return shlex.join(parts)


def _overrides(params: dict[str, str]) -> list[str]:
    """A sweep run's ``overrides`` parameter (a JSON list)."""
    try:
        return [str(o) for o in json.loads(params.get("overrides", "[]")) or []]
    except ValueError:
        return [params.get("overrides", "")]
