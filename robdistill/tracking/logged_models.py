"""Teachers and students as MLflow logged models (MLflow 3's model entity), so the UI's Models
column links them from the run people look at, and the experiment's Models tab lists them with
their accuracies.

A logged model belongs to one run (its ``source_run_id``): here the run that *encloses* the stage
that made it -- the ``run`` of ``robdistill run``, a sweep's cell, a ``distill`` -- rather than the
teacher or student child run, because that is the row the runs table shows. A model trained in this
run carries its checkpoint as the model's artifacts (loadable with :func:`robdistill.load_checkpoint`
after ``mlflow.artifacts.download_artifacts("models:/<id>")``); a reused or published one is logged
without artifacts, with where it came from (cache, registry, file, RobustBench, and its SHA-256) as
tags. A store that refuses costs a warning, never the run. Rank 0 only under ``torchrun``."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

from robdistill.core import distributed
from robdistill.tracking import schema, store

TAG_STAGE_RUN = "robdistill.stage_run_id"  # the teacher or student child run that trained it


def enclosing_run_id() -> str | None:
    """The parent of the active run, else the active run itself; None with no active run."""
    import mlflow

    active = mlflow.active_run()
    if active is None:
        return None
    return mlflow.get_run(active.info.run_id).data.tags.get(schema.TAG_PARENT_RUN_ID) or active.info.run_id


def log_model(name: str, role: str, owner_run_id: str, *, checkpoint: Path | None,
              params: Mapping[str, Any], tags: Mapping[str, str]) -> str | None:
    """Log ``name`` (a teacher or student, ``role``) as a READY logged model of ``owner_run_id``,
    with ``checkpoint`` as its one artifact (None: metadata only); returns the model id, or None
    when the store refused (a warning says why; the checkpoint is then kept as an artifact of the
    active run, under ``checkpoint/``)."""
    if not distributed.is_main():
        return None
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    from robdistill.tracking.store import flatten, scratch_dir

    try:
        run = mlflow.get_run(owner_run_id)
        model = mlflow.initialize_logged_model(
            name=name, source_run_id=owner_run_id, model_type=role, experiment_id=run.info.experiment_id,
            params=flatten("", dict(params)), tags={schema.TAG_ROLE: role, **tags})
        if checkpoint is not None:
            with scratch_dir() as tmp:
                shutil.copyfile(checkpoint, tmp / checkpoint.name)
                mlflow.MlflowClient().log_model_artifacts(model.model_id, str(tmp))
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
        # the run's outputs: what its page lists under "Logged models" (a model's source run alone is not)
        from mlflow.entities import LoggedModelOutput

        mlflow.MlflowClient().log_outputs(owner_run_id, [LoggedModelOutput(model.model_id, step=0)])
    except (MlflowException, OSError) as exc:
        logging.getLogger(__name__).warning("%s not logged as an MLflow model (%s)", name,
                                            str(exc).splitlines()[0][:200])
        if checkpoint is not None:
            store.log_file(checkpoint, schema.CHECKPOINT_ARTIFACT_DIR)
        return None
    return model.model_id


def log_model_metrics(model_id: str | None, metrics: Mapping[str, float]) -> None:
    """``metrics`` (e.g. accuracies) on logged model ``model_id`` through the active run, so the
    experiment's Models tab shows them; nothing when ``model_id`` is None."""
    if model_id is None or not distributed.is_main():
        return
    import mlflow

    finite = {key: float(value) for key, value in metrics.items() if value == value}
    if finite:
        mlflow.log_metrics(finite, model_id=model_id)
