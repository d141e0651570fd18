"""The one reader of logged evaluations: an evaluation run's ``results.json`` (the
:meth:`~robdistill.eval.results.EvaluationResult.to_json` that :func:`robdistill.experiments.stages.evaluate_model`
logs, per-sample flags included) back as an :class:`~robdistill.eval.results.EvaluationResult`, so
results logged by another process or machine aggregate like local ones."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robdistill.tracking import schema

if TYPE_CHECKING:
    from robdistill.eval.results import EvaluationResult


def _run_id(run: Any) -> str:
    return run if isinstance(run, str) else run.info.run_id


def load_json_artifact(run: Any, artifact_path: str, dst: str | Path | None = None) -> Any:
    """A JSON artifact of ``run`` (an MLflow run or its id) from the active tracking store, downloaded
    into ``dst`` (a scratch directory when None)."""
    import mlflow

    run_id = _run_id(run)
    if dst is None:
        with tempfile.TemporaryDirectory(prefix="robdistill-results-") as tmp:
            return load_json_artifact(run_id, artifact_path, tmp)
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                dst_path=f"{dst}/{run_id}")
    return json.loads(Path(local).read_text())


def load_results(run: Any, dst: str | Path | None = None) -> EvaluationResult:
    """The evaluation logged by the evaluation run ``run`` (an MLflow run or its id; stage
    ``evaluation``) from the active tracking store, per-sample flags included."""
    from robdistill.eval.results import result_from_json

    return result_from_json(load_json_artifact(run, schema.RESULTS_ARTIFACT, dst))
