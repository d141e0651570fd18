"""Perturbations of the teacher's logits before distillation (METHODS section 3; Seguin et al. 2021).

Each is a pure function ``(logits, generator, temperature) -> logits'`` of a (B, C) tensor:
it never modifies its input and draws randomness only from ``generator``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from robdistill.core.registry import Registry

Perturbation = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]
PERTURBATIONS: Registry[Perturbation] = Registry("perturbation")


def nonmax_positions(logits: torch.Tensor) -> torch.Tensor:
    """(B, C-1) column indices of every non-max entry, in increasing order (max = first argmax)."""
    batch, classes = logits.shape
    top = logits.argmax(1, keepdim=True)
    columns = torch.arange(classes, device=logits.device).expand(batch, classes)
    return columns[columns != top].view(batch, classes - 1)


def untie_max(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The (B, C-1) non-max ``values`` of ``logits`` with every entry equal to its row max lowered by
    one ulp (torch.nextafter toward -inf), so that the first argmax is the unique maximum."""
    top = logits.amax(1, keepdim=True)
    below_top = torch.nextafter(top, torch.full_like(top, float("-inf")))
    return torch.where(values == top, below_top.expand_as(values), values)


@PERTURBATIONS.register("keep")
def keep(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """The teacher's logits unchanged (plain distillation)."""
    return logits.clone()


@PERTURBATIONS.register("nonmax-shuffle")
def nonmax_shuffle(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Scramble: per sample, permute the C-1 non-max values uniformly among the non-max positions.

    Keeps the max position and value and the multiset of values, so the max-class probability is
    unchanged at every temperature; loses the incorrect-class ordering (Seguin et al. Sec. 5).

    Ties at the max (METHODS section 3): k is the first argmax, and the other copies of the max value
    are non-max entries; shuffled before k they would move the argmax. So before shuffling every
    such copy is lowered by one ulp (``untie_max``): k stays the unique max, its value is kept, and
    the multiset is kept except that the tied copies move down one ulp (the max-class probability
    changes by at most a relative ulp(z_k) / T)."""
    positions = nonmax_positions(logits)
    values = untie_max(logits, logits.gather(1, positions))
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
    return logits.clone().scatter_(1, positions, _below_max(flat, logits, values).expand_as(positions))


def _below_max(candidate: torch.Tensor, logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Clip a (B, 1) replacement for the non-max logits so that the first argmax stays first when
    float rounding would lift it to (or above) the max: one ulp below the max when any non-max
    value is below it, the max itself when every value ties."""
    top = logits.amax(1, keepdim=True)
    below_top = torch.nextafter(top, torch.full_like(top, float("-inf")))
    any_below = (values < top).any(1, keepdim=True)
    return torch.where(any_below, torch.minimum(candidate, below_top), torch.minimum(candidate, top))


@PERTURBATIONS.register("nonmax-flatten-mean")
def nonmax_flatten_mean(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Flatten to the arithmetic mean: every non-max logit becomes (1/(C-1)) sum_{j!=k} z_j
    (METHODS section 3, extra). Keeps argmax and the sum of the logits; unlike ``nonmax-flatten`` the
    max-class probability changes (it rises: by Jensen, the mean is at most the exp-space mean)."""
    positions = nonmax_positions(logits)
    values = logits.gather(1, positions)
    mean = values.mean(1, keepdim=True)
    return logits.clone().scatter_(1, positions, _below_max(mean, logits, values).expand_as(positions))


ONEHOT_MARGIN = 50.0  # exp(-50) ~ 2e-22: every non-max probability underflows a float32 distribution


@PERTURBATIONS.register("onehot")
def onehot(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Hard teacher label (METHODS section 3, extra): T * 50 at the argmax, 0 elsewhere, so that
    softmax(z'/T) is the one-hot teacher prediction to within exp(-50) per class. No confidence and
    no incorrect-class information; finite, so the distillation KL stays finite."""
    out = torch.zeros_like(logits)
    return out.scatter_(1, logits.argmax(1, keepdim=True), ONEHOT_MARGIN * temperature)


def max_class_log_odds(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B,) log(p_k / (1 - p_k)) of the max class at temperature T: z_k/T - logsumexp_{j!=k} z_j/T."""
    positions = nonmax_positions(logits)
    top = logits.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
    return top / temperature - torch.logsumexp(logits.gather(1, positions) / temperature, dim=1)


@PERTURBATIONS.register("confidence-swap")
def confidence_swap(logits: torch.Tensor, generator: torch.Generator, temperature: float) -> torch.Tensor:
    """Give each sample another sample's confidence (METHODS section 3, extra): a seeded random
    permutation pi of the rows; sample i keeps its non-max logits (so its incorrect-class ordering
    and their relative probabilities) and its max logit is set so that its max-class probability at
    temperature T is that of sample pi(i). Destroys sample-wise confidence, keeps class ordering.

    When the donor is so unsure that its probability would put the max class below sample i's
    runner-up, the max logit is set one ulp above the runner-up instead (the ordering wins).
    The permutation runs over the rows it is given: the whole training set when teacher logits are
    cached, one batch with augmentation (then about 1/B of the samples keep their own confidence)."""
    batch = logits.shape[0]
    perm = torch.randperm(batch, generator=generator, device=generator.device).to(logits.device)
    positions = nonmax_positions(logits)
    values = logits.gather(1, positions)
    target = temperature * (max_class_log_odds(logits, temperature)[perm]
                            + torch.logsumexp(values / temperature, dim=1))
    runner_up = values.amax(1)
    above = torch.nextafter(runner_up, torch.full_like(runner_up, float("inf")))
    k = logits.argmax(1, keepdim=True)
    return logits.clone().scatter_(1, k, torch.maximum(target, above)[:, None])


def perturbation_names() -> list[str]:
    return PERTURBATIONS.names()
