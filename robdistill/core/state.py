"""Resumable state files: what a long job (training, an evaluation) saves after each unit of
work, atomically, to continue from after a crash or a kill (``--resume``)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robdistill.core.errors import UserError


@dataclass
class TrainingState:
    """Where :func:`fit` saves everything it needs to continue after each epoch (model, optimiser,
    schedule, every generator, the global RNG, the metrics so far), and what it saves beside it
    (e.g. the MLflow run id). Written atomically; loaded with ``weights_only=True``."""

    path: Path
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"training state {self.path} is unreadable ({type(exc).__name__}); delete it "
                            f"and start again without --resume") from None

    def save(self, payload: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
