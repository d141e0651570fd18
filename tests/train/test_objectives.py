"""Teacher objectives (METHODS section 2): each loss against its formula on a fixed model and batch."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill.models.zoo import Classifier, build_model
from robdistill.train.objectives import OBJECTIVES, TrainContext, guided_dropout_mask, trades_kl


class FixedAdversary(TrainContext):
    """A context whose 'adversarial examples' are fixed, so losses can be recomputed by hand."""

    def __init__(self, x_adv: torch.Tensor, **kw):
        super().__init__(eps=0.1, step_size=0.025, steps=2, generator=torch.Generator().manual_seed(0), **kw)
        self.x_adv = x_adv

    def adversarial(self, model, x, y):
        return self.x_adv

    def kl_adversarial(self, model, x):
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


def bn_model() -> Classifier:
    """A tiny classifier with batch norm on its features (as in resnet18 and timm models)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU())
    return Classifier(backbone, 16, 10, (0.5,), (0.5,)).train()


def test_trades_runs_clean_and_adversarial_as_separate_training_forwards(setup) -> None:
    """Zhang et al.'s reference code forwards the clean and the adversarial batch separately, so
    batch-norm statistics never mix the two: two training-mode forwards of B, clean first (not one of
    2B), and the running statistics are those of those two forwards in that order."""
    _, x, y, _ = setup
    model = bn_model()
    before = copy.deepcopy(model)
    calls: list[tuple[bool, torch.Tensor]] = []
    model.register_forward_pre_hook(lambda module, args: calls.append((module.training, args[0].detach().clone())))
    ctx = TrainContext(eps=0.1, step_size=0.05, steps=2, generator=torch.Generator().manual_seed(1), beta=6.0)
    out = OBJECTIVES.get("trades")(model, x, y, ctx)
    training = [inputs for is_training, inputs in calls if is_training]
    assert [len(inputs) for inputs in training] == [len(x), len(x)]
    assert torch.equal(training[0], x)
    x_adv = training[1]
    assert not torch.equal(x_adv, x) and (x_adv - x).abs().max() <= 0.1 + 1e-6
    # the same two forwards, clean then adversarial, on a copy: same BN statistics and the same loss
    clean, adv = before(x), before(x_adv)
    bn, bn_before = model.backbone[2], before.backbone[2]
    assert int(bn.num_batches_tracked) == 2
    torch.testing.assert_close(bn.running_mean, bn_before.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(bn.running_var, bn_before.running_var, rtol=0, atol=0)
    expected = F.cross_entropy(clean, y) + 6.0 * trades_kl(adv, clean.softmax(1)).mean()
    torch.testing.assert_close(out.loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.logits, clean.detach())


def test_trades_loss_without_batch_norm_is_that_of_one_joint_forward(setup) -> None:
    """Without batch norm, separate forwards change nothing: the loss is that of the former single
    forward of torch.cat([x, x~])."""
    model, x, y, x_adv = setup
    ctx = FixedAdversary(x_adv, beta=3.0)
    clean, adv = model(torch.cat([x, x_adv])).chunk(2)
    expected = F.cross_entropy(clean, y) + 3.0 * trades_kl(adv, clean.softmax(1)).mean()
    torch.testing.assert_close(OBJECTIVES.get("trades")(model, x, y, ctx).loss, expected, rtol=1e-6, atol=1e-7)
