"""Checkpoints: the architecture spec, recipe and weights in one file, written atomically and
loaded with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from robdistill.data.datasets import DATASETS
from robdistill.core.errors import UserError
from robdistill.models.files import read_weights, require_file
from robdistill.models.zoo import Classifier, build_model

FORMAT = "robdistill-checkpoint-v1"


def save_checkpoint(path: Path, model: Classifier, *, kind: str, model_name: str, dataset: str,
                    recipe: dict[str, Any], seed: int, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` with what rebuilds it, atomically (a crash leaves no half-written file).

    Args:
        path: the file to write (its folder is created).
        model: a :class:`Classifier` built by :func:`build_model` as ``model_name``.
        kind: ``"teacher"`` or ``"student"``.
        model_name: the architecture's registered name (``small-cnn``, ...).
        dataset: the dataset it is for (its shape, classes and normalisation rebuild the model).
        recipe: the recipe it was trained with, as a dict.
        seed: the seed it was trained with.
        extra: anything else to keep in the payload.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Example:
        >>> import robdistill as rd
        >>> info = rd.load_dataset("digits").info
        >>> model = rd.build_model("small-cnn", info.shape, 10, info.mean, info.std)
        >>> rd.save_checkpoint("student.pt", model, kind="student", model_name="small-cnn",
        ...                    dataset="digits", recipe={"epochs": 1}, seed=3).name
        'student.pt'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "kind": kind, "model_name": model_name, "dataset": dataset,
               "recipe": recipe, "seed": seed, "extra": extra or {},
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's payload, read with ``weights_only``; a missing, HTML, truncated or foreign
    file (or a plain state dict) is a one-line error."""
    path = require_file(Path(path), "checkpoint")
    payload = read_weights(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        hint = (": a plain state dict needs its architecture (--teacher-model, or --model for evaluate)"
                if isinstance(payload, dict) else "")
        raise UserError(f"{path} is not a robdistill checkpoint (expected format {FORMAT}){hint}")
    return payload


def build_checkpoint_model(payload: dict[str, Any], device: str | torch.device = "cpu") -> Classifier:
    """The model of a checkpoint payload, weights loaded, in eval mode on ``device``."""
    info = DATASETS.get(payload["dataset"])
    model = build_model(payload["model_name"], info.shape, info.num_classes, info.mean, info.std)
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild the model of a checkpoint; a corrupt or foreign file is a one-line error.

    Args:
        path: a file written by :func:`save_checkpoint` (or by ``robdistill train-teacher``).
        device: where the model goes.

    Returns:
        ``(model, payload)``: the :class:`Classifier` in eval mode, and the checkpoint's payload
        (``kind``, ``model_name``, ``dataset``, ``recipe``, ``seed``, ...).

    Example:
        >>> import robdistill as rd
        >>> info = rd.load_dataset("digits").info
        >>> model = rd.build_model("small-cnn", info.shape, 10, info.mean, info.std)
        >>> path = rd.save_checkpoint("teacher.pt", model, kind="teacher", model_name="small-cnn",
        ...                           dataset="digits", recipe={}, seed=0)
        >>> loaded, payload = rd.load_checkpoint(path)
        >>> payload["kind"], payload["model_name"], type(loaded).__name__
        ('teacher', 'small-cnn', 'Classifier')
    """
    payload = read_checkpoint(path)
    return build_checkpoint_model(payload, device), payload
