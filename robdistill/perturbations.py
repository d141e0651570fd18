"""Perturbations of the teacher's logits before distillation (SPEC section 3; Seguin et al. 2021).

Each is a pure function ``(logits, generator, temperature) -> logits'`` of a (B, C) tensor:
it never modifies its input and draws randomness only from ``generator``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .registry import Registry

Perturbation = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def nonmax_positions(logits: torch.Tensor) -> torch.Tensor:
    """(B, C-1) column indices of every non-max entry, in increasing order (max = first argmax)."""
    batch, classes = logits.shape
    top = logits.argmax(1, keepdim=True)
    columns = torch.arange(classes, device=logits.device).expand(batch, classes)
    return columns[columns != top].view(batch, classes - 1)


@PERTURBATIONS.register("keep")
def keep(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """The teacher's logits unchanged (plain distillation)."""
    return logits.clone()


@PERTURBATIONS.register("nonmax-shuffle")
def nonmax_shuffle(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Scramble: per sample, permute the C-1 non-max values uniformly among the non-max positions.

    Keeps the max position and value and the multiset of values, so the max-class probability is
    unchanged at every temperature; loses the incorrect-class ordering (Seguin et al. Sec. 5)."""
    positions = nonmax_positions(logits)
    values = logits.gather(1, positions)
    keys = torch.rand(values.shape, generator=generator, device=generator.device).to(values.device)
    shuffled = values.gather(1, keys.argsort(1))
    return logits.clone().scatter_(1, positions, shuffled)


@PERTURBATIONS.register("nonmax-flatten")
def nonmax_flatten(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Flatten: every non-max logit becomes c = T log((1/(C-1)) sum_{j!=k} exp(z_j / T)).

    The max-class probability at temperature T is exactly the teacher's (the non-max mass
    sum_j exp(z_j/T) is preserved); all incorrect-class information is gone. Since c is a mean in
    exp-space it lies strictly below the max whenever any non-max logit does, so argmax is kept."""
    positions = nonmax_positions(logits)
    values = logits.gather(1, positions)
    flat = temperature * (torch.logsumexp(values / temperature, dim=1, keepdim=True) - math.log(positions.shape[1]))
    # Guard the argmax against float rounding when non-max logits sit within a few ulps of the max.
    top = logits.amax(1, keepdim=True)
    below_top = torch.nextafter(top, torch.full_like(top, float("-inf")))
    any_below = (values < top).any(1, keepdim=True)
    flat = torch.where(any_below, torch.minimum(flat, below_top), torch.minimum(flat, top))
    return logits.clone().scatter_(1, positions, flat.expand_as(positions))


def perturbation_names() -> list[str]:
    return PERTURBATIONS.names()
