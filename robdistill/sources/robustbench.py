"""``robustbench:<Name>``: a RobustBench model-zoo entry, its architecture from the optional
``robustbench`` package and its weights from a local file in RobustBench's own layout,
``<model-dir>/<dataset>/<threat model>/<Name>.pt``. Nothing is ever downloaded.

Only ``robustbench.model_zoo`` (the architectures) and ``robustbench.utils`` (its loader) are
imported, without running ``robustbench/__init__.py``: that imports RobustBench's evaluation
(the git-only ``autoattack`` module and setuptools' removed ``pkg_resources``), which loading a
model does not need. The file is first checked here (it exists, its SHA-256, and a
``weights_only`` read: an HTML page or a foreign pickle stops before anything runs), then
RobustBench's own ``load_model`` builds the architecture and loads the checkpoint, as it would
after downloading it. RobustBench models take [0, 1] images (those trained on normalised inputs
normalise inside) and return logits.

The expected clean accuracy of each model is RobustBench's own (``model_info/``, shipped as
``robustbench_models.json``): the integrity gate compares it with the accuracy measured here."""
from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import json
import sys
import types
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from robdistill.core.errors import UserError
from robdistill.data.datasets import DatasetInfo
from robdistill.models import files
from robdistill.sources.registry import (ROBUSTBENCH_PREFIX, SOURCE_ROBUSTBENCH, LoadedModel, Provenance,
                                         SourceOptions, register_source)

PACKAGE = "robustbench"
INSTALL_HINT = ("pip install -e '.[robustbench]' && pip install --no-deps robustbench==1.1.1 (with -c constraints.txt; "
                "README: RobustBench teachers)")
# our dataset name -> RobustBench's (its datasets: cifar10, cifar100, imagenet)
DATASET_NAMES = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}
MODEL_INFO = Path(__file__).with_name("robustbench_models.json")

def installed() -> bool:
    """Whether the optional ``robustbench`` package is importable."""
    return importlib.util.find_spec(PACKAGE) is not None


@contextmanager
def _without_package_init() -> Iterator[None]:
    """Import RobustBench's submodules without running ``robustbench/__init__.py`` (a bare package
    object stands in for it, removed afterwards so a later ``import robustbench`` runs the real one);
    a one-line error naming the extra when robustbench is not installed."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"robustbench:<Name> needs the optional extra: {INSTALL_HINT}")
    stub = None
    if PACKAGE not in sys.modules:
        stub = types.ModuleType(PACKAGE)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules[PACKAGE] = stub
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # timm's deprecation notices for RobustBench's imports
            yield
    finally:
        if stub is not None and sys.modules.get(PACKAGE) is stub:
            del sys.modules[PACKAGE]


@functools.lru_cache(maxsize=1)
def model_zoo() -> Any:
    """``robustbench.model_zoo`` (its ``model_dicts`` and enums), imported without the package's
    ``__init__``."""
    with _without_package_init():
        try:
            zoo = importlib.import_module(f"{PACKAGE}.model_zoo")
            enums = importlib.import_module(f"{PACKAGE}.model_zoo.enums")
        except ImportError as exc:
            raise UserError(f"robustbench's model zoo cannot be imported ({files.first_line(exc)}); install the extra: "
                            f"{INSTALL_HINT}") from None
    return types.SimpleNamespace(model_dicts=zoo.model_dicts, BenchmarkDataset=enums.BenchmarkDataset,
                                 ThreatModel=enums.ThreatModel)


@functools.lru_cache(maxsize=1)
def model_info() -> dict[str, Any]:
    """RobustBench's model info: dataset -> threat model -> name -> clean_acc, robust_acc, ...."""
    return json.loads(MODEL_INFO.read_text())


def expected_clean(dataset: str, threat_model: str, name: str) -> float | None:
    """RobustBench's clean accuracy of a model (a fraction of the full test set), when known."""
    entry = model_info().get(dataset, {}).get(threat_model, {}).get(name)
    return None if entry is None else float(entry["clean_acc"])


def checkpoint_path(model_dir: Path, dataset: str, threat_model: str, name: str) -> Path:
    """Where RobustBench keeps a model's checkpoint: ``<model_dir>/<dataset>/<threat_model>/<Name>.pt``."""
    return Path(model_dir) / dataset / threat_model / f"{name}.pt"


