"""What the commands print after the work: results, where the runs are, and how to look at them."""
from __future__ import annotations

import click

from robdistill.core.errors import UserError
from robdistill.tracking import schema


def ui_hint(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """How to look at the runs (robdistill.tracking.views: the runs table with the accuracies that
    matter): a server is its own UI; a local store needs `robdistill ui`. With ``run_id`` (a run the
    runs view filters out: `distill`, `evaluate`, `train-teacher`), that run's own page."""
    from robdistill.tracking.store import DEFAULT_TRACKING_URI
    from robdistill.tracking.views import run_url, view_url

    what, address = ("open the run", lambda ui: run_url(ui, experiment_id, run_id)) if run_id else \
        ("open the runs view", lambda ui: view_url(ui, experiment_id))
    if tracking_uri.startswith(("http://", "https://")):
        return f"{what}:  {address(tracking_uri)}"
    store = "" if tracking_uri == DEFAULT_TRACKING_URI else f" --tracking-uri {tracking_uri}"
    return f"{what}:  robdistill ui{store}   -> {address('http://127.0.0.1:5000')}"


def merge_hint(command: str, name: str, tracking_uri: str, experiment: str) -> str:
    """The command that merges the shards of a split sweep or evaluation, with the store to read."""
    from robdistill.config.settings import DEFAULT_EXPERIMENT

    where = f" --tracking-uri {tracking_uri}" + (f" --experiment {experiment}" if experiment != DEFAULT_EXPERIMENT else "")
    return f"  robdistill {command} {name}{where}"


def print_outcome(outcome, heading: str) -> None:
    from robdistill.eval.tables import consistency_table, failed_checks

    if outcome.results:
        threats = ", ".join(dict.fromkeys(result.threat_label for result in outcome.results.values()))
        click.echo(f"\n{heading} (accuracy %, 95% Wilson interval; {threats})")
        click.echo(outcome.table)
        failures = failed_checks(outcome.results)
        click.echo("\nsanity checks: " + ("all passed" if not failures else "FAILED\n  " + "\n  ".join(failures)))
        for name, result in outcome.results.items():
            for key, messages in result.warnings.items():
                for message in messages:
                    click.echo(f"warning ({name}, {key}): {message}")
    if outcome.analyses:
        click.echo("\nconsistent (clean and PGD-20 correct) / inconsistent (clean correct, PGD-20 wrong) sets,"
                   " AALP Sec. 2.2")
        click.echo(consistency_table(outcome.analyses))
    provenance = getattr(outcome, "teacher_provenance", None)
    for role, path in outcome.checkpoints.items():
        source = "the model registry" if outcome.teacher_source == schema.SOURCE_REGISTRY else "cache"
        reused = f" (reused from {source})" if role == "teacher" and outcome.teacher_reused else ""
        if role == "teacher" and provenance is not None and provenance.source != "recipe":
            reused = f" ({provenance.id}, sha256 {provenance.sha256})"
        click.echo(f"{role} checkpoint: {path}{reused}")
    click.echo(f"MLflow run: {outcome.run_id}  (store: {outcome.tracking_uri})")
    # the runs view shows `run` rows; any other command's run is linked to its own page
    click.echo(ui_hint(outcome.tracking_uri, outcome.experiment_id, None if heading == "results" else outcome.run_id))


def print_sweep_tables(cells, claims, outputs) -> None:
    from robdistill.eval.tables import format_table, write_table
    from robdistill.analysis.study import paired_rows, summary_rows

    summary, paired = summary_rows(cells), paired_rows(cells)
    click.echo("\nsweep summary (accuracy %; mean ± std over seeds [95% t-interval], or [95% Wilson] for one seed)")
    click.echo(format_table(*summary))
    click.echo("\neach perturbation against keep, same teacher and seed (Seguin et al. claim 3)")
    click.echo(format_table(*paired) if paired[1] else "(no keep cells to compare against)")
    if claims is not None:
        click.echo("\nteacher logits on the evaluated test images (Seguin et al. claim 1: AT lowers the mean "
                   "max logit and gap); mean over seeds [95% t-interval]")
        click.echo(format_table(claims.logits_header, claims.logits_rows))
        click.echo("\nsample-wise confidence agreement (Seguin et al. claim 2: AT and standard teachers differ "
                   "on which samples are confident)")
        click.echo(format_table(claims.agreement_header, claims.agreement_rows))
    extra = beyond_tables(cells)
    for title, (header, rows) in extra.values():
        click.echo(f"\n{title}")
        click.echo(format_table(header, rows))
    from robdistill.core import distributed

    for path in outputs if distributed.is_main() else []:  # under torchrun rank 0 writes
        write_table(path, *summary)
        write_table(path.with_name(f"{path.stem}-paired{path.suffix}"), *paired)
        for suffix, (_, table) in extra.items():
            write_table(path.with_name(f"{path.stem}-{suffix}{path.suffix}"), *table)
        click.echo(f"wrote {path}")


def print_merged(settings, name: str, uri: str, outputs, failed: list, groups: list, what: str) -> None:
    """An executor's ending: the merged tables read back from the store, as `sweep-report` gives
    them; the failed groups as a one-line error."""
    from robdistill.tracking.sweeps import load_sweeps

    stored = load_sweeps(uri, settings.experiment, [name])
    print_sweep_tables(stored.cells, stored.claims(), outputs)
    click.echo(f"\nsweep name {name} (store: {uri}); its cells: robdistill sweep-status {name}")
    if failed:
        raise UserError(f"{len(failed)} of {len(groups)} {what} failed (group {failed[0][0]}: {failed[0][1]}); "
                        f"run the same command again to retry them")


def beyond_tables(cells) -> dict[str, tuple[str, tuple[list[str], list[list[str]]]]]:
    """Per-class accuracy and inheritance per sample (robdistill.analysis.inheritance), for a grid
    whose cells have a PGD attack; inheritance needs the teachers' own evaluations and a standard
    teacher. Keyed by the file suffix `--out` writes them under."""
    from robdistill.analysis.inheritance import class_table, inheritance_table

    if not any("pgd" in c.result.robust for c in cells):
        return {}
    out = {"classes": ("PGD accuracy % per class (mean over seeds), the worst class and its accuracy "
                       "[95% t-interval over seeds, each seed's worst class]", class_table(cells, "pgd"))}
    inheritance = inheritance_table(cells, "pgd")
    if inheritance[1]:
        out["inheritance"] = ("inheritance per sample: of the images the teacher keeps under PGD, the share its "
                              "student keeps, against the standard teacher's student (same perturbation and seed); "
                              "mean over seeds [95% t-interval]", inheritance)
    return out
