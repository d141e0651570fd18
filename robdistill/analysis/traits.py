"""The other traits of robust models (Chen et al. 2020, "Adversarial robustness: from
self-supervised pre-training to fine-tuning" and the related observations on robust models):
accuracy under simple input corruptions and the smoothness of the first-layer filters. Used to ask
whether a student distilled from an AT teacher inherits more than its robust accuracy.

Corruptions are registered pure functions ``(images in [0, 1], severity, generator) -> images in
[0, 1]``; every one is deterministic for a seed and leaves the global RNG alone.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robdistill.data.datasets import Split
from robdistill.core.modes import eval_mode
from robdistill.core.registry import Registry
from robdistill.core.stats import Proportion, wilson

Corruption = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption")

# severities for 8x8 digits and 28x28 images alike: clearly visible, far from destroying the class
DEFAULT_SEVERITY = {"gaussian-noise": 0.2, "blur": 1.0, "contrast": 0.4}


@CORRUPTIONS.register("gaussian-noise")
def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise of standard deviation ``sigma``, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    return (x + sigma * noise).clamp(0.0, 1.0)


@CORRUPTIONS.register("blur")
def gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel 2 ceil(2 sigma) + 1, reflect padding)."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(torch.tensor(2.0 * sigma).ceil()))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect" if min(x.shape[-2:]) > radius else "replicate")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels).clamp(0.0, 1.0)


@CORRUPTIONS.register("contrast")
def contrast(x: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Contrast scaled by ``factor`` (< 1 lowers it) around each image's mean intensity."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0.0, 1.0)


def corruption_accuracy(model: nn.Module, data: Split, name: str, severity: float | None = None,
                        seed: int = 0, batch_size: int = 512) -> Proportion:
    """Accuracy on ``data`` corrupted by ``name`` (default severity from DEFAULT_SEVERITY)."""
    corrupt = CORRUPTIONS.get(name)
    severity = DEFAULT_SEVERITY[name] if severity is None else severity
    generator = torch.Generator(device=data.x.device).manual_seed(seed)
    correct = 0
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(data), batch_size):
            x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
            correct += int((model(corrupt(x, severity, generator)).argmax(1) == y).sum())
    return wilson(correct, len(data))


def first_conv(model: nn.Module) -> nn.Conv2d:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module
    raise ValueError("the model has no Conv2d layer")


def filter_total_variation(conv: nn.Conv2d) -> float:
    """Smoothness of first-layer filters: total variation (sum of absolute differences between
    horizontally and vertically adjacent weights) divided by the filter's L1 norm, averaged over
    filters. Scale-free; lower is smoother (Chen et al. 2020 show robust models have smoother,
    more edge-like first-layer filters)."""
    w = conv.weight.detach().float()
    tv = (w[..., 1:, :] - w[..., :-1, :]).abs().sum(dim=(1, 2, 3)) + \
        (w[..., :, 1:] - w[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    l1 = w.abs().sum(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((tv / l1).mean())


def traits(model: nn.Module, data: Split, seed: int = 0) -> dict[str, float]:
    """Every corruption accuracy at its default severity and the conv1 filter smoothness."""
    out = {f"corrupt/{name}": corruption_accuracy(model, data, name, seed=seed).value for name in CORRUPTIONS}
    out["conv1_tv"] = filter_total_variation(first_conv(model))
    return out
