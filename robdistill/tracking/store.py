"""MLflow tracking: one parent run per command, child runs per stage, and runs that always end
in a terminal state (FINISHED, FAILED, or KILLED on Ctrl-C and SIGTERM) -- never left RUNNING.

Under ``torchrun`` only rank 0 talks to the store: on the other ranks every function here is a
no-op and :func:`tracked_run` yields a stand-in carrying rank 0's run id."""
from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from robdistill.core import distributed

from robdistill.core.errors import UserError
from robdistill.config.recipes import PROJECT_ROOT
from robdistill.config import settings as _settings
from robdistill.tracking import schema, views

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = _settings.DEFAULT_EXPERIMENT  # re-exported
# MLflow 3's experiment kind (the UI's "Machine learning" type, as against "genai_development")
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def resolve_tracking_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def quiet_mlflow_logging() -> None:
    """MLflow, alembic and SQLAlchemy log every migration at INFO; keep the terminal for results."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per small download
    importlib.import_module("mlflow")  # before setting the levels: mlflow sets its own on import

    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(uri: str | None, experiment: str) -> str:
    """Point MLflow at a store and experiment; an unreachable server is a one-line error."""
    resolved = resolve_tracking_uri(uri)
    if not distributed.is_main():
        return resolved
    quiet_mlflow_logging()
    import mlflow

    mlflow.set_tracking_uri(resolved)
    try:
        found = mlflow.set_experiment(experiment)
        # MLflow's set_experiment returns without making the experiment active when another process
        # created it between its lookup and its create (the loser's runs then land in experiment 0,
        # "Default"); making it active by id closes that race
        found = mlflow.set_experiment(experiment_id=found.experiment_id)
        mark_model_training(found)
        views.share_runs_view(found)
    except Exception as exc:  # MlflowException, requests errors, sqlalchemy errors ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"cannot use tracking store {resolved} ({first}); start the server or pass "
                        f"--tracking-uri") from None
    return resolved


def mark_model_training(experiment: Any) -> None:
    """Tag the experiment as model training, so MLflow 3's UI opens it on its runs rather than in
    the GenAI view (traces); an experiment kind already set (by the user) is kept, and a store that
    refuses the tag (no edit permission) only costs a warning."""
    if EXPERIMENT_KIND_TAG in (experiment.tags or {}):
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG,
                                                 MODEL_TRAINING_KIND)
    except MlflowException as exc:
        logging.getLogger(__name__).warning("experiment kind not set (%s)", str(exc).splitlines()[0][:200])


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(argv: list[str] | None = None) -> str:
    """The command line of this process as a shell would take it: ``robdistill sweep ...`` for the
    installed script, ``python -m robdistill.cli ...`` for the module, else ``argv`` as it is."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv) or [""]
    program = argv[0]
    if Path(program).name == "robdistill":
        program = "robdistill"
    elif Path(program).parts[-3:] == ("robdistill", "cli", "__main__.py"):
        program = "python -m robdistill.cli"
    return " ".join([program, *(shlex.quote(arg) for arg in argv[1:])])


def versions_text() -> str:
    """``robdistill 0.1.0, python 3.11.7, torch 2.14.1, mlflow 3.17.2, <platform>``."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("robdistill", "torch", "mlflow"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} not installed")
    found.insert(1, f"python {platform.python_version()}")
    return ", ".join(found + [platform.platform()])


def process_tags() -> dict[str, str]:
    """What every run records about the process that started it: its command line and versions."""
    import torch

    limit = 5000  # MLflow's limit on a tag value is 8000 characters
    return {schema.TAG_COMMAND: command_line()[:limit], schema.TAG_VERSIONS: versions_text()[:limit],
            schema.TAG_THREADS: str(torch.get_num_threads())}


@contextmanager
def tracked_run(name: str, *, nested: bool = False, tags: dict[str, str] | None = None,
                resume_run_id: str | None = None) -> Iterator[Any]:
    """Start an MLflow run (or reopen ``resume_run_id``, an interrupted one, under the active parent)
    and end it FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM, SystemExit). Under torchrun the other
    ranks get a stand-in with rank 0's run id."""
    if not distributed.is_main():
        yield SimpleNamespace(info=SimpleNamespace(run_id=distributed.broadcast_object(None)))
        return
    import mlflow

    if resume_run_id is not None:
        run = _reopen(resume_run_id, nested, tags or {})
    else:
        run = mlflow.start_run(run_name=name, nested=nested,
                               tags={schema.TAG_GIT_COMMIT: git_commit(), **process_tags(), **(tags or {})})
    distributed.broadcast_object(run.info.run_id)
    try:
        yield run
    except (KeyboardInterrupt, SystemExit):
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def _reopen(run_id: str, nested: bool, tags: dict[str, str]):
    """Continue an interrupted run: the parent it was started under, if still RUNNING (its process
    was killed), is marked KILLED, and the run moves under the active parent, if any."""
    import mlflow

    client = mlflow.MlflowClient()
    old = client.get_run(run_id)
    old_parent = old.data.tags.get(schema.TAG_PARENT_RUN_ID)
    active = mlflow.active_run()
    if old_parent and (active is None or old_parent != active.info.run_id):
        if client.get_run(old_parent).info.status == "RUNNING":
            client.set_terminated(old_parent, status="KILLED")
    run = mlflow.start_run(run_id=run_id, nested=nested)
    if active is not None:
        mlflow.set_tag(schema.TAG_PARENT_RUN_ID, active.info.run_id)
    mlflow.set_tags(schema.resumed_tags(tags))
    return run


