"""Teacher objectives (SPEC section 2): each loss against its formula on a fixed model and batch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robdistill.models import build_model
from robdistill.objectives import OBJECTIVES, TrainContext, guided_dropout_mask


class FixedAdversary(TrainContext):
    """A context whose 'adversarial examples' are fixed, so losses can be recomputed by hand."""

    def __init__(self, x_adv: torch.Tensor, **kw):
        super().__init__(eps=0.1, step_size=0.025, steps=2, generator=torch.Generator().manual_seed(0), **kw)
        self.x_adv = x_adv

    def adversarial(self, model, x, y):
        return self.x_adv


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 8, 8), 10, (0.5,), (0.5,)).train()
    x = torch.rand(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    x_adv = (x + 0.1 * torch.randn_like(x).sign()).clamp(0, 1)
    return model, x, y, x_adv


def test_every_objective_trains_and_leaves_training_mode(setup) -> None:
    model, x, y, _ = setup
    for name in OBJECTIVES.names():
        ctx = TrainContext(eps=0.1, step_size=0.05, steps=2, generator=torch.Generator().manual_seed(1))
        out = OBJECTIVES.get(name)(model, x, y, ctx)
        assert torch.isfinite(out.loss), name
        out.loss.backward()
        assert model.training and all(m.training for m in model.modules()), name
        assert out.logits.shape == (6, 10)
        model.zero_grad()


def test_standard_and_at_losses(setup) -> None:
    model, x, y, x_adv = setup
    ctx = FixedAdversary(x_adv)
    assert torch.allclose(OBJECTIVES.get("standard")(model, x, y, ctx).loss, F.cross_entropy(model(x), y))
    assert torch.allclose(OBJECTIVES.get("at")(model, x, y, ctx).loss, F.cross_entropy(model(x_adv), y))


def test_mpgd_alp_and_adaptive_pairing(setup) -> None:
    model, x, y, x_adv = setup
    z, z_adv = model(x), model(x_adv)
    mixed = 0.5 * F.cross_entropy(z, y) + 0.5 * F.cross_entropy(z_adv, y)
    distance = (z - z_adv).pow(2).sum(1)
    ctx = FixedAdversary(x_adv, pairing_weight=0.7, alpha=1.3)
    assert torch.allclose(OBJECTIVES.get("mpgd")(model, x, y, ctx).loss, mixed, atol=1e-6)
    assert torch.allclose(OBJECTIVES.get("alp")(model, x, y, ctx).loss, mixed + 0.7 * distance.mean(), atol=1e-6)
    weights = z.softmax(1)[torch.arange(6), y]
    expected = mixed + 1.3 * (weights * distance).mean()
    assert torch.allclose(OBJECTIVES.get("aalp-sw")(model, x, y, ctx).loss, expected, atol=1e-6)


def test_adaptive_weights_are_detached(setup) -> None:
    """Eq. 9: w_i is a constant; the gradient equals that of the loss with w_i frozen by hand."""
    model, x, y, x_adv = setup
    ctx = FixedAdversary(x_adv, alpha=1.0)
    loss = OBJECTIVES.get("aalp-sw")(model, x, y, ctx).loss
    grads = torch.autograd.grad(loss, list(model.parameters()))
    z, z_adv = model(x), model(x_adv)
    weights = z.softmax(1)[torch.arange(6), y].detach()
    manual = (0.5 * F.cross_entropy(z, y) + 0.5 * F.cross_entropy(z_adv, y)
              + (weights * (z - z_adv).pow(2).sum(1)).mean())
    manual_grads = torch.autograd.grad(manual, list(model.parameters()))
    for a, b in zip(grads, manual_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_guided_dropout_mask_keeps_features_at_or_above_median() -> None:
    features = torch.tensor([[1.0, -2.0, 3.0, 0.5], [2.0, 1.0, -1.0, 0.0]], requires_grad=True)
    weights = torch.tensor([1.0, 1.0, 0.1, 4.0])
    loss = (features * weights).sum()
    # R_j = mean_i |w_j * A_ij| = [1.5, 1.5, 0.2, 1.0]; median 1.25 -> keep features 0 and 1
    mask = guided_dropout_mask(features, loss)
    assert mask.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_aalp_applies_guided_dropout_only_in_training(setup) -> None:
    model, x, y, x_adv = setup
    ctx = FixedAdversary(x_adv, alpha=1.0)
    out = OBJECTIVES.get("aalp")(model, x, y, ctx)
    assert out.logs["gd_kept_fraction"] == pytest.approx(0.5, abs=0.05)
    # the masked loss differs from the unmasked (aalp-sw) loss on the same batch ...
    assert not torch.allclose(out.loss, OBJECTIVES.get("aalp-sw")(model, x, y, ctx).loss)
    # ... while the model itself is never masked: eval forward equals head(features)
    model.eval()
    assert torch.allclose(model(x), model.head(model.features(x)))
