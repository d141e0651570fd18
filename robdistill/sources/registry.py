"""Where a model comes from: one registry of model sources, the same for ``--teacher``,
``robdistill evaluate`` and ``rd.load_teacher``. A spec string is claimed by exactly one source:

    recipe        ``at``, ``teachers/my.toml``: trained here (or reused from the cache)
    checkpoint    a robdistill ``.pt`` checkpoint (architecture, dataset and weights in one file)
    robustbench   ``robustbench:<Name>``: RobustBench's architecture and its checkpoint from
                  ``<model-dir>/<dataset>/<threat model>/<Name>.pt``, never downloaded
    torchscript   a ``torch.jit.save`` archive
    state-dict    a state-dict file whose architecture is named (``--teacher-model``)

Every source but ``recipe`` loads an external file: its SHA-256 is taken (and checked against a
pinned value first), it is read with ``weights_only`` (robdistill.models.files), and the model
passes the integrity gate (robdistill.sources.gate) before anything is trained or logged."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from robdistill.core.errors import UserError
from robdistill.core.registry import Registry
from robdistill.data.datasets import DatasetInfo
from robdistill.models.checkpoints import FORMAT as CHECKPOINT_FORMAT
from robdistill.models import files

SOURCE_RECIPE = "recipe"
SOURCE_CHECKPOINT = "checkpoint"
SOURCE_ROBUSTBENCH = "robustbench"
SOURCE_TORCHSCRIPT = "torchscript"
SOURCE_STATE_DICT = "state-dict"
ROBUSTBENCH_PREFIX = "robustbench:"
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".jit", ".torchscript", ".tar")
DEFAULT_MODEL_DIR = "models"  # RobustBench's own default model_dir
THREAT_MODELS = ("Linf", "L2", "corruptions")


@dataclass(frozen=True)
class SourceOptions:
    """How an external model is found and checked: the CLI's ``--model-dir``, ``--threat-model``,
    ``--teacher-model`` (``arch``), ``--teacher-sha256`` and ``--expect-clean``.
    ``expect_clean``: the expected clean accuracy (a fraction), None for the source's own value
    (RobustBench's model info) if any; ``check_clean`` False skips the check (``--expect-clean off``)."""

    model_dir: Path | None = None
    threat_model: str = "Linf"
    arch: str | None = None
    sha256: str | None = None
    expect_clean: float | None = None
    check_clean: bool = True

    def __post_init__(self) -> None:
        if self.threat_model not in THREAT_MODELS:
            raise UserError(f"unknown threat model '{self.threat_model}'; choose one of: {', '.join(THREAT_MODELS)}")
        if self.expect_clean is not None and not 0.0 <= self.expect_clean <= 1.0:
            raise UserError(f"--expect-clean must be a fraction in [0, 1] (e.g. 0.85) or 'off'; got {self.expect_clean}")
        if self.sha256 is not None:
            files.check_sha256_value(self.sha256)

    def resolved_model_dir(self) -> Path:
        """``model_dir``, else ``$ROBDISTILL_MODEL_DIR``, else ``./models`` (RobustBench's default)."""
        return Path(self.model_dir or os.environ.get("ROBDISTILL_MODEL_DIR") or DEFAULT_MODEL_DIR)


def parse_expect_clean(text: str | float | None) -> tuple[float | None, bool]:
    """``--expect-clean``: a fraction (``0.85``, or ``85%``) -> (value, True); ``off`` -> (None, False)."""
    if text is None:
        return None, True
    if isinstance(text, (int, float)):
        return float(text), True
    value = text.strip().lower()
    if value in ("off", "none", "no"):
        return None, False
    try:
        number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise UserError(f"--expect-clean must be a fraction in [0, 1] (e.g. 0.85), a percentage (85%) or 'off'; "
                        f"got '{text}'") from None
    return number, True


@dataclass(frozen=True)
class Provenance:
    """Where a model came from: ``source`` (a registry name), ``id`` (what was named: a recipe
    name, ``robustbench:<Name>``, a path), the file's ``sha256`` and ``path``, and per-source
    ``details`` (threat model, architecture, expected and measured clean accuracy ...)."""

    source: str
    id: str
    sha256: str = ""
    path: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short, file-name safe name for runs and student checkpoints: the recipe name,
        ``robustbench-<Name>``, or the file's stem."""
        if self.source == SOURCE_RECIPE:
            raw = self.id if not self.id.endswith(".toml") else Path(self.id).stem
        elif self.source == SOURCE_ROBUSTBENCH:
            raw = self.id.replace(":", "-", 1)
        else:
            raw = Path(self.path or self.id).stem
        return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-") or self.source

    def params(self) -> dict[str, Any]:
        """What the runs log as ``<role>.source``, ``<role>.id``, ``<role>.sha256``, ...."""
        return {"source": self.source, "id": self.id, "sha256": self.sha256, "path": self.path, **self.details}

    def with_details(self, **details: Any) -> "Provenance":
        return replace(self, details={**self.details, **details})


@dataclass
class LoadedModel:
    """An external model, loaded (eval mode, on its device) but not yet through the gate.
    ``expected_clean`` is the source's own expected clean accuracy (RobustBench's model info)."""

    model: nn.Module
    provenance: Provenance
    expected_clean: float | None = None
    expected_from: str = ""


Loader = Callable[[str, DatasetInfo, SourceOptions, torch.device], LoadedModel]


@dataclass(frozen=True)
class ModelSource:
    """One way of naming a model: ``claims(spec, options)`` says whether a spec is this source's
    (cheap, loads nothing); ``load`` builds the model (None for recipes, which the pipeline
    trains)."""

    name: str
    claims: Callable[[str, SourceOptions], bool]
    load: Loader | None


SOURCES: Registry[ModelSource] = Registry("model source")


def _looks_like_file(spec: str) -> bool:
    path = Path(spec)
    return path.suffix.lower() in MODEL_FILE_SUFFIXES or os.sep in spec or path.is_file()


def _claims_recipe(spec: str, options: SourceOptions) -> bool:
    if spec.startswith(ROBUSTBENCH_PREFIX):
        return False
    return spec.endswith(".toml") or (options.arch is None and not _looks_like_file(spec))


def _claims_file(torchscript: bool, with_arch: bool) -> Callable[[str, SourceOptions], bool]:
    def claims(spec: str, options: SourceOptions) -> bool:
        if spec.startswith(ROBUSTBENCH_PREFIX) or spec.endswith(".toml") or not _looks_like_file(spec):
            return False
        path = Path(spec)
        is_script = path.is_file() and files.is_torchscript(path)
        return is_script == torchscript and (torchscript or (options.arch is not None) == with_arch)

    return claims


def register_source(name: str, claims: Callable[[str, SourceOptions], bool], help: str) -> Callable[[Loader], Loader]:
    """Register ``load`` as the loader of source ``name``."""
    def decorator(load: Loader) -> Loader:
        SOURCES.register(name, help=help)(ModelSource(name, claims, load))
        return load

    return decorator


SOURCES.register(SOURCE_RECIPE, help="a teacher recipe name or .toml path: trained here, or reused from the cache")(
    ModelSource(SOURCE_RECIPE, _claims_recipe, None))


def find_source(spec: str, options: SourceOptions = SourceOptions()) -> ModelSource:
    """The one source that claims ``spec``."""
    spec = str(spec)
    found = [SOURCES.get(name) for name in SOURCES if SOURCES.get(name).claims(spec, options)]
    if len(found) == 1:
        return found[0]
    if not found and options.arch is not None:
        raise UserError(f"--teacher-model / --model name the architecture of a state-dict file, and '{spec}' is not "
                        f"a file; give the path of the weights")
    raise UserError(f"cannot tell what '{spec}' is ({', '.join(s.name for s in found) or 'no source claims it'}); "
                    f"name a recipe, a model file, or robustbench:<Name>")


def is_recipe(spec: str, options: SourceOptions = SourceOptions()) -> bool:
    """Whether ``spec`` names a recipe (trained here) rather than an external model."""
    return find_source(spec, options).name == SOURCE_RECIPE


def load_model(spec: str, info: DatasetInfo, options: SourceOptions = SourceOptions(),
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load an external model (every source but ``recipe``) for ``info``'s dataset, in eval mode
    on ``device``; not yet through the gate (:func:`robdistill.sources.gate.admit`)."""
    source = find_source(str(spec), options)
    if source.load is None:
        raise UserError(f"'{spec}' is a recipe: train it (rd.train_teacher, `robdistill train-teacher`) or pass it "
                        f"as --teacher to run / distill")
    loaded = source.load(str(spec), info, options, torch.device(device))
    loaded.model.to(device).eval()
    return loaded


# -- the file sources ------------------------------------------------------------------------------

@register_source(SOURCE_CHECKPOINT, _claims_file(torchscript=False, with_arch=False),
                 help="a robdistill checkpoint (.pt): architecture, dataset and weights in one file")
def load_robdistill_checkpoint(spec: str, info: DatasetInfo, options: SourceOptions,
                               device: torch.device) -> LoadedModel:
    from robdistill.models.checkpoints import build_checkpoint_model, read_checkpoint

    path = files.require_file(Path(spec), "model file")
    sha = files.verified_sha256(path, options.sha256)
    payload = read_checkpoint(path)
    if payload["dataset"] != info.name:
        raise UserError(f"{path} is a {payload['dataset']} checkpoint, not {info.name}; pass --dataset "
                        f"{payload['dataset']}")
    model = build_checkpoint_model(payload, device)
    details = {"kind": payload.get("kind", ""), "arch": payload.get("model_name", "")}
    return LoadedModel(model, Provenance(SOURCE_CHECKPOINT, str(spec), sha, str(path.resolve()), details))


@register_source(SOURCE_TORCHSCRIPT, _claims_file(torchscript=True, with_arch=False),
                 help="a TorchScript archive (torch.jit.save) mapping [0, 1] images to logits")
def load_torchscript(spec: str, info: DatasetInfo, options: SourceOptions, device: torch.device) -> LoadedModel:
    import warnings

    path = files.require_file(Path(spec), "model file")
    sha = files.verified_sha256(path, options.sha256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.load(str(path), map_location=device)
    except Exception as exc:  # torch.jit raises RuntimeError and its own C++ error types
        raise UserError(f"{path} is truncated or not a TorchScript file ({files.first_line(exc)}); "
                        f"save it again with torch.jit.save") from None
    return LoadedModel(Scripted(scripted), Provenance(SOURCE_TORCHSCRIPT, str(spec), sha, str(path.resolve())))


class Scripted(nn.Module):
    """A TorchScript module as a plain ``nn.Module`` (attributes such as ``provenance`` can be set)."""

    def __init__(self, scripted: nn.Module):
        super().__init__()
        self.scripted = scripted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scripted(x)


STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def unwrap_state_dict(weights: Any, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from what a training script saved: the dict of tensors itself or its
    ``state_dict`` / ``model`` / ... entry, with DataParallel's ``module.`` prefixes dropped."""
    for key in STATE_DICT_KEYS:
        if isinstance(weights, dict) and isinstance(weights.get(key), dict):
            weights = weights[key]
            break
    if not isinstance(weights, dict) or not weights or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()):
        raise UserError(f"{path} holds no state dict (a dict of tensors, or one under 'state_dict'); save one with "
                        f"torch.save(model.state_dict(), FILE)")
    return {k.removeprefix("module."): v for k, v in weights.items()}


def load_state_dict_into(model: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """``model.load_state_dict(state)`` strictly, a mismatch as one line."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        parts = ([f"{len(missing)} missing, e.g. '{missing[0]}'"] if missing else []) + \
                ([f"{len(unexpected)} unexpected, e.g. '{unexpected[0]}'"] if unexpected else [])
        raise UserError(f"the state dict in {path} does not fit {what} ({'; '.join(parts)}); name the architecture "
                        f"it was saved from")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        shapes = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise UserError(f"the state dict in {path} does not fit {what} ({shapes[0] if shapes else files.first_line(exc)}); "
                        f"name the architecture it was saved from") from None


@register_source(SOURCE_STATE_DICT, _claims_file(torchscript=False, with_arch=True),
                 help="a state-dict file with its architecture named: --teacher-model NAME (ours: our Classifier's "
                      "state dict) or timm:<name> (a bare timm model's state dict)")
def load_state_dict_file(spec: str, info: DatasetInfo, options: SourceOptions, device: torch.device) -> LoadedModel:
    from robdistill.models.zoo import MODELS, build_model, build_timm_classifier

    assert options.arch is not None
    arch = options.arch
    path = files.require_file(Path(spec), "model file")
    sha = files.verified_sha256(path, options.sha256)
    weights = files.read_weights(path)
    if isinstance(weights, dict) and weights.get("format") == CHECKPOINT_FORMAT:  # it names its own architecture
        return load_robdistill_checkpoint(spec, info, replace(options, arch=None), device)
    state = unwrap_state_dict(weights, path)
    ours = any(k.startswith("backbone.") for k in state) and "head.weight" in state
    if arch.startswith("timm:") and not ours:
        model: nn.Module = build_timm_classifier(arch.split(":", 1)[1], info.shape, info.num_classes, info.mean,
                                                 info.std)
        load_state_dict_into(model.model, state, f"{arch} with {info.num_classes} classes", path)  # type: ignore[arg-type]
        layout = "timm"
    else:
        if not arch.startswith("timm:"):
            MODELS.get(arch)
        model = build_model(arch, info.shape, info.num_classes, info.mean, info.std)
        load_state_dict_into(model, state, f"robdistill's {arch} for {info.name}", path)
        layout = "robdistill-classifier"
    details = {"arch": arch, "layout": layout}
    return LoadedModel(model.to(device), Provenance(SOURCE_STATE_DICT, str(spec), sha, str(path.resolve()), details))
