"""Fixtures of the model-source tests: model files of every kind and small CIFAR-10-format data."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def digits_model_files(tmp_path_factory: pytest.TempPathFactory, quick_cnn) -> dict[str, Path]:
    """A trained digits small-cnn as a state dict (robdistill's Classifier layout) and as a
    TorchScript archive, in a folder of their own."""
    folder = tmp_path_factory.mktemp("digits-models")
    model = quick_cnn(0)
    torch.save(model.state_dict(), folder / "cnn_state.pt")
    scripted = torch.jit.trace(model, torch.rand(2, 1, 8, 8))
    torch.jit.save(scripted, str(folder / "cnn_scripted.pt"))
    return {"state_dict": folder / "cnn_state.pt", "torchscript": folder / "cnn_scripted.pt", "model": model}


def _test_data_module():
    """tests/data/test_data.py, for its writers of files in the datasets' real formats."""
    path = Path(__file__).resolve().parents[1] / "data" / "test_data.py"
    spec = importlib.util.spec_from_file_location("robdistill_tests_data_helpers", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    """Small CIFAR-10-format files (cifar-10-batches-py: 100 training images, 32 test images)."""
    root = tmp_path / "cifar-data"
    _test_data_module().write_cifar(root, per_batch=20, n_test=32)
    return root
