"""`robdistill report`."""
from __future__ import annotations

from pathlib import Path

import click

from robdistill.core.errors import UserError
from robdistill.cli.options import store_options


@click.command("report")
@click.argument("sweep_names", nargs=-1)
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="FILE.html (one self-contained page) or FILE.md (Markdown, figures in FILE_figures/); repeatable.")
@store_options
def report(sweep_names, outputs, experiment, tracking_uri) -> None:
    """A study report of one or more sweeps (merged as `sweep-report` merges them): the summary and
    paired tables, Seguin et al.'s claims 1-3 with verdicts, eps curves, logit-statistics and
    confidence figures, AALP's consistency table, every evaluation's sanity checks, and the commands
    and versions that produced it.

    \b
    Examples:
      robdistill report sweep-1a2b3c4d5e6f --out report.html
      robdistill report sweep-1a2b3c4d5e6f sweep-6f5e4d3c2b1a --out study.html --out benchmarks/results/study.md
    """
    from robdistill.report import build_report, check_output_path, write_report

    if not outputs:
        raise UserError("give an output: --out report.html (one self-contained page) or --out report.md")
    for path in outputs:
        check_output_path(path)
    built = build_report(sweep_names, tracking_uri=tracking_uri, experiment=experiment, outputs=outputs)
    for path in write_report(built, outputs):
        click.echo(f"wrote {path}")
