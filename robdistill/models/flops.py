"""What a model's passes cost in floating-point operations, counted once per model and input shape
with ``torch.utils.flop_counter`` (matrix multiplies and convolutions, 2 FLOPs per multiply-add; the
elementwise layers count nothing, as every published FLOP count of these networks does).

An attack's backward pass asks for the input's gradient only (``torch.autograd.grad(loss, x)``: no
weight gradients), so :attr:`PassFlops.input_backward` is what a gradient step of an attack costs
beyond its forward; training's backward (weights too) is :attr:`PassFlops.train_backward`."""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from robdistill.core.modes import eval_mode


@dataclass(frozen=True)
class PassFlops:
    """FLOPs per image of one forward, one input-gradient backward and one training backward."""

    forward: float
    input_backward: float
    train_backward: float


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, PassFlops | None]]" = weakref.WeakKeyDictionary()


def model_flops(model: nn.Module, shape: tuple[int, ...], device: str | torch.device = "cpu") -> PassFlops | None:
    """FLOPs per image of ``model`` on images of ``shape`` (C, H, W), counted on one image in eval
    mode (the model's mode, gradients and RNG are left as they were) and cached per model and
    shape; None when the counter cannot trace the model or sees no operation it counts (a
    TorchScript module, say).

    Args:
        model: any module mapping images to logits.
        shape: one image's (C, H, W).
        device: where to count (the model's device).

    Returns:
        :class:`PassFlops`, or None.

    Example:
        >>> import torch
        >>> from robdistill.models.flops import model_flops
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> model_flops(net, (1, 8, 8))
        PassFlops(forward=1280.0, input_backward=1280.0, train_backward=2560.0)
    """
    per_shape = _CACHE.setdefault(model, {})
    key = (tuple(shape), str(device))
    if key not in per_shape:
        per_shape[key] = _count(model, tuple(shape), torch.device(device))
    return per_shape[key]


def _count(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> PassFlops | None:
    from torch.utils.flop_counter import FlopCounterMode

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        with eval_mode(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            x = torch.zeros(1, *shape, device=device, requires_grad=True)
            with FlopCounterMode(display=False) as forward:
                logits = model(x)
            with FlopCounterMode(display=False) as input_backward:
                torch.autograd.grad(logits.float().sum(), x, retain_graph=bool(params))
            train = 0
            if params:
                with FlopCounterMode(display=False) as weights:
                    torch.autograd.grad(logits.float().sum(), [x, *params])
                train = weights.get_total_flops()
    except Exception:  # noqa: BLE001  (a model the counter cannot trace: its cost stays unknown)
        return None
    if not forward.get_total_flops():  # nothing it can see (a TorchScript graph): unknown, not free
        return None
    return PassFlops(float(forward.get_total_flops()), float(input_backward.get_total_flops()),
                     float(train or input_backward.get_total_flops()))
