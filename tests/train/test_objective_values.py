"""Each teacher objective pinned to a value computed by hand (plain Python floats, no torch) on a
tiny fixed linear model, a fixed batch and fixed adversarial examples (METHODS section 2)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robdistill.models.zoo import Classifier
from robdistill.train.objectives import OBJECTIVES, TrainContext

# logits = W x with W = [[1, 0], [0, 1], [-1, -1]]: easy to evaluate by hand
W = [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]
X = [[1.0, 0.0], [0.0, 0.5]]
X_ADV = [[0.5, 0.5], [0.5, 0.0]]
Y = [0, 1]


def logits_by_hand(x: list[float]) -> list[float]:
    return [sum(w * v for w, v in zip(row, x)) for row in W]


def ce_by_hand(z: list[float], y: int) -> float:
    return -z[y] + math.log(sum(math.exp(v) for v in z))


def softmax_by_hand(z: list[float]) -> list[float]:
    total = sum(math.exp(v) for v in z)
    return [math.exp(v) / total for v in z]


def sq_dist(a: list[float], b: list[float]) -> float:
    return sum((u - v) ** 2 for u, v in zip(a, b))


Z = [logits_by_hand(x) for x in X]            # [[1, 0, -1], [0, 0.5, -0.5]]
Z_ADV = [logits_by_hand(x) for x in X_ADV]    # [[0.5, 0.5, -1], [0.5, 0, -0.5]]
CE_CLEAN = sum(ce_by_hand(z, y) for z, y in zip(Z, Y)) / 2
CE_ADV = sum(ce_by_hand(z, y) for z, y in zip(Z_ADV, Y)) / 2
DIST = [sq_dist(a, b) for a, b in zip(Z, Z_ADV)]  # [0.5, 0.5]


class FixedAdversary(TrainContext):
    """Returns the fixed X_ADV instead of running an attack."""

    def __init__(self, **weights):
        super().__init__(eps=0.5, step_size=0.1, steps=1, generator=torch.Generator().manual_seed(0), **weights)

    def adversarial(self, model, x, y):
        return torch.tensor(X_ADV).view(2, 1, 1, 2)

    def kl_adversarial(self, model, x):
        return torch.tensor(X_ADV).view(2, 1, 1, 2)


@pytest.fixture
def tiny():
    model = Classifier(nn.Flatten(), 2, 3, (0.0,), (1.0,))
    with torch.no_grad():
        model.head.weight.copy_(torch.tensor(W))
        model.head.bias.zero_()
    x = torch.tensor(X).view(2, 1, 1, 2)
    return model.train(), x, torch.tensor(Y)


def loss_of(name: str, tiny, **weights) -> float:
    model, x, y = tiny
    return OBJECTIVES.get(name)(model, x, y, FixedAdversary(**weights)).loss.item()


def test_hand_logits_are_what_the_model_computes(tiny) -> None:
    model, x, _ = tiny
    assert model(x).flatten().tolist() == pytest.approx([v for z in Z for v in z])


def test_standard(tiny) -> None:
    assert loss_of("standard", tiny) == pytest.approx(CE_CLEAN, rel=1e-6)  # (0.40761 + 0.68027) / 2


def test_at(tiny) -> None:
    assert loss_of("at", tiny) == pytest.approx(CE_ADV, rel=1e-6)


def test_mpgd(tiny) -> None:
    assert loss_of("mpgd", tiny) == pytest.approx(0.5 * CE_CLEAN + 0.5 * CE_ADV, rel=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0])
def test_alp(tiny, lam: float) -> None:
    expected = 0.5 * CE_CLEAN + 0.5 * CE_ADV + lam * sum(DIST) / 2
    assert loss_of("alp", tiny, pairing_weight=lam) == pytest.approx(expected, rel=1e-6)


def test_aalp_sample_weighting(tiny) -> None:
    weights = [softmax_by_hand(z)[y] for z, y in zip(Z, Y)]
    expected = 0.5 * CE_CLEAN + 0.5 * CE_ADV + 1.5 * sum(w * d for w, d in zip(weights, DIST)) / 2
    assert loss_of("aalp-sw", tiny, alpha=1.5) == pytest.approx(expected, rel=1e-6)


def test_clp(tiny) -> None:
    expected = CE_CLEAN + 0.3 * sq_dist(Z[0], Z[1])  # one pair: (2/B) sum_{i<B/2} = the single distance
    assert loss_of("clp", tiny, pairing_weight=0.3) == pytest.approx(expected, rel=1e-6)


def test_lsq(tiny) -> None:
    norms = [math.sqrt(sum(v * v for v in z)) for z in Z]  # sqrt(2), sqrt(0.5)
    assert loss_of("lsq", tiny, pairing_weight=0.2) == pytest.approx(CE_CLEAN + 0.2 * sum(norms) / 2, rel=1e-6)


def test_trades(tiny) -> None:
    def kl(p: list[float], q: list[float]) -> float:
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    kls = [kl(softmax_by_hand(z), softmax_by_hand(za)) for z, za in zip(Z, Z_ADV)]
    expected = CE_CLEAN + 6.0 * sum(kls) / 2
    assert loss_of("trades", tiny, beta=6.0) == pytest.approx(expected, rel=1e-6)


def test_guided_dropout_by_hand(tiny) -> None:
    """aalp-gd on the tiny model: R_j = mean over the 4 rows (clean + adversarial) of |dL/dA_j A_j|;
    the feature with the larger R is kept, the other zeroed, and the loss recomputed with it."""
    model, x, y = tiny
    features = torch.tensor(X + X_ADV, requires_grad=True)
    clean, adv = model.head(features).chunk(2)
    # the ALP loss with lambda = 0.5 as a function of the features (test_alp pins "alp" to this formula)
    loss = 0.5 * F.cross_entropy(clean, y) + 0.5 * F.cross_entropy(adv, y) + 0.5 * (clean - adv).pow(2).sum(1).mean()
    grad, = torch.autograd.grad(loss, features)
    contribution = (grad * features).abs().mean(0).tolist()
    keep = [1.0 if c >= sum(contribution) / 2 else 0.0 for c in contribution]  # median of two = mean
    assert sorted(keep) == [0.0, 1.0]
    masked = [[v * k for v, k in zip(row, keep)] for row in X + X_ADV]
    zc, za = [logits_by_hand(r) for r in masked[:2]], [logits_by_hand(r) for r in masked[2:]]
    expected = (0.5 * sum(ce_by_hand(z, t) for z, t in zip(zc, Y)) / 2
                + 0.5 * sum(ce_by_hand(z, t) for z, t in zip(za, Y)) / 2
                + 0.5 * sum(sq_dist(a, b) for a, b in zip(zc, za)) / 2)
    assert loss_of("aalp-gd", tiny, pairing_weight=0.5) == pytest.approx(expected, rel=1e-6)
