"""`robdistill sweep-status`."""
from __future__ import annotations

import click

from robdistill.cli.options import store_options


@click.command("sweep-status")
@click.argument("sweep_name")
@store_options
def sweep_status_command(sweep_name, experiment, tracking_uri) -> None:
    """Which cells of a sweep are finished, running, failed, killed or missing in the store (every
    shard, from any machine sharing it): one line of counts, then a table per teacher and seed.
    Run the same `sweep` command again to continue it: finished cells are not run again.

    \b
    Example:
      robdistill sweep-status sweep-1a2b3c4d5e6f --experiment fmnist-study
    """
    from robdistill.eval.tables import format_table
    from robdistill.tracking.sweeps import sweep_status

    status = sweep_status(tracking_uri, experiment, sweep_name)
    counts = status.counts()
    click.echo(f"{sweep_name}: {len(status.cells)} cells: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    click.echo(format_table(*status.rows()))
