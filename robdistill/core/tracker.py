"""Tracking is a plug: library functions log through a :class:`Tracker` they are given, and write
nothing when they are given none. ``robdistill.tracking.MlflowTracker`` is the MLflow one the CLI
passes; any object with these methods works (e.g. one that collects metrics in a list)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """Where a stage logs its parameters, per-epoch metrics, tags, tables and files."""

    def log_params(self, prefix: str, values: dict[str, Any]) -> None: ...

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None: ...

    def set_tag(self, key: str, value: str) -> None: ...

    def log_json(self, payload: Any, artifact_file: str) -> None: ...

    def log_table(self, columns: dict[str, list[Any]], artifact_file: str) -> None: ...

    def log_file(self, path: Path, artifact_path: str | None = None) -> None: ...


class NullTracker:
    """Logs nothing: the default of every library function."""

    def log_params(self, prefix: str, values: dict[str, Any]) -> None:
        pass

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def log_json(self, payload: Any, artifact_file: str) -> None:
        pass

    def log_table(self, columns: dict[str, list[Any]], artifact_file: str) -> None:
        pass

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        pass


def tracker_or_null(tracker: Tracker | None) -> Tracker:
    return NullTracker() if tracker is None else tracker
