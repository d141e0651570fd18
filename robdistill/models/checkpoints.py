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
    """Rebuild the model of a checkpoint; a corrupt or foreign file is a one-line error."""
    payload = read_checkpoint(path)
    return build_checkpoint_model(payload, device), payload