def experiment_of(run_id: str) -> str:
    """The experiment id of run ``run_id`` ("" off rank 0 or for an unknown run)."""
    if not distributed.is_main() or not run_id:
        return ""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.get_run(run_id).info.experiment_id
    except MlflowException:
        return ""


def active_run_id() -> str:
    """The active run's id ("" with none, and on ranks other than 0 under torchrun)."""
    if not distributed.is_main():
        return ""
    import mlflow

    active = mlflow.active_run()
    return "" if active is None else active.info.run_id


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """``{"epochs": 2}`` -> ``{"teacher.epochs": "2"}``; nested values become JSON."""
    out = {}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        out[f"{prefix}.{key}" if prefix else key] = text[:6000]
    return out


def log_params(prefix: str, values: dict[str, Any]) -> None:
    if not distributed.is_main():
        return
    import mlflow

    mlflow.log_params(flatten(prefix, values))


def log_metrics(values: dict[str, float], step: int | None = None) -> None:
    if not distributed.is_main():
        return
    import mlflow

    finite = {k.replace("@", "_"): float(v) for k, v in values.items() if v == v}  # drop NaN
    mlflow.log_metrics(finite, step=step)


def log_json(payload: Any, artifact_file: str) -> None:
    if not distributed.is_main():
        return
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(payload, default=str)), artifact_file)


def log_rows(header: list[str], rows: list[list[Any]], artifact_file: str) -> None:
    """A row-oriented table as an MLflow table (viewable in the UI)."""
    log_table({h: [row[i] for row in rows] for i, h in enumerate(header)}, artifact_file)


def log_table(columns: dict[str, list[Any]], artifact_file: str) -> None:
    """A column-oriented table as an MLflow table (viewable in the UI)."""
    if not distributed.is_main():
        return
    import mlflow

    mlflow.log_table(columns, artifact_file=artifact_file)


def set_tag(key: str, value: str) -> None:
    if not distributed.is_main():
        return
    import mlflow

    mlflow.set_tag(key, value)


DESCRIPTION_LIMIT = 7500  # MLflow's limit on a tag value is 8000 characters


def set_description(markdown: str) -> None:
    """The active run's description (the ``mlflow.note.content`` tag the UI shows on the run's
    page), in Markdown; a longer text is cut at a line and says so."""
    if not distributed.is_main():
        return
    if len(markdown) > DESCRIPTION_LIMIT:
        cut = markdown.rfind("\n", 0, DESCRIPTION_LIMIT - 100)
        markdown = markdown[:cut if cut > 0 else DESCRIPTION_LIMIT - 100] + "\n\n*(cut short: see the run's artifacts)*"
    set_tag(schema.TAG_NOTE, markdown)


# The SQL store's log_inputs looks a dataset up, then inserts it: two processes logging the same
# new dataset at once (shards sharing one server) can both miss it, and the second insert breaks
# the unique key (experiment, name, digest). Logged again, the dataset is found and reused.
DATASET_LOG_ATTEMPTS = 3
_CONFLICT_MARKERS = ("UNIQUE constraint failed", "IntegrityError", "duplicate key value")


def is_insert_conflict(exc: Exception) -> bool:
    """Whether a store error is a unique-key conflict of concurrent inserts (SQLite, PostgreSQL,
    MySQL wordings), which a retry resolves, rather than a real error."""
    return any(marker in str(exc) for marker in _CONFLICT_MARKERS)


def log_dataset(name: str, digest: str, profile: dict[str, Any], context: str) -> None:
    """``name`` (a dataset) as an MLflow dataset input of the active run, so the UI's Dataset column
    names it: metadata only (the data stays where it is), ``digest`` a hash of the tensors used,
    ``profile`` e.g. the split sizes; ``context`` ``training`` or ``test``."""
    if not distributed.is_main():
        return
    import mlflow
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    class _Dataset(MetaDataset):
        @property
        def profile(self) -> dict[str, Any]:
            return profile

        def to_dict(self) -> dict[str, str]:
            return {**super().to_dict(), "profile": json.dumps(profile)}

    dataset = _Dataset(CodeDatasetSource({"dataset": name}), name=name, digest=digest[:36])
    for attempt in range(DATASET_LOG_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as exc:
            if attempt + 1 == DATASET_LOG_ATTEMPTS or not is_insert_conflict(exc):
                raise


def log_file(path: Path, artifact_path: str | None = None) -> None:
    if not distributed.is_main():
        return
    import mlflow

    mlflow.log_artifact(str(path), artifact_path)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="robdistill-") as tmp:
        yield Path(tmp)


class MlflowTracker:
    """The :class:`robdistill.core.tracker.Tracker` the CLI passes: logs to the active MLflow run
    (rank 0 only under torchrun).

    Example:
        >>> import mlflow, robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> mlflow.set_tracking_uri("sqlite:///mlflow.db")
        >>> _ = mlflow.set_experiment("my-teachers")
        >>> with mlflow.start_run() as run:
        ...     teacher = rd.train_teacher("standard", data, epochs=1, train_subset=100, progress=False,
        ...                                tracker=rd.MlflowTracker())
        >>> mlflow.get_run(run.info.run_id).data.params["teacher.objective"]
        'standard'
    """

    def log_params(self, prefix: str, values: dict[str, Any]) -> None:
        log_params(prefix, values)

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        log_metrics(values, step)

    def set_tag(self, key: str, value: str) -> None:
        set_tag(key, value)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        log_json(payload, artifact_file)

    def log_table(self, columns: dict[str, list[Any]], artifact_file: str) -> None:
        log_table(columns, artifact_file)

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        log_file(path, artifact_path)
