"""Dataset registry: every dataset becomes in-memory [0, 1] NCHW float32 tensors with
deterministic train / validation / test splits (METHODS section 1).

Readers parse the files in torchvision's on-disk layout themselves, so that the tests can exercise
them on tiny files; torchvision is used to *download* (and checksum) when the user asks for it.
"""
from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from robdistill.core.errors import UserError
from robdistill.core.registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLIT_SEED = 0  # splits never depend on the run seed: the test set is the same for every run


def default_data_root() -> Path:
    return Path(os.environ.get("ROBDISTILL_DATA", Path.home() / ".cache" / "robdistill" / "data"))


@dataclass(frozen=True)
class Split:
    """Images in [0, 1] (N, C, H, W) float32 and int64 labels.

    Attributes:
        x: the images, float32 (N, C, H, W) in [0, 1].
        y: the labels, int64 (N,).

    Example:
        >>> import robdistill as rd
        >>> test = rd.load_dataset("digits").test
        >>> first = test.head(16)
        >>> len(first), float(first.x.min()) >= 0.0, float(first.x.max()) <= 1.0
        (16, True, True)
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def head(self, n: int | None) -> "Split":
        return self if n is None or n >= len(self) else Split(self.x[:n], self.y[:n])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: shape, classes, normalisation, paper threat models.

    ``eps`` / ``step_size`` are the L-inf radius and PGD step; ``l2_eps`` / ``l2_step_size`` the L2
    ones (METHODS section 1 gives each value's source).

    Attributes:
        name: the registered name (``robdistill list datasets``).
        shape: one image's (C, H, W).
        num_classes: the number of classes.
        mean, std: the normalisation a :class:`Classifier` applies inside its forward.
        eps, step_size: the L-inf radius and PGD step in [0, 1] pixel space.
        l2_eps, l2_step_size: the L2 radius and PGD step.

    Example:
        >>> import robdistill as rd
        >>> info = rd.load_dataset("digits").info
        >>> info.shape, info.radius("linf"), info.radius("l2")
        ((1, 8, 8), (0.1, 0.025), (0.5, 0.125))
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eps: float
    step_size: float
    loader: Callable[[Path, bool], tuple[Split, Split]]
    description: str = ""
    l2_eps: float = 0.0
    l2_step_size: float = 0.0

    def radius(self, norm: str = "linf") -> tuple[float, float]:
        """The dataset's default (eps, PGD step size) under ``norm`` (``linf`` or ``l2``)."""
        from robdistill.core.threat import norm_of

        return (self.eps, self.step_size) if norm_of(norm).name == "linf" else (self.l2_eps, self.l2_step_size)

    def eps_for(self, norm: str = "linf") -> float:
        """The dataset's default radius under ``norm``."""
        return self.radius(norm)[0]

    def step_for(self, eps: float, norm: str = "linf") -> float:
        """The attack step size for radius ``eps``: the dataset's step size under ``norm`` (METHODS
        section 1) at the dataset's eps, scaled in proportion at any other radius (step / eps is kept)."""
        default_eps, default_step = self.radius(norm)
        return default_step * eps / default_eps


@dataclass(frozen=True)
class Splits:
    """A dataset as deterministic train / validation / test splits, with its facts.

    Attributes:
        info: the dataset's :class:`DatasetInfo`.
        train: the training split (students see only these clean images).
        val: the validation split (epochs and radii are chosen on it, never on the test split).
        test: the test split every evaluation attacks.

    Example:
        >>> import robdistill as rd
        >>> data = rd.load_dataset("digits")
        >>> len(data.train), len(data.val), len(data.test)
        (1294, 144, 359)
    """

    info: DatasetInfo
    train: Split
    val: Split
    test: Split

    def to(self, device: torch.device | str) -> "Splits":
        """In-memory datasets live on the training device (no host-to-device copies per batch)."""
        return Splits(self.info, self.train.to(device), self.val.to(device), self.test.to(device))


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def _register(info: DatasetInfo) -> None:
    DATASETS.register(info.name, help=info.description)(info)


