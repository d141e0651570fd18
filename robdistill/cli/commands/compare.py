"""`robdistill compare`."""
from __future__ import annotations

from pathlib import Path

import click

from robdistill.tracking import schema
from robdistill.cli.options import store_options


@click.command()
@store_options
@click.option("--stage", default=schema.STAGE_RUN, show_default=True,
              help="Which runs: run (one per `robdistill run` or sweep cell), evaluation, teacher, student, "
                   "evaluate, sweep (parents only; list a sweep's cells with --sweep); 'any' for all.")
@click.option("--sweep", default=None, help="Only the cells of this sweep (its parent run id).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Filter on a tag, e.g. teacher=alp (repeatable).")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1), help="At most this many runs.")
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Also write the table to FILE.csv or FILE.md (repeatable).")
def compare(experiment, tracking_uri, stage, sweep, tags, limit, outputs) -> None:
    """Runs from a tracking store as one table: tags and accuracy % [95% interval], newest first.

    \b
    Examples:
      robdistill compare
      robdistill compare --tag teacher=alp --tag dataset=digits --out alp.md
      robdistill compare --sweep 69935d2f6ff940ec... --out grid.csv
      robdistill compare --stage evaluation --tracking-uri http://127.0.0.1:5000
    """
    from robdistill.tracking.search import find_runs, runs_table
    from robdistill.eval.tables import format_table
    from robdistill.eval.tables import check_table_path, write_table

    for path in outputs:
        check_table_path(path)
    runs = find_runs(tracking_uri, experiment, None if stage == "any" else stage, sweep, tags, limit)
    if not runs:
        click.echo("no runs match")
        return
    header, rows = runs_table(runs)
    click.echo(format_table(header, rows))
    for path in outputs:
        write_table(path, header, rows)
        click.echo(f"wrote {path}")
