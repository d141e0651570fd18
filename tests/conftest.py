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
    # mlflow.set_experiment() exports MLFLOW_EXPERIMENT_ID to os.environ; a test that selects an
    # experiment in-process must not hand that id to the subprocesses of later tests (set, then
    # delete: monkeypatch then removes whatever a test leaves there)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")
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

    from robdistill.config.recipes import parse_recipe
    from robdistill.config.settings import Settings
    from robdistill.data.datasets import load_dataset
    from robdistill.experiments.stages import obtain_teacher

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    mlflow.set_experiment("robdistill")
    settings = Settings(cache_dir=workdir / "cache", progress=False)
    splits = load_dataset("digits")
    return splits, settings, obtain_teacher(parse_recipe("teacher", "standard", ["epochs=1"]), splits, settings)


@pytest.fixture(scope="module")
def digits():
    """The embedded digits dataset (splits), loaded once per test module."""
    from robdistill.data.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def single_thread():
    """Small tensors: one intra-op thread is as fast, and immune to OpenMP oversubscription when the
    CPU is shared (two threads on a busy 2-core machine ran the attack tests ~50x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def quick_cnn():
    """``quick_cnn(seed)``: a fresh small-cnn trained for 60 Adam steps on digits (about 90% clean
    accuracy, about 40% under PGD at 0.1), in eval mode; deterministic for a seed."""
    import torch
    import torch.nn.functional as F

    from robdistill.data.datasets import load_dataset
    from robdistill.models.zoo import build_model

    train = load_dataset("digits").train

    def make(seed: int = 0):
        torch.manual_seed(seed)
        net = build_model("small-cnn", (1, 8, 8), 10, (0.5,), (0.5,))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(60):
            idx = torch.randint(len(train), (64,), generator=g)
            loss = F.cross_entropy(net(train.x[idx]), train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return net.eval()

    return make


@pytest.fixture
def nan_model():
    """A module whose logits are all NaN (10 classes), with one parameter."""
    import torch
    from torch import nn

    class NaNModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return torch.full((len(x), 10), float("nan")) * self.scale

    return NaNModel()
