"""The teacher model registry: every newly trained teacher becomes a version of the registered
model ``robdistill-teacher-<dataset>-<teacher>``, tagged with its recipe hash (``teacher_key``), so
any machine sharing the tracking store can find and reuse it. A store without a registry only
costs a warning. Rank 0 only under ``torchrun``."""
from __future__ import annotations

import logging
from pathlib import Path

from robdistill.core import distributed
from robdistill.tracking import schema

REGISTERED_TEACHER_PREFIX = "robdistill-teacher"


def registered_teacher_name(dataset: str, teacher: str) -> str:
    return f"{REGISTERED_TEACHER_PREFIX}-{dataset}-{teacher}"


def register_teacher(name: str, run_id: str, model_id: str, key: str, tags: dict[str, str]) -> str | None:
    """A model-registry version of the teacher trained by ``run_id``: its logged model ``model_id``
    (robdistill.tracking.logged_models, whose artifact is the checkpoint), tagged with its recipe
    hash (``teacher_key``) so any machine sharing the store can find it. Returns the version, or
    None when the store has no registry (the run goes on without it)."""
    if not distributed.is_main():
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        try:
            client.create_registered_model(name, description="robdistill teachers; tag teacher_key = recipe hash")
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=run_id, model_id=model_id,
                                              tags={schema.TAG_TEACHER_KEY: key, **tags})
        return str(version.version)
    except MlflowException as exc:
        logging.getLogger(__name__).warning("teacher not registered (%s)", str(exc).splitlines()[0][:200])
        return None


def find_registered_teacher(key: str, destination: Path) -> Path | None:
    """Download the registered teacher checkpoint whose ``teacher_key`` tag is ``key`` into
    ``destination`` (a directory); None when there is none or the store has no registry (and on
    ranks other than 0)."""
    if not distributed.is_main():
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        versions = mlflow.MlflowClient().search_model_versions(schema.tag_filter(schema.TAG_TEACHER_KEY, key))
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        local = mlflow.artifacts.download_artifacts(artifact_uri=newest.source, dst_path=str(destination))
    except (MlflowException, OSError) as exc:
        logging.getLogger(__name__).warning("teacher registry not searched (%s)", str(exc).splitlines()[0][:200])
        return None
    local_path = Path(local)
    if local_path.is_file():
        return local_path
    files = sorted(local_path.glob("*" + schema.CHECKPOINT_SUFFIX))
    return files[0] if files else None
