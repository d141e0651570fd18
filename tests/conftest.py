"""Shared fixtures: every test runs in its own directory with its own MLflow store and cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with a private SQLite store, cache and recipe path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("ROBDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROBDISTILL_RECIPES", str(REPO))
    return tmp_path


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
