"""Tracking is a plug: library functions log through a :class:`Tracker` they are given, and write
nothing when they are given none. ``robdistill.tracking.MlflowTracker`` is the MLflow one the CLI
passes; any object with these methods works (e.g. one that collects metrics in a list)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """Where a stage logs its parameters, per-epoch metrics, tags, tables and files.

    Any object with these six methods is a tracker (a structural protocol: no base class needed);
    :class:`robdistill.MlflowTracker` logs to the active MLflow run, and without a tracker nothing
    is written.

    Example:
        >>> import robdistill as rd
        >>> class Printing:
        ...     def log_params(self, prefix, values): print(prefix, values["objective"])
        ...     def log_metrics(self, values, step=None): pass
        ...     def set_tag(self, key, value): pass
        ...     def log_json(self, payload, artifact_file): pass
        ...     def log_table(self, columns, artifact_file): pass
        ...     def log_file(self, path, artifact_path=None): pass
        >>> teacher = rd.train_teacher("standard", rd.load_dataset("digits"), epochs=1, train_subset=100,
        ...                            progress=False, tracker=Printing())
        teacher standard
    """

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
