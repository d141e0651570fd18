"""WideResNet-34-10 (Zagoruyko & Komodakis 2016), the network of Madry et al. 2018 and Zhang et al.
2019: builds as a normalising Classifier and maps CIFAR-sized images to logits (one cheap forward)."""
from __future__ import annotations

import pytest
import torch

from robdistill.models.zoo import MODELS, Classifier, build_model, wide_resnet


def test_wrn_34_10_maps_images_to_logits(single_thread) -> None:
    torch.manual_seed(0)
    model = build_model("wrn-34-10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert isinstance(model, Classifier) and "wrn-34-10" in MODELS.names()
    # 46.2M parameters, as reported for WRN-34-10 (TRADES' copy adds an unused sub-block)
    assert sum(p.numel() for p in model.parameters()) == 46_160_474
    assert model.head.in_features == 640
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_wide_resnet_depth_and_blocks() -> None:
    backbone, dim = wide_resnet(10, 1)((3, 32, 32))  # one block per group, widths 16, 32, 64
    assert dim == 64
    assert torch.isfinite(backbone(torch.rand(2, 3, 32, 32))).all()
    with pytest.raises(ValueError, match="6n \\+ 4"):
        wide_resnet(33, 10)
