"""Model registry (METHODS section 1): every model takes [0, 1] images, normalises inside, returns
logits, and exposes the penultimate activation through ``features`` / ``head``."""
from __future__ import annotations


import pytest
import torch
from torch import nn

from robdistill.core.errors import UserError
from robdistill.models.zoo import MODELS, Classifier, build_model, model_names

NUM_CLASSES = 10
MNIST_STATS = ((0.1307,), (0.3081,))
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))

# (name, shape, batch, expected feature_dim)
CASES = [
    ("small-cnn", (1, 8, 8), 4, 128),
    ("small-cnn", (1, 28, 28), 3, 128),
    ("lenet", (1, 8, 8), 4, 1024),
    ("lenet", (1, 28, 28), 3, 1024),
    ("resnet18", (3, 32, 32), 2, 512),
]
CASE_IDS = [f"{name}-{'x'.join(map(str, shape))}" for name, shape, _, _ in CASES]


def _timm_small() -> str:
    import timm

    return "timm:resnet10t" if "resnet10t" in timm.list_models() else "timm:resnet18"


# timm must build from its own code only (pretrained=False): any network connection fails the test
pytestmark = pytest.mark.usefixtures("no_network")


def stats_for(shape: tuple[int, int, int]):
    return CIFAR_STATS if shape[0] == 3 else MNIST_STATS


