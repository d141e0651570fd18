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


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test (used by modules that must not download)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


@pytest.fixture
def digits_teacher(workdir: Path):
    """(splits, settings, teacher): digits, a private store and cache, a standard teacher of 1 epoch."""
    import mlflow

    from robdistill.data import load_dataset
    from robdistill.recipes import load_recipe
    from robdistill.stages import Settings, obtain_teacher

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("robdistill")
    settings = Settings(cache_dir=workdir / "cache", progress=False)
    splits = load_dataset("digits")
    return splits, settings, obtain_teacher(load_recipe("teacher", "standard", ["epochs=1"]), splits, settings)