def library_load_model() -> Callable[..., nn.Module]:
    """``robustbench.utils.load_model``, imported like :func:`model_zoo` (its ``utils`` imports
    ``gdown`` at module level, one of the extra's packages, though a local checkpoint is never
    downloaded: :func:`load` checks that the file exists first)."""
    with _without_package_init():
        try:
            return importlib.import_module(f"{PACKAGE}.utils").load_model
        except ImportError as exc:
            raise UserError(f"robustbench's loader cannot be imported ({files.first_line(exc)}); install the extra: "
                            f"{INSTALL_HINT}") from None


def _entry(name: str, dataset: str, threat_model: str) -> dict[str, Any]:
    if not installed():
        raise UserError(f"robustbench:{name} needs the optional extra: {INSTALL_HINT}")
    zoo = model_zoo()
    try:
        models = zoo.model_dicts[zoo.BenchmarkDataset(dataset)][zoo.ThreatModel(threat_model)]
    except (KeyError, ValueError):
        raise UserError(f"RobustBench has no {dataset} {threat_model} models; pass --threat-model Linf, L2 or "
                        f"corruptions") from None
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"it has {len(models)} (robustbench.model_zoo)"
        raise UserError(f"RobustBench has no {dataset} {threat_model} model '{name}'; {hint}")
    return models[name]


@register_source(SOURCE_ROBUSTBENCH, lambda spec, options: spec.startswith(ROBUSTBENCH_PREFIX),
                 help="robustbench:<Name>: RobustBench's architecture and checkpoint from "
                      "<model-dir>/<dataset>/<threat model>/<Name>.pt (extra: robustbench)")
def load(spec: str, info: DatasetInfo, options: SourceOptions, device: torch.device) -> LoadedModel:
    """Load ``robustbench:<Name>`` for ``info``'s dataset from the local model folder."""
    name = spec[len(ROBUSTBENCH_PREFIX):]
    if not name:
        raise UserError("robustbench: needs a model name, e.g. robustbench:Wong2020Fast (the RobustBench leaderboard's "
                        "model IDs)")
    dataset = DATASET_NAMES.get(info.name)
    if dataset is None:
        raise UserError(f"{spec}: RobustBench has no {info.name} models (its datasets: cifar10, cifar100, imagenet); "
                        f"pass --dataset cifar10")
    threat_model = options.threat_model
    entry = _entry(name, dataset, threat_model)
    source = entry.get("gdrive_id")
    if source is None:
        raise UserError(f"{spec}: RobustBench builds this model with timm's pretrained weights (a download); only "
                        f"models with a checkpoint file can be loaded")
    if isinstance(source, list):
        raise UserError(f"{spec} is an ensemble of {len(source)} checkpoints; robdistill loads single models only")
    model_dir = options.resolved_model_dir()
    path = checkpoint_path(model_dir, dataset, threat_model, name)
    if not path.is_file():
        raise UserError(f"{spec}: no checkpoint at {path}; download it yourself (RobustBench's Google Drive file id "
                        f"{source}, or robustbench.utils.load_model('{name}', model_dir='{model_dir}', "
                        f"dataset='{dataset}', threat_model='{threat_model}') where there is internet) and put it there, "
                        f"or pass --model-dir")
    sha = files.verified_sha256(path, options.sha256)
    files.read_weights(path)  # an HTML page, a truncated file or a foreign pickle stops here, executing nothing
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # RobustBench's and timm's deprecation notices
            model = library_load_model()(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except (RuntimeError, KeyError, TypeError) as exc:  # the checkpoint does not fit the architecture
        raise UserError(f"{path} does not fit {ROBUSTBENCH_PREFIX}{name}'s architecture ({files.first_line(exc)}); "
                        f"it is not this model's checkpoint, download it again") from None
    expected = expected_clean(dataset, threat_model, name)
    details = {"threat_model": threat_model, "robustbench_dataset": dataset}
    return LoadedModel(model.to(device).eval(), Provenance(SOURCE_ROBUSTBENCH, spec, sha, str(path.resolve()), details),
                       expected, "RobustBench's model info" if expected is not None else "")
