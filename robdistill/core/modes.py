"""Context managers that evaluation and attacks use to leave the caller's state untouched."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's previous mode (METHODS section 4)."""
    previous = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in previous:
            module.training = training


def private_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A seeded generator on ``device``: attacks never draw from the caller's global RNG."""
    return torch.Generator(device=device).manual_seed(int(seed))


@contextmanager
def preserved_global_rng(device: torch.device | str) -> Iterator[None]:
    """For third-party code that seeds or draws from the global RNG (e.g. pyautoattack)."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
