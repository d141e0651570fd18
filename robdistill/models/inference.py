"""Forward passes a caller only reads: a model's logits on many images, batched, in eval mode and
without gradients (the teacher's logits in distillation, the integrity gate, the logit analyses)."""
from __future__ import annotations

import torch
from torch import nn

from robdistill.core.modes import eval_mode


def logits_of(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model``'s logits on ``x`` in batches of ``batch_size``, in eval mode (restored after) and
    without gradients.

    Args:
        model: any module mapping [0, 1] images to logits.
        x: the images, (N, C, H, W).
        batch_size: images per forward.

    Returns:
        The (N, classes) logits.
    """
    with eval_mode(model), torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
