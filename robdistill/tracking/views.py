"""The runs view a robustness researcher expects in MLflow's UI, shipped as an MLflow *shared view*.

MLflow's experiment page restores a view from the URL parameter ``viewStateShareKey=<key>``: it
reads the experiment tag ``mlflow.sharedViewState.<key>`` (JSON of the search facets and the UI
state; what the UI's "Share" button writes). robdistill writes one such view, ``robdistill``, on
every experiment it logs to: only the ``run`` rows (a `run`, or each cell of a sweep), the columns
that answer the question -- the student's worst-case / AutoAttack / PGD / clean accuracy, the
teacher's worst case and clean, the student's worst-case 95% interval, then teacher, perturbation,
seed, the Models and Dataset columns -- sorted by the student's worst-case accuracy. Its chart view (the
second tab) shows a bar chart per worst-case metric (student and teacher, with the interval
bounds), one bar per cell. :func:`view_url` is the address.

The keys are MLflow 3's (``searchFilter``, ``orderByKey``, ``selectedColumns`` ...);
tests/tracking/test_mlflow_ui_browser.py checks them against the installed UI bundle and renders
the view in headless Chromium."""
from __future__ import annotations

import json
import logging
from typing import Any

from robdistill.core.metrics import accuracy_metric
from robdistill.tracking import schema

VIEW_KEY = "robdistill"
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # the UI's constant of that name
VIEW_TAG = SHARED_VIEW_TAG_PREFIX + VIEW_KEY
SORT_METRIC = accuracy_metric("worst", schema.ROLE_STUDENT)
# the answer first: at 1600 px, with MLflow's assistant panel open, the first three or four metric
# columns are in view (the run's name, left of them, already says teacher, perturbation and seed)
STUDENT_ACCURACIES = ("worst", "autoattack", "pgd", "clean")
TEACHER_ACCURACIES = ("worst", "clean")
STUDENT_INTERVAL = ("worst_ci_low", "worst_ci_high")
CHARTS_FILTER = "acc/worst"  # the chart view opens on the worst-case accuracies (clear the search box for all)
METRIC_COLUMN_WIDTH = 170  # pixels: wide enough for the whole metric name in the header
IDENTITY_COLUMNS = (schema.TAG_TEACHER, schema.TAG_PERTURB, schema.TAG_SEED)


def column(kind: str, key: str) -> str:
    """A column's key in the UI's state: ``metrics.`student/acc/worst```, ``tags.`teacher```,
    ``attributes.`Models```."""
    return f"{kind}.`{key}`"


def runs_view_state() -> dict[str, Any]:
    """The view: search facets (filter, sort) and UI state (the columns shown)."""
    metrics = ([accuracy_metric(name, schema.ROLE_STUDENT) for name in STUDENT_ACCURACIES]
               + [accuracy_metric(name, schema.ROLE_TEACHER) for name in TEACHER_ACCURACIES]
               + [accuracy_metric(name, schema.ROLE_STUDENT) for name in STUDENT_INTERVAL])
    columns = ([column("metrics", m) for m in metrics] + [column("tags", tag) for tag in IDENTITY_COLUMNS]
               + [column("attributes", "Models"), column("attributes", "Dataset")])
    return {"searchFilter": schema.tag_filter(schema.TAG_STAGE, schema.STAGE_RUN),
            "orderByKey": column("metrics", SORT_METRIC), "orderByAsc": False,
            "selectedColumns": columns, "runListHidden": False,
            "runsHiddenMode": "SHOW_ALL",  # every cell in the charts (MLflow's default shows the first 10)
            "chartsSearchFilter": CHARTS_FILTER,
            "columnOrder": columns,  # the UI applies the widths of the columns in this list only
            "columnWidths": {column("metrics", m): METRIC_COLUMN_WIDTH for m in metrics}}


def share_runs_view(experiment: Any) -> None:
    """Write the view on ``experiment`` (an ``mlflow.entities.Experiment``) unless it holds this
    exact view already; a store that refuses the tag costs a warning."""
    value = json.dumps(runs_view_state(), sort_keys=True)
    if (experiment.tags or {}).get(VIEW_TAG) == value:
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, VIEW_TAG, value)
    except MlflowException as exc:
        logging.getLogger(__name__).warning("runs view not shared (%s)", str(exc).splitlines()[0][:200])


#: MLflow 3.17's UI keeps one "workflow type" for the whole site (the GenAI / Model training switch at
#: the top of its sidebar), read from this URL parameter first and the browser's storage second, and
#: GenAI by default: an experiment then opens on its GenAI overview (traces), whatever its
#: ``mlflow.experimentKind`` tag says. Every address robdistill prints carries the parameter.
WORKFLOW = "workflowType=machine_learning"


def view_url(ui_address: str, experiment_id: str, *, charts: bool = False) -> str:
    """The view's address on the UI at ``ui_address`` (``http://127.0.0.1:5000``); ``charts``: its
    chart view (a bar chart per metric) instead of the table."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"{ui_address.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW}&viewStateShareKey={VIEW_KEY}{mode}"


def run_url(ui_address: str, experiment_id: str, run_id: str) -> str:
    """A run's own page on the UI at ``ui_address``: where a run the runs view filters out (a
    `distill`, `evaluate` or `train-teacher` run; the view shows `run` rows only) is seen."""
    return f"{ui_address.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW}"


def experiment_url(ui_address: str, experiment_id: str) -> str:
    """The experiment's own address, opening on its runs (MLflow's model-training pages)."""
    return f"{ui_address.rstrip('/')}/#/experiments/{experiment_id}?{WORKFLOW}"

