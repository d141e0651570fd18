"""Helpers of the model-source tests: the CLI in-process, one-line errors, nothing written, MLflow
runs read back, and bad model files (an HTML page, a truncated file, foreign pickles)."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

from robdistill.cli.main import main

TINY_STUDENT = ["--set", "student.epochs=1", "--set", "student.train_subset=64", "--quiet"]
TINY_EVAL = ["--suite", "smoke", "--n-eval", "16"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def assert_ok(result) -> None:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_nothing_written(workdir: Path) -> None:
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "cache").exists()
    assert not (workdir / "mlruns").exists()


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


BAD_FILE_MESSAGES = {"html": "is an HTML page, not model weights", "truncated": "truncated or not a PyTorch file",
                     "foreign-archive": "holds Python objects beyond tensors", "foreign-pickle":
                     "holds Python objects beyond tensors"}
