"""`robdistill evaluate-report`."""
from __future__ import annotations

import click

from robdistill.cli.options import store_options


@click.command("evaluate-report")
@click.argument("eval_name")
@store_options
def evaluate_report(eval_name, experiment, tracking_uri) -> None:
    """Merge the shards of a split evaluation (`evaluate --shard i/n` on several machines sharing a
    tracking server) from their per-sample flags: the table the whole evaluation would print."""
    from robdistill.experiments.pipeline import merged_evaluation
    from robdistill.eval.tables import failed_checks, results_table

    results = merged_evaluation(tracking_uri, experiment, eval_name)
    click.echo(f"{eval_name}: merged from its shards (accuracy %, 95% Wilson interval)")
    click.echo(results_table(results))
    failures = failed_checks(results)
    click.echo("\nsanity checks: " + ("all passed" if not failures else "FAILED\n  " + "\n  ".join(failures)))
