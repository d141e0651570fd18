"""Chen et al.'s other traits of robust models: corruptions and first-layer filter smoothness."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from robdistill.data.datasets import Split, load_dataset
from robdistill.models.zoo import build_model
from robdistill.analysis.traits import (CORRUPTIONS, corruption_accuracy, filter_total_variation, first_conv, traits)
from robdistill.train.loop import accuracy


@pytest.mark.parametrize("name", CORRUPTIONS.names())
def test_corruptions_stay_in_the_box_and_are_deterministic(name: str) -> None:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    state = torch.get_rng_state()
    a = CORRUPTIONS.get(name)(x, 0.5, torch.Generator().manual_seed(3))
    b = CORRUPTIONS.get(name)(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)


def test_corruptions_at_their_neutral_severity_and_on_constant_images() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g)
    assert torch.equal(CORRUPTIONS.get("gaussian-noise")(x, 0.0, g), x)
    torch.testing.assert_close(CORRUPTIONS.get("contrast")(x, 1.0, g), x)
    flat = torch.full((2, 1, 8, 8), 0.3)
    torch.testing.assert_close(CORRUPTIONS.get("blur")(flat, 1.0, g), flat)
    assert torch.allclose(CORRUPTIONS.get("contrast")(x, 0.0, g), x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))
    # blur keeps the mean of a periodic-ish image roughly and lowers its variation
    noisy = torch.rand(1, 1, 16, 16, generator=g)
    blurred = CORRUPTIONS.get("blur")(noisy, 1.0, g)
    tv = lambda z: (z[..., 1:, :] - z[..., :-1, :]).abs().sum() + (z[..., 1:] - z[..., :-1]).abs().sum()  # noqa: E731
    assert tv(blurred) < 0.5 * tv(noisy)


def test_filter_total_variation_by_hand() -> None:
    conv = nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight[0] = 1.0                                                  # constant: TV 0
        conv.weight[1] = torch.tensor([[1., -1., 1.], [-1., 1., -1.], [1., -1., 1.]])  # checkerboard
    # checkerboard: 12 adjacent pairs, each |difference| 2 -> TV 24, L1 9
    assert filter_total_variation(conv) == pytest.approx((0 + 24 / 9) / 2)
    with torch.no_grad():
        conv.weight *= 7.0
    assert filter_total_variation(conv) == pytest.approx((0 + 24 / 9) / 2)  # scale-free


def test_corruption_accuracy_and_traits_on_a_model() -> None:
    splits = load_dataset("digits")
    info = splits.info
    torch.manual_seed(0)
    model = build_model("small-cnn", info.shape, info.num_classes, info.mean, info.std)
    test = Split(splits.test.x[:100], splits.test.y[:100])
    clean = accuracy(model, test)
    assert corruption_accuracy(model, test, "gaussian-noise", severity=0.0).value == pytest.approx(clean)
    assert corruption_accuracy(model, test, "contrast", severity=1.0).value == pytest.approx(clean)
    assert first_conv(model) is next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    values = traits(model, test)
    assert set(values) == {"corrupt/gaussian-noise", "corrupt/blur", "corrupt/contrast", "conv1_tv"}
    assert model.training  # restored