def _to_split(images: np.ndarray, labels: np.ndarray) -> Split:
    """uint8 (N, H, W) or (N, C, H, W) -> float [0, 1] NCHW."""
    if len(images) != len(labels):
        raise UserError(f"{len(images)} images but {len(labels)} labels; the dataset files do not "
                        f"belong together, re-download them")
    x = torch.from_numpy(np.array(images, dtype=np.float32)).div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return Split(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


# ----------------------------------------------------------------------------------------------
# readers


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), plain or gzip-compressed."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read {path} ({type(exc).__name__}); re-download the dataset") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file; re-download the dataset")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated (incomplete IDX header); re-download the dataset")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated ({body.size} of {int(np.prod(dims))} bytes)")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_mnist_folder(folder: Path) -> tuple[Split, Split] | None:
    """Read the four MNIST-format IDX files from ``folder``; None when any is missing."""
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find(folder, stem) for stem in stems]
    if any(p is None for p in paths):
        return None
    arrays = [read_idx(p) for p in paths]  # type: ignore[arg-type]
    return _to_split(arrays[0], arrays[1]), _to_split(arrays[2], arrays[3])


def _missing(name: str, root: Path) -> UserError:
    return UserError(
        f"{name} files not found under {root}; pass --download to fetch them (needs internet) "
        f"or --data-root DIR where they are"
    )


def _download(name: str, fetch: Callable[[], object]) -> None:
    try:
        fetch()
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"could not download {name} ({first}); check the internet connection "
                        f"or put the files under --data-root") from None


def _torchvision_mnist_like(name: str, folder_name: str, tv_class: str):
    def load(root: Path, download: bool) -> tuple[Split, Split]:
        raw = root / folder_name / "raw"
        found = read_mnist_folder(raw)
        if found is None and download:
            import torchvision.datasets as tvd

            _download(name, lambda: getattr(tvd, tv_class)(str(root), train=True, download=True))
            found = read_mnist_folder(raw)
        if found is None:
            raise _missing(name, raw)
        return found

    return load


def read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits' images (1797, 8, 8) and labels, read from the file scikit-learn ships
    (``sklearn/datasets/data/digits.csv.gz``, 64 pixel columns and the label) as its ``load_digits``
    reads it, without importing scikit-learn (about 2 s)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded digits dataset comes with scikit-learn; pip install scikit-learn")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    data = np.loadtxt(path, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def load_digits(root: Path, download: bool) -> tuple[Split, Split]:
    """scikit-learn's 8x8 digits (1,797 images, values 0..16): embedded, never downloaded.

    There is no official test split: 20% of the images (fixed permutation) are the test set."""
    images, target = read_sklearn_digits()
    x = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(0.2 * len(y))
    test, train = order[:n_test], order[n_test:]
    return Split(x[train], y[train]), Split(x[test], y[test])


def load_fashion_mnist(root: Path, download: bool) -> tuple[Split, Split]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist`` when installed, else torchvision's."""
    env_dir = os.environ.get("ROBDISTILL_FASHION_MNIST_DIR")
    for folder in ([Path(env_dir)] if env_dir else []) + [DEBIAN_FASHION_MNIST]:
        found = read_mnist_folder(folder)
        if found is not None:
            return found
    return _torchvision_mnist_like("fashion-mnist", "FashionMNIST", "FashionMNIST")(root, download)


