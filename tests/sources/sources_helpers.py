"""Helpers of the model-source tests: the CLI in-process, one-line errors, nothing written, MLflow
runs read back, and bad model files (an HTML page, a truncated file, foreign pickles)."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from cli_helpers import assert_nothing_written, assert_ok, assert_one_line_error, invoke

__all__ = ["assert_nothing_written", "assert_ok", "assert_one_line_error", "invoke",  # shared with tests/cli
           "TINY_STUDENT", "TINY_EVAL", "sha256", "runs", "Marker", "write_bad_files", "BAD_FILE_MESSAGES"]

TINY_STUDENT = ["--set", "student.epochs=1", "--set", "student.train_subset=64", "--quiet"]
TINY_EVAL = ["--suite", "smoke", "--n-eval", "16"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def runs(workdir: Path, stage: str | None = None) -> list[Any]:
    """Every run of the test's store (``stage``: only those with that stage tag)."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    found = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    return [run for run in found if stage is None or run.data.tags.get("stage") == stage]


class Marker:
    """Pickled, it calls ``Path(<marker>).touch()`` when unpickled: a foreign pickle's payload."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def write_bad_files(folder: Path) -> dict[str, Path]:
    """An HTML page saved as a checkpoint, a truncated torch file, and two foreign pickles whose
    payload would create ``folder / 'PAYLOAD_RAN'`` (a torch.save archive and a bare pickle)."""
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / "page.pt"
    html.write_text("<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head>"
                    "<body>Download anyway</body></html>\n")
    good = folder / "whole.pt"
    torch.save({"weight": torch.randn(64, 64)}, good)
    truncated = folder / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    marker = folder / "PAYLOAD_RAN"
    archive = folder / "foreign.pt"
    torch.save({"weight": torch.zeros(2), "hook": Marker(marker)}, archive)
    bare = folder / "foreign.pkl"
    bare.write_bytes(pickle.dumps(Marker(marker)))
    good.unlink()
    return {"html": html, "truncated": truncated, "foreign-archive": archive, "foreign-pickle": bare,
            "marker": marker}


BAD_FILE_MESSAGES = {"html": "is an HTML page, not model weights", "truncated": "is not a PyTorch file or is truncated",
                     "foreign-archive": "holds Python objects beyond tensors", "foreign-pickle":
                     "holds Python objects beyond tensors"}
