"""Model registry. Every model is a :class:`Classifier`: normalisation inside, logits out,
and the penultimate activation (the input of the logits layer) reachable through
:meth:`Classifier.features` / :meth:`Classifier.head` (Guided Dropout and the analyses need it).

Architectures: ``small-cnn`` (8x8 and 28x28), ``compact-cnn`` (28x28, a tenth of small-cnn's cost), ``lenet`` (Madry et al.'s MNIST network),
``resnet18`` (the CIFAR/SVHN ResNet-18 with a 3x3 stem), ``wrn-34-10`` (the WideResNet of Madry et
al. 2018 and Zhang et al. 2019) and ``timm:<name>`` for any timm model.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from robdistill.core.errors import UserError
from robdistill.core.registry import Registry


class Classifier(nn.Module):
    """Wraps a backbone (image -> penultimate features) and a linear head, with the input
    normalisation inside so that attacks work in [0, 1] pixel space (METHODS section 1).

    Args:
        backbone: images (normalised) to penultimate features.
        feature_dim: the features' width.
        num_classes: the logits' width.
        mean, std: per-channel normalisation, applied first.

    Example:
        >>> import torch, robdistill as rd
        >>> backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU())
        >>> model = rd.Classifier(backbone, 32, 10, mean=(0.5,), std=(0.5,))
        >>> x = torch.rand(3, 1, 8, 8)
        >>> model.features(x).shape, model(x).shape
        (torch.Size([3, 32]), torch.Size([3, 10]))
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activation A (the input of the logits layer) for images in [0, 1]."""
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


BackboneFactory = Callable[[tuple[int, int, int]], tuple[nn.Module, int]]
MODELS: Registry[BackboneFactory] = Registry("model")


@MODELS.register("small-cnn")
def small_cnn(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Small CNN for 8x8 and 28x28 inputs: two conv blocks, 2x2 pooling to a fixed grid, FC-128."""
    channels = shape[0]
    body = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4, 128), nn.ReLU(),
    )
    return body, 128


@MODELS.register("compact-cnn")
def compact_cnn(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Compact CNN for 28x28 inputs: conv 4x4-32 stride 2, conv 4x4-64 stride 2, FC-200 (2.3 M
    multiply-adds per 28x28 image against small-cnn's 21.9 M). The layout of Wong & Kolter's (2018)
    MNIST network (two strided 4x4 convolutions and one hidden FC layer) at twice its width."""
    channels, height, width = shape
    convs = nn.Sequential(
        nn.Conv2d(channels, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
    )
    flat = 64 * (height // 4) * (width // 4)
    return nn.Sequential(convs, nn.Linear(flat, 200), nn.ReLU()), 200


@MODELS.register("lenet")
def lenet(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """Madry et al.'s MNIST network: conv5x5-32, pool, conv5x5-64, pool, FC-1024."""
    channels, height, width = shape
    convs = nn.Sequential(
        nn.Conv2d(channels, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = 64 * (height // 4) * (width // 4)
    return nn.Sequential(convs, nn.Linear(flat, 1024), nn.ReLU()), 1024


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet18")
def resnet18_cifar(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """ResNet-18 for 32x32 images (CIFAR-10 / SVHN): 3x3 stem, no max-pool, 512 features."""
    layers: list[nn.Module] = [nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 512


class _WideBlock(nn.Module):
    """Pre-activation basic block of a WideResNet (Zagoruyko & Komodakis 2016): BN-ReLU-conv3x3 twice;
    where the shape changes, a 1x1 convolution of the pre-activated input is the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


def wide_resnet(depth: int, widen: int) -> BackboneFactory:
    """WRN-depth-widen for 32x32 images (Zagoruyko & Komodakis 2016) as in Zhang et al.'s TRADES
    code: a 3x3 stem of 16 channels, three groups of (depth - 4) / 6 blocks of 16, 32, 64 x widen
    channels (strides 1, 2, 2), BN-ReLU, global average pooling; convolutions He-normal (fan out)."""
    if (depth - 4) % 6:
        raise ValueError(f"a WideResNet's depth is 6n + 4; got {depth}")

    def factory(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
        layers: list[nn.Module] = [nn.Conv2d(shape[0], 16, 3, 1, 1, bias=False)]
        cin = 16
        for cout, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            for i in range((depth - 4) // 6):
                layers.append(_WideBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        body = nn.Sequential(*layers)
        for module in body.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        return body, cin

    return factory


MODELS.register("wrn-34-10", help="WideResNet-34-10 for 32x32 images (Zagoruyko & Komodakis 2016; the "
                "adversarial-training network of Madry et al. 2018 and Zhang et al. 2019), 640 features")(
    wide_resnet(34, 10))


class _TimmBackbone(nn.Module):
    """A timm model without its classifier: image -> pooled pre-logits features."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _timm_backbone(arch: str, shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    import timm

    if arch not in timm.list_models():
        raise UserError(f"unknown timm architecture '{arch}'; see timm.list_models() for names")
    model = timm.create_model(arch, pretrained=False, num_classes=0, in_chans=shape[0])
    # models with a conv head (MobileNetV3 ...) return head_hidden_size pre-logit features
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    return _TimmBackbone(model), int(dim)


class TimmClassifier(nn.Module):
    """A whole timm model, its own classifier included, behind the dataset's normalisation: the
    layout of a bare timm state dict (``timm.create_model(name, num_classes=C).state_dict()``
    loads into ``.model``), taking [0, 1] images. ``features`` / ``head`` are timm's pre-logits
    and classifier, as :class:`Classifier`'s."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        # not persistent: the state dict is exactly the timm model's
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features((x - self.mean) / self.std), pre_logits=True)

    @property
    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def build_timm_classifier(arch: str, shape: tuple[int, int, int], num_classes: int,
                          mean: tuple[float, ...], std: tuple[float, ...]) -> TimmClassifier:
    """A bare timm architecture (random init, nothing downloaded) as a :class:`TimmClassifier`."""
    import timm

    if arch not in timm.list_models():
        raise UserError(f"unknown timm architecture '{arch}'; see timm.list_models() for names")
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=shape[0])
    return TimmClassifier(model, mean, std)


def model_names() -> list[str]:
    return MODELS.names() + ["timm:<architecture>"]


def build_model(name: str, shape: tuple[int, int, int], num_classes: int,
                mean: tuple[float, ...], std: tuple[float, ...]) -> Classifier:
    """Build a registered architecture (or ``timm:<arch>``) as a normalising :class:`Classifier`.

    Args:
        name: ``robdistill list models`` (``small-cnn``, ``compact-cnn``, ``lenet``, ``resnet18``,
            ``wrn-34-10``) or ``timm:<arch>``.
        shape: one image's (C, H, W).
        num_classes: the number of classes.
        mean, std: the normalisation applied inside the forward.

    Returns:
        A :class:`Classifier` with freshly initialised weights (from the global RNG).

    Example:
        >>> import robdistill as rd
        >>> info = rd.load_dataset("digits").info
        >>> model = rd.build_model("small-cnn", info.shape, info.num_classes, info.mean, info.std)
        >>> model(rd.load_dataset("digits").test.x[:2]).shape
        torch.Size([2, 10])
    """
    if name.startswith("timm:"):
        backbone, dim = _timm_backbone(name.split(":", 1)[1], shape)
    else:
        backbone, dim = MODELS.get(name)(shape)
    return Classifier(backbone, dim, num_classes, mean, std)