def read_cifar10_folder(folder: Path) -> tuple[Split, Split] | None:
    """Read CIFAR-10's python pickles (``cifar-10-batches-py``); None when missing."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((folder / n).is_file() for n in names):
        return None

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        with open(folder / name, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)

    parts = [batch(n) for n in names[:5]]
    train = _to_split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, _to_split(*batch("test_batch"))


def load_cifar10(root: Path, download: bool) -> tuple[Split, Split]:
    folder = root / "cifar-10-batches-py"
    found = read_cifar10_folder(folder)
    if found is None and download:
        import torchvision.datasets as tvd

        _download("cifar10", lambda: tvd.CIFAR10(str(root), train=True, download=True))
        found = read_cifar10_folder(folder)
    if found is None:
        raise _missing("cifar10", folder)
    return found


def read_svhn_folder(folder: Path) -> tuple[Split, Split] | None:
    """Read SVHN's cropped-digit ``train_32x32.mat`` / ``test_32x32.mat``; None when missing."""
    paths = [folder / "train_32x32.mat", folder / "test_32x32.mat"]
    if not all(p.is_file() for p in paths):
        return None
    from scipy.io import loadmat

    def read(path: Path) -> Split:
        mat = loadmat(str(path))
        images = np.transpose(mat["X"], (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
        labels = mat["y"].astype(np.int64).reshape(-1)
        labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
        return _to_split(images, labels)

    return read(paths[0]), read(paths[1])


def load_svhn(root: Path, download: bool) -> tuple[Split, Split]:
    folder = root
    found = read_svhn_folder(folder)
    if found is None and download:
        import torchvision.datasets as tvd

        for split in ("train", "test"):
            _download("svhn", lambda split=split: tvd.SVHN(str(root), split=split, download=True))
        found = read_svhn_folder(folder)
    if found is None:
        raise _missing("svhn", folder)
    return found


# digits is in none of the papers: its step is eps / 4, the ratio of the CIFAR-10 and SVHN defaults
# (2/255 of 8/255, 3/255 of 12/255), which also equals Madry's 2.5 eps / k for the recipes' k = 10
# L2 radii (METHODS section 1): MNIST 2.0 and CIFAR-10 0.5 as the literature uses them (Maini et al.
# 2020; RobustBench's L2 leaderboard). Digits' is chosen as its L-inf radius was: a standard CNN keeps
# about half its accuracy under PGD-20 (measured on the validation split). Fashion-MNIST and SVHN have
# no standard L2 radius; theirs is set by a rule (a quarter of eps_inf * sqrt(pixels), the L2 length
# of the L-inf ball's corner; MNIST's and CIFAR-10's pairs sit at 0.24 and 0.29 of it). Every L2 PGD
# step is eps / 4.
_register(DatasetInfo("digits", (1, 8, 8), 10, (0.5,), (0.5,), 0.1, 0.025, load_digits,
                      "scikit-learn 8x8 handwritten digits, embedded (default), eps 0.1 (L2: 0.5)",
                      l2_eps=0.5, l2_step_size=0.125))
_register(DatasetInfo("fashion-mnist", (1, 28, 28), 10, (0.2860,), (0.3530,), 0.1, 0.01,
                      load_fashion_mnist, "Fashion-MNIST 28x28 (Debian package or torchvision), eps 0.1 (L2: 0.7)",
                      l2_eps=0.7, l2_step_size=0.175))
_register(DatasetInfo("mnist", (1, 28, 28), 10, (0.1307,), (0.3081,), 0.3, 0.01,
                      _torchvision_mnist_like("mnist", "MNIST", "MNIST"), "MNIST 28x28 (torchvision), eps 0.3 (L2: 2.0)",
                      l2_eps=2.0, l2_step_size=0.5))
_register(DatasetInfo("cifar10", (3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                      8 / 255, 2 / 255, load_cifar10, "CIFAR-10 32x32 RGB (torchvision), eps 8/255 (L2: 0.5)",
                      l2_eps=0.5, l2_step_size=0.125))
_register(DatasetInfo("svhn", (3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                      12 / 255, 3 / 255, load_svhn, "SVHN 32x32 RGB (torchvision), eps 12/255 (L2: 0.65)",
                      l2_eps=0.65, l2_step_size=0.1625))


def split_train_val(train: Split, val_fraction: float) -> tuple[Split, Split]:
    """Hold out a fixed validation split from the training set (never the test set)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))
    n_val = int(round(val_fraction * len(train)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def load_dataset(name: str, root: Path | None = None, download: bool = False,
                 val_fraction: float = 0.1) -> Splits:
    """Load a registered dataset as deterministic train / validation / test splits."""
    info = DATASETS.get(name)
    train_full, test = info.loader(Path(root) if root else default_data_root(), download)
    expected = tuple(train_full.x.shape[1:])
    if expected != info.shape:
        raise UserError(f"{name} images have shape {expected}, expected {info.shape}; "
                        f"the files under --data-root are not {name}")
    train, val = split_train_val(train_full, val_fraction)
    return Splits(info, train, val, test)


def iterate_batches(split: Split, batch_size: int, generator: torch.Generator | None = None):
    """Yield (index, x, y) mini-batches straight from memory (no DataLoader overhead).

    With a generator the order is shuffled; without one it is sequential."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield idx, split.x[idx], split.y[idx]


def dataset_step_ratio(dataset: str, norm: str = "linf") -> float:
    """The dataset's attack step size as a fraction of its eps under ``norm`` (METHODS section 1): the
    default step of every attack that takes one, at any radius, unless the suite or recipe sets a step."""
    eps, step = DATASETS.get(dataset).radius(norm)
    return step / eps
