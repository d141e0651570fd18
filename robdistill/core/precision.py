"""Numeric precision of the passes that *craft* adversarial examples and *train* models.

``fp32`` is the reference. ``fp32-cl`` is fp32 math with the model's convolution weights in
channels-last layout (a layout-only lever: 1.07-1.43x on PGD and adversarial-training epochs on
this project's AVX2 CPU, though not everywhere: ``benchmarks/results/speed_precision_cpu.md``).
``bf16`` runs the crafting and training passes under ``torch.autocast(dtype=torch.bfloat16)``
with channels-last weights: it pays only where bf16 is native (AVX-512-BF16/AMX CPUs, recent
GPUs; the issue that asked for it measured 3-4.5x on an AMX CPU), and runs about 12x *slower*
than fp32 where it is emulated (the same results file). Parameters, optimiser state and losses
stay fp32 (autocast's rule), so no loss scaling is needed.

**Verdicts are fp32** whatever the precision: a sample's robust flag, every reported accuracy and
every sanity check come from an fp32 forward (the attacks call :meth:`Precision.verdict`), and a
teacher's logits that a student learns from are computed in fp32.
"""
from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import ContextManager, Iterator

import torch
from torch import nn

from robdistill.core.registry import Registry


@dataclass(frozen=True)
class Precision:
    """How crafting and training passes run: an autocast dtype (None = plain fp32) and whether the
    model's 4-d weights are put in channels-last layout while they run."""

    name: str
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    #: crafting forwards go through ``torch.compile`` of the model (``--compile``); verdicts stay eager
    compile: bool = False

    @property
    def reduced(self) -> bool:
        """Whether crafting passes differ from the verdict's eager fp32 forward (below fp32, or
        compiled: a compiled fp32 forward differs in the last bits), so the attacks must confirm their
        verdicts with an eager fp32 forward."""
        return self.autocast_dtype is not None or self.compile

    def compiled(self) -> "Precision":
        """This precision with crafting forwards through ``torch.compile`` (named ``<name>+compile``)."""
        return self if self.compile else replace(self, name=f"{self.name}+compile", compile=True)

    def autocast(self, device: torch.device | str) -> ContextManager[object]:
        """The region where crafting / training forwards run (a no-op for fp32)."""
        if self.autocast_dtype is None:
            return nullcontext()
        device_type = torch.device(device).type
        _warn_if_emulated(self.name, self.autocast_dtype, device_type)
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``model(x)`` under this precision (compiled, with ``compile``), as fp32 logits (for losses
        and gradients)."""
        with self.autocast(x.device):
            out = (compiled_model(model) if self.compile else model)(x)
        return out.float() if self.reduced else out

    @staticmethod
    def verdict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """An fp32 forward without gradient, also inside an autocast region: what every robust
        flag and accuracy is decided by."""
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return model(x).float()

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with this precision's memory layout for the ``with`` block, then as it was (a
        channels-last layout is undone only if the model did not have it already)."""
        convert = self.channels_last and _has_contiguous_4d_weights(model)
        if convert:
            model.to(memory_format=torch.channels_last)
        try:
            yield model
        finally:
            if convert:
                model.to(memory_format=torch.contiguous_format)


_COMPILED_ATTR = "_robdistill_compiled"


def compiled_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model, dynamic=True)``, once per model (an attack drops the samples it fools,
    so its batches change size: one graph for every size). The compiled module shares the model's
    weights and mode. It is kept in the model's ``__dict__``, outside its sub-modules (so not in its
    ``state_dict``), and goes when the model goes."""
    compiled = model.__dict__.get(_COMPILED_ATTR)
    if compiled is None:
        compiled = torch.compile(model, dynamic=True)
        object.__setattr__(model, _COMPILED_ATTR, compiled)
    return compiled


class PrecisionWarning(RuntimeWarning):
    """A reduced precision asked for on hardware that only emulates it (slower, not faster)."""


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 natively: a CUDA GPU that supports it, or a CPU whose
    oneDNN has bf16 kernels (AVX-512-BF16 / AMX). Elsewhere bf16 convolutions fall back to a slow
    reference path (measured 6-18x slower than fp32 on an AVX2-only CPU: speed_precision_cpu.md)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


@functools.lru_cache(maxsize=None)
def _warn_if_emulated(name: str, dtype: torch.dtype, device_type: str) -> None:
    """Once per process and device type: a warning when ``dtype`` is not native there."""
    if dtype == torch.bfloat16 and not native_bf16(device_type):
        warnings.warn(f"precision {name}: this {device_type.upper()} has no native bf16 (needs AVX-512-BF16/AMX or a "
                      f"bf16 GPU), so bf16 runs slower than fp32 here; use --precision fp32", PrecisionWarning,
                      stacklevel=3)


def _has_contiguous_4d_weights(model: nn.Module) -> bool:
    weights = [p for p in model.parameters() if p.dim() == 4]
    return bool(weights) and all(p.is_contiguous() for p in weights)


PRECISIONS: Registry[Precision] = Registry("precision")
PRECISIONS.register("fp32", help="fp32 everywhere (the reference; the CI gate's)")(Precision("fp32"))
PRECISIONS.register("fp32-cl", help="fp32 math, conv weights in channels-last layout while training / attacking "
                    "(faster on some CPUs; same verdict rule)")(Precision("fp32-cl", channels_last=True))
PRECISIONS.register("bf16", help="bf16 autocast + channels-last for crafting and training; verdicts in fp32")(
    Precision("bf16", torch.bfloat16, channels_last=True))


def resolve_precision(precision: "str | Precision") -> Precision:
    """A registered precision by name (a one-line error naming the choices), or the object itself."""
    return precision if isinstance(precision, Precision) else PRECISIONS.get(str(precision))
