"""`robdistill sweep-report`."""
from __future__ import annotations

from pathlib import Path

import click

from robdistill.cli.options import store_options
from robdistill.cli.output import print_sweep_tables


@click.command("sweep-report")
@click.argument("sweep_names", nargs=-1, required=True)
@store_options
@click.option("--out", "outputs", multiple=True, type=click.Path(path_type=Path),
              help="Also write the summary to FILE.csv or FILE.md (and FILE-paired.*).")
def sweep_report(sweep_names, experiment, tracking_uri, outputs) -> None:
    """Merge a sweep's shards (run on several machines sharing a tracking server) from the store:
    the same summary and paired tables as `sweep`, from every finished evaluation tagged SWEEP_NAME,
    and Seguin et al.'s claims 1 and 2 from the teacher logits the shards logged.

    Several names merge several sweeps that differ only in teachers, perturbations or seeds, e.g. a
    grid run for seed 0 and extended later with seeds 1,2:

      robdistill sweep-report sweep-1a2b3c4d5e6f sweep-6f5e4d3c2b1a --out study.md
    """
    from robdistill.eval.tables import check_table_path
    from robdistill.tracking.sweeps import load_sweeps

    for path in outputs:
        check_table_path(path)
    stored = load_sweeps(tracking_uri, experiment, sweep_names)
    print_sweep_tables(stored.cells, stored.claims(), outputs)
    missing = stored.missing_logits()
    if missing:
        click.echo("\nnote: claims 1 and 2 leave out teachers whose logits no sweep logged (an older robdistill, "
                   "or a shard stopped early): " + ", ".join(f"{t} seed {s}" for t, s in missing))