def build(name: str, shape: tuple[int, int, int], seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    mean, std = stats_for(shape)
    return build_model(name, shape, NUM_CLASSES, mean, std).eval()


def images(batch: int, shape: tuple[int, int, int], seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# registry


def test_registry_names() -> None:
    assert {"small-cnn", "lenet", "resnet18"} <= set(MODELS.names())
    assert "timm:<architecture>" in model_names()


class Run:
    """One model, one batch, one forward pass with gradient tracking, shared by the tests below
    (a ResNet-18 forward pass takes about a second on a small CPU)."""

    def __init__(self, name: str, shape, batch: int):
        self.model = build(name, shape)
        self.mean, self.std = stats_for(shape)
        self.x = images(batch, shape).requires_grad_(True)
        self.feats = self.model.features(self.x)
        self.logits = self.model(self.x)


_RUNS: dict[tuple, Run] = {}


@pytest.fixture
def run(request) -> Run:
    name, shape, batch, _ = request.node.callspec.params["case"]
    key = (name, shape, batch)
    if key not in _RUNS:
        _RUNS[key] = Run(name, shape, batch)
    return _RUNS[key]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_registry_model_gives_logits(run: Run, case) -> None:
    name, shape, batch, _ = case
    assert isinstance(run.model, Classifier)
    logits = run.logits.detach()
    assert logits.shape == (batch, NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    # per-sample outputs: different images give different logits
    assert not torch.allclose(logits[0], logits[1])


@pytest.mark.parametrize("name, shape, batch, dim", CASES, ids=CASE_IDS)
def test_num_classes_is_respected(name: str, shape, batch: int, dim: int) -> None:
    mean, std = stats_for(shape)
    model = build_model(name, shape, 7, mean, std).eval()
    assert model.head.out_features == 7
    if name != "resnet18":  # the 10-class forward pass above already covers the ResNet
        with torch.no_grad():
            assert model(images(2, shape)).shape == (2, 7)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_penultimate_activation(run: Run, case) -> None:
    _, _, batch, dim = case
    assert isinstance(run.model.head, nn.Linear)
    assert run.feats.shape == (batch, dim) == (batch, run.model.head.in_features)
    with torch.no_grad():
        torch.testing.assert_close(run.model.head(run.feats), run.logits.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_normalisation_lives_inside_the_model(run: Run, case) -> None:
    m = torch.tensor(run.mean).view(1, -1, 1, 1)
    s = torch.tensor(run.std).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = run.model.backbone((run.x - m) / s)
    torch.testing.assert_close(run.feats.detach(), expected, rtol=1e-6, atol=1e-6)
    # the statistics travel with the model (buffers, saved in the state dict, not trained)
    state = run.model.state_dict()
    torch.testing.assert_close(state["mean"], m)
    torch.testing.assert_close(state["std"], s)
    assert all(p is not run.model.mean and p is not run.model.std for p in run.model.parameters())


def test_normalisation_changes_the_features() -> None:
    """Same weights, different statistics: different features (the statistics are used)."""
    a = build("small-cnn", (1, 8, 8), seed=0)
    torch.manual_seed(0)
    b = build_model("small-cnn", (1, 8, 8), NUM_CLASSES, (0.2,), (0.7,)).eval()
    x = images(3, (1, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(a.backbone(x), b.backbone(x))  # same weights
        assert not torch.allclose(a.features(x), b.features(x), atol=1e-4)


def test_normalisation_is_per_channel() -> None:
    """Each channel is normalised with its own statistics: identity backbone makes it visible."""
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.25, 0.5)
    model = Classifier(nn.Flatten(), 3 * 2 * 2, NUM_CLASSES, mean, std)
    x = torch.tensor([0.3, 0.5, 0.4]).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
    out = model.features(x).view(3, 4)
    expected = torch.tensor([(0.3 - 0.1) / 0.2, (0.5 - 0.5) / 0.25, (0.4 - 0.9) / 0.5])
    torch.testing.assert_close(out, expected.view(3, 1).expand(3, 4), rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_input_gradient_flows(run: Run, case) -> None:
    _, _, batch, _ = case
    loss = nn.functional.cross_entropy(run.logits, torch.arange(batch) % NUM_CLASSES)
    (x_grad,) = torch.autograd.grad(loss, run.x, retain_graph=True)
    assert x_grad is not None
    assert x_grad.shape == run.x.shape
    assert torch.isfinite(x_grad).all()
    assert x_grad.abs().sum() > 0
    # each sample's loss depends on its own pixels: every image gets a nonzero gradient
    assert (x_grad.flatten(1).abs().sum(1) > 0).all()
    # and the usual .backward() path fills x.grad
    run.x.grad = None
    run.logits.sum().backward()
    assert run.x.grad is not None and run.x.grad.abs().sum() > 0


def test_input_gradient_matches_finite_difference() -> None:
    """The gradient returned for the [0, 1] input is the true one (normalisation included)."""
    torch.manual_seed(0)
    model = build_model("small-cnn", (1, 8, 8), NUM_CLASSES, (0.5,), (0.25,)).double().eval()
    x = images(1, (1, 8, 8)).double().requires_grad_(True)
    model(x)[0, 3].backward()
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = 1e-6
    with torch.no_grad():
        numeric = (model(x + h * direction)[0, 3] - model(x - h * direction)[0, 3]) / (2 * h)
    torch.testing.assert_close((x.grad * direction).sum(), numeric, rtol=1e-5, atol=1e-8)


def test_unknown_model_name_is_user_error() -> None:
    with pytest.raises(UserError) as info:
        build_model("vgg-nope", (1, 8, 8), NUM_CLASSES, (0.5,), (0.5,))
    message = str(info.value)
    assert "\n" not in message
    assert "vgg-nope" in message
    for name in ("small-cnn", "lenet", "resnet18"):
        assert name in message


# ----------------------------------------------------------------------------------------------
# timm


@pytest.fixture(scope="module")
def timm_model() -> Classifier:
    torch.manual_seed(0)
    return build_model(_timm_small(), (3, 32, 32), NUM_CLASSES, *CIFAR_STATS).eval()


def test_timm_model_gives_logits(timm_model: Classifier) -> None:
    x = images(2, (3, 32, 32))
    with torch.no_grad():
        logits = timm_model(x)
        feats = timm_model.features(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    assert feats.shape == (2, timm_model.head.in_features)
    torch.testing.assert_close(timm_model.head(feats), logits, rtol=0, atol=0)
    # normalisation inside, as for the registry models
    m = torch.tensor(CIFAR_STATS[0]).view(1, -1, 1, 1)
    s = torch.tensor(CIFAR_STATS[1]).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(feats, timm_model.backbone((x - m) / s), rtol=1e-6, atol=1e-6)


def test_timm_backbone_has_no_classifier(timm_model: Classifier) -> None:
    """The timm classifier is dropped: the wrapper's head is the only logits layer."""
    inner = timm_model.backbone.model
    assert inner.num_classes == 0
    with torch.no_grad():
        assert inner(images(2, (3, 32, 32))).shape == (2, timm_model.head.in_features)


def test_timm_input_gradient_flows(timm_model: Classifier) -> None:
    x = images(2, (3, 32, 32)).requires_grad_(True)
    timm_model(x).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    timm_model.zero_grad(set_to_none=True)


def test_timm_single_channel() -> None:
    torch.manual_seed(0)
    model = build_model(_timm_small(), (1, 28, 28), NUM_CLASSES, *MNIST_STATS).eval()
    with torch.no_grad():
        assert model(images(2, (1, 28, 28))).shape == (2, NUM_CLASSES)


def test_timm_model_with_hidden_head() -> None:
    import timm

    arch = "mobilenetv3_small_050"
    if arch not in timm.list_models():
        pytest.skip(f"timm has no {arch}")
    torch.manual_seed(0)
    model = build_model(f"timm:{arch}", (3, 32, 32), NUM_CLASSES, *CIFAR_STATS).eval()
    with torch.no_grad():
        assert model(images(2, (3, 32, 32))).shape == (2, NUM_CLASSES)
        assert model.features(images(2, (3, 32, 32))).shape == (2, model.head.in_features)


@pytest.mark.parametrize("name", ["timm:not-a-model", "timm:"])
def test_unknown_timm_model_is_user_error(name: str) -> None:
    with pytest.raises(UserError) as info:
        build_model(name, (3, 32, 32), NUM_CLASSES, *CIFAR_STATS)
    message = str(info.value)
    assert "\n" not in message
    assert "timm" in message
    if name == "timm:not-a-model":
        assert "not-a-model" in message
