"""Data augmentation for distillation (METHODS section 3): label-free, input-space transforms of clean
training images, never adversarial. Each is a pure function ``(x, generator) -> x'`` of a
(B, C, H, W) batch in [0, 1]; with augmentation on, the teacher's logits are computed per
augmented view instead of once per image."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from robdistill.core.registry import Registry

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation | None] = Registry("augmentation")
AUGMENTATIONS.register("none", help="no augmentation: teacher logits computed once and cached")(None)


def random_translate(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop after zero padding by ``pad``: each image shifted by (dy, dx) in [-pad, pad]^2."""
    batch, _, height, width = x.shape
    shifts = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator,
                           device=generator.device).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (shifts[:, 0, None] + torch.arange(height, device=x.device))[:, None, :, None]
    cols = (shifts[:, 1, None] + torch.arange(width, device=x.device))[:, None, None, :]
    index = torch.arange(batch, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[index, channels, rows, cols]


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@AUGMENTATIONS.register("shift1", help="random shift by up to 1 pixel (for 8x8 digits)")
def shift1(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_translate(x, generator, 1)


@AUGMENTATIONS.register("crop", help="random crop after 2-pixel (28x28) zero padding")
def crop(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_translate(x, generator, 2)


@AUGMENTATIONS.register("crop-flip", help="random crop after 4-pixel padding + horizontal flip (CIFAR-10)")
def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_hflip(random_translate(x, generator, 4), generator)
