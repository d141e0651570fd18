"""`robdistill ui`."""
from __future__ import annotations

import sys

import click

from robdistill.core.errors import UserError


@click.command()
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=None,
              help="MLflow store [default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db].")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--experiment", default="robdistill", show_default=True,
              help="The experiment whose runs view's address is printed (and shared, if it has none yet).")
def ui(tracking_uri, port, experiment) -> None:
    """Start MLflow's UI on 127.0.0.1 for the store in use (Ctrl-C or SIGTERM stops it and its
    workers). A tracking server (http://...) is its own UI: open its address instead."""
    from robdistill.tracking.search import find_experiment, open_ui, ui_command
    from robdistill.tracking.views import share_runs_view, view_url
    from robdistill.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if ui_command(uri, port) is None:
        click.echo(f"{uri} is a tracking server: open {uri} in a browser")
        return
    click.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port} (Ctrl-C to stop)")
    try:
        found = find_experiment(uri, experiment)
        share_runs_view(found)  # a store written before robdistill shared its view gets it now
        click.echo(f"runs view: {view_url(f'http://127.0.0.1:{port}', found.experiment_id)}")
    except UserError:
        pass  # nothing has run here yet: the UI opens on its experiment list
    sys.exit(open_ui(uri, port))
