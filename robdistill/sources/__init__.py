"""Model sources: where a teacher (or any evaluated model) comes from -- a recipe trained here, a
robdistill checkpoint, ``robustbench:<Name>``, a TorchScript file or a state dict with its
architecture -- and the integrity gate every external model passes (``registry``, ``gate``,
``robustbench``; files are read by :mod:`robdistill.models.files`)."""
from __future__ import annotations

from robdistill.sources.gate import admit
from robdistill.sources import robustbench  # noqa: F401  (registers the robustbench:<Name> source, after the files)
from robdistill.sources.registry import (SOURCES, LoadedModel, Provenance, SourceOptions, find_source, is_recipe,
                                         load_model, parse_expect_clean)

__all__ = ["SOURCES", "LoadedModel", "Provenance", "SourceOptions", "admit", "find_source", "is_recipe",
           "load_model", "parse_expect_clean"]
