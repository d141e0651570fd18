"""Dataset loading (METHODS section 1): [0, 1] NCHW float32 images, int64 labels, deterministic
train / validation / test splits with the validation split held out from the training set.

The file readers are exercised on tiny files written here; no test touches the network."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import robdistill.data.datasets as data
from robdistill.data.datasets import Split, iterate_batches, load_dataset, read_idx
from robdistill.core.errors import UserError

N_TRAIN, N_TEST = 12, 6
MNIST_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# nothing downloads at test time: any network connection fails the test
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the Debian Fashion-MNIST folder nor the user's environment may leak into a test."""
    monkeypatch.delenv("ROBDISTILL_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setenv("ROBDISTILL_DATA", str(tmp_path / "default-data-root-unused"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-such-debian-folder")


# ----------------------------------------------------------------------------------------------
# helpers


def fake_images(n: int, shape: tuple[int, ...], offset: int) -> np.ndarray:
    """uint8 images; the first pixel of image i is offset + i, so every image is identifiable."""
    rng = np.random.default_rng(1234 + offset)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    flat = images.reshape(n, -1)
    flat[:, 0] = offset + np.arange(n)
    flat[0, 1], flat[1, 1] = 0, 255  # both ends of the range occur
    return images


def fake_labels(n: int, offset: int) -> np.ndarray:
    return ((np.arange(n) * 7 + offset) % 10).astype(np.uint8)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    raw = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


def write_mnist_folder(folder: Path, compress: bool, shape=(28, 28)) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": fake_images(N_TRAIN, shape, 0), "train_y": fake_labels(N_TRAIN, 0),
        "test_x": fake_images(N_TEST, shape, 100), "test_y": fake_labels(N_TEST, 3),
    }
    for stem, key in zip(MNIST_STEMS, ("train_x", "train_y", "test_x", "test_y")):
        write_idx(folder / stem, arrays[key], compress)
    return arrays


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """Undo the /255 scaling (exact for values that came from uint8)."""
    return torch.round(x * 255.0).to(torch.int64).numpy().astype(np.uint8)


def assert_image_contract(split: Split, shape: tuple[int, int, int]) -> None:
    assert split.x.dtype == torch.float32
    assert split.y.dtype == torch.int64
    assert split.x.ndim == 4 and tuple(split.x.shape[1:]) == shape
    assert split.x.shape[0] == split.y.shape[0] == len(split)
    assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert int(split.y.min()) >= 0 and int(split.y.max()) <= 9


def assert_matches_source(split: Split, images: np.ndarray, labels: np.ndarray) -> list[int]:
    """Every sample of ``split`` is one of the written images with its label and exact pixel
    values v / 255; returns the source indices (identified by the first pixel)."""
    n = len(images)
    source = images.reshape(n, -1)
    got = as_uint8(split.x).reshape(len(split), -1)
    # the float values really are v / 255 (not just close after rounding)
    torch.testing.assert_close(split.x, torch.from_numpy(got.reshape(split.x.shape)).float() / 255.0,
                               rtol=0, atol=1e-7)
    first_pixels = source[:, 0].tolist()
    indices = []
    for row, label in zip(got, split.y.tolist()):
        i = first_pixels.index(int(row[0]))
        np.testing.assert_array_equal(row, source[i])
        assert label == int(labels[i])
        indices.append(i)
    return indices


def assert_train_val_partition(splits, images: np.ndarray, labels: np.ndarray) -> None:
    train_idx = assert_matches_source(splits.train, images, labels)
    val_idx = assert_matches_source(splits.val, images, labels)
    assert len(val_idx) > 0 and len(train_idx) > 0
    assert not set(train_idx) & set(val_idx)
    assert sorted(train_idx + val_idx) == list(range(len(images)))


def assert_test_is_file_in_order(test: Split, images: np.ndarray, labels: np.ndarray) -> None:
    """The test split is the test file, complete and in file order (nothing random about it)."""
    assert len(test) == len(images)
    channels_first = images if images.ndim == 4 else images[:, None]
    np.testing.assert_array_equal(as_uint8(test.x), channels_first)
    assert test.y.tolist() == labels.astype(np.int64).tolist()


# ----------------------------------------------------------------------------------------------
# digits (embedded)


def _rows(*splits: Split) -> list[bytes]:
    rows = []
    for s in splits:
        for xi, yi in zip(s.x, s.y):
            rows.append(xi.numpy().tobytes() + int(yi).to_bytes(1, "little"))
    return sorted(rows)


def test_digits_shapes_and_types(digits) -> None:
    assert digits.info.name == "digits"
    assert digits.info.shape == (1, 8, 8) and digits.info.num_classes == 10
    for split in (digits.train, digits.val, digits.test):
        assert_image_contract(split, (1, 8, 8))
    # values span the whole [0, 1] range (0..16 scaled by 1/16)
    everything = torch.cat([digits.train.x, digits.val.x, digits.test.x])
    assert float(everything.min()) == 0.0 and float(everything.max()) == 1.0
    assert torch.equal(everything * 16, torch.round(everything * 16))
    all_labels = torch.cat([digits.train.y, digits.val.y, digits.test.y])
    assert sorted(all_labels.unique().tolist()) == list(range(10))


def test_digits_split_sizes(digits) -> None:
    n_train, n_val, n_test = len(digits.train), len(digits.val), len(digits.test)
    assert n_train + n_val + n_test == 1797
    assert n_test == round(0.2 * 1797)  # 359
    assert n_val == round(0.1 * (1797 - n_test))  # 10% of the training set: 144
    assert n_train == 1797 - n_test - n_val


def test_digits_splits_partition_the_dataset(digits) -> None:
    """train + val + test is exactly scikit-learn's dataset (as a multiset of (image, label))."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    full = Split(torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1),
                 torch.from_numpy(bunch.target.astype(np.int64)))
    assert _rows(digits.train, digits.val, digits.test) == _rows(full)


def test_digits_validation_comes_from_training_set_only(digits) -> None:
    train_full, test = data.load_digits(Path("."), False)
    assert len(train_full) + len(test) == 1797
    # the held-out test set is identical to the loader's test set, and train + val is exactly
    # the loader's training set: the validation split never takes a test image
    assert torch.equal(digits.test.x, test.x) and torch.equal(digits.test.y, test.y)
    assert _rows(digits.train, digits.val) == _rows(train_full)
    # a different validation fraction changes train/val but never the test set
    other = load_dataset("digits", val_fraction=0.3)
    assert torch.equal(other.test.x, digits.test.x) and torch.equal(other.test.y, digits.test.y)
    assert len(other.val) == round(0.3 * len(train_full))
    assert _rows(other.train, other.val) == _rows(train_full)


def test_digits_is_deterministic_and_ignores_global_rng(digits) -> None:
    torch.manual_seed(12345)
    np.random.seed(12345)
    again = load_dataset("digits")
    torch.manual_seed(999)
    np.random.seed(999)
    third = load_dataset("digits")
    for a, b, c in ((digits.train, again.train, third.train), (digits.val, again.val, third.val),
                    (digits.test, again.test, third.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        assert torch.equal(a.x, c.x) and torch.equal(a.y, c.y)


def test_digits_loading_does_not_consume_global_rng() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_dataset("digits")
    assert torch.equal(torch.rand(3), expected)


def test_digits_test_split_is_shuffled_not_a_prefix(digits) -> None:
    """The test set is a fixed permutation's slice, so it covers all classes (not the first 20%
    of the file, which would still be deterministic but is not what the docstring says)."""
    assert sorted(digits.test.y.unique().tolist()) == list(range(10))


# ----------------------------------------------------------------------------------------------
# MNIST-format readers


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_mnist_reader(tmp_path: Path, compress: bool) -> None:
    arrays = write_mnist_folder(tmp_path / "MNIST" / "raw", compress)
    splits = load_dataset("mnist", root=tmp_path, val_fraction=0.25)
    assert splits.info.name == "mnist"
    for split in (splits.train, splits.val, splits.test):
        assert_image_contract(split, (1, 28, 28))
    assert len(splits.val) == 3 and len(splits.train) == N_TRAIN - 3
    assert_train_val_partition(splits, arrays["train_x"], arrays["train_y"])
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])
    # both ends of the pixel range survive: 0 -> 0.0, 255 -> 1.0
    assert float(splits.test.x.min()) == 0.0 and float(splits.test.x.max()) == 1.0


def test_mnist_reader_is_deterministic(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path / "MNIST" / "raw", compress=True)
    torch.manual_seed(1)
    a = load_dataset("mnist", root=tmp_path, val_fraction=0.25)
    torch.manual_seed(2)
    b = load_dataset("mnist", root=tmp_path, val_fraction=0.25)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (False, True):
        path = write_idx(tmp_path / f"x{int(compress)}", array, compress)
        got = read_idx(path)
        assert got.shape == (2, 3, 4) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_fashion_mnist_torchvision_layout(tmp_path: Path, compress: bool) -> None:
    arrays = write_mnist_folder(tmp_path / "FashionMNIST" / "raw", compress)
    splits = load_dataset("fashion-mnist", root=tmp_path, val_fraction=0.25)
    assert splits.info.name == "fashion-mnist"
    for split in (splits.train, splits.val, splits.test):
        assert_image_contract(split, (1, 28, 28))
    assert_train_val_partition(splits, arrays["train_x"], arrays["train_y"])
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])


def test_fashion_mnist_env_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "flat"
    arrays = write_mnist_folder(folder, compress=True)
    monkeypatch.setenv("ROBDISTILL_FASHION_MNIST_DIR", str(folder))
    empty_root = tmp_path / "empty-root"
    empty_root.mkdir()
    splits = load_dataset("fashion-mnist", root=empty_root, val_fraction=0.25)
    assert_train_val_partition(splits, arrays["train_x"], arrays["train_y"])
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])


def test_fashion_mnist_env_folder_wins_over_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_arrays = write_mnist_folder(tmp_path / "flat", compress=False)
    # a different (but equally valid) copy in the torchvision layout under root
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, array in zip(MNIST_STEMS, (fake_images(4, (28, 28), 50), fake_labels(4, 1),
                                         fake_images(2, (28, 28), 60), fake_labels(2, 2))):
        write_idx(raw / stem, array, compress=False)
    monkeypatch.setenv("ROBDISTILL_FASHION_MNIST_DIR", str(tmp_path / "flat"))
    splits = load_dataset("fashion-mnist", root=tmp_path / "root")
    assert_test_is_file_in_order(splits.test, env_arrays["test_x"], env_arrays["test_y"])


def test_fashion_mnist_incomplete_env_folder_falls_back(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / MNIST_STEMS[0], fake_images(2, (28, 28), 0), compress=False)
    monkeypatch.setenv("ROBDISTILL_FASHION_MNIST_DIR", str(partial))
    arrays = write_mnist_folder(tmp_path / "FashionMNIST" / "raw", compress=False)
    splits = load_dataset("fashion-mnist", root=tmp_path)
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])


def test_wrong_image_shape_is_user_error(tmp_path: Path) -> None:
    write_mnist_folder(tmp_path / "MNIST" / "raw", compress=False, shape=(8, 8))
    with pytest.raises(UserError) as info:
        load_dataset("mnist", root=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "(1, 8, 8)" in message and "(1, 28, 28)" in message


# ----------------------------------------------------------------------------------------------
# CIFAR-10 and SVHN readers


def write_cifar(root: Path, per_batch: int = 2, n_test: int = 4) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x = fake_images(5 * per_batch, (3, 32, 32), 0)
    train_y = fake_labels(5 * per_batch, 0).astype(np.int64)
    for b in range(5):
        sl = slice(b * per_batch, (b + 1) * per_batch)
        entry = {"data": train_x[sl].reshape(per_batch, 3072), "labels": train_y[sl].tolist(),
                 "batch_label": f"training batch {b + 1} of 5"}
        with open(folder / f"data_batch_{b + 1}", "wb") as handle:
            pickle.dump(entry, handle)
    test_x = fake_images(n_test, (3, 32, 32), 100)
    test_y = fake_labels(n_test, 5).astype(np.int64)
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({"data": test_x.reshape(n_test, 3072), "labels": test_y.tolist()}, handle)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def test_cifar10_reader(tmp_path: Path) -> None:
    arrays = write_cifar(tmp_path)
    splits = load_dataset("cifar10", root=tmp_path, val_fraction=0.2)
    assert splits.info.name == "cifar10"
    for split in (splits.train, splits.val, splits.test):
        assert_image_contract(split, (3, 32, 32))
    assert len(splits.val) == 2 and len(splits.train) == 8
    assert_train_val_partition(splits, arrays["train_x"], arrays["train_y"])
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])
    # channel layout: CIFAR rows are 1024 R, then 1024 G, then 1024 B values
    row = arrays["test_x"][0].reshape(3072)
    np.testing.assert_array_equal(as_uint8(splits.test.x[0, 1]).reshape(-1), row[1024:2048])


def test_cifar10_missing_batch_is_user_error(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="--download"):
        load_dataset("cifar10", root=tmp_path)


def write_svhn(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> dict[str, np.ndarray]:
    from scipy.io import savemat

    out = {}
    for name, n, offset in (("train", n_train, 0), ("test", n_test, 100)):
        images = fake_images(n, (3, 32, 32), offset)  # (N, C, H, W)
        digits = (np.arange(n) + offset) % 10  # includes the digit 0
        stored = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        savemat(str(root / f"{name}_32x32.mat"),
                {"X": np.ascontiguousarray(np.transpose(images, (2, 3, 1, 0))), "y": stored})
        out[f"{name}_x"], out[f"{name}_y"], out[f"{name}_stored"] = images, digits, stored
    return out


def test_svhn_reader(tmp_path: Path) -> None:
    arrays = write_svhn(tmp_path)
    assert (arrays["train_stored"] == 10).any() and (arrays["test_stored"] == 10).any()
    splits = load_dataset("svhn", root=tmp_path, val_fraction=0.25)
    assert splits.info.name == "svhn"
    for split in (splits.train, splits.val, splits.test):
        assert_image_contract(split, (3, 32, 32))
    assert_train_val_partition(splits, arrays["train_x"], arrays["train_y"])
    assert_test_is_file_in_order(splits.test, arrays["test_x"], arrays["test_y"])
    # label 10 in the .mat file is the digit 0
    assert 10 not in splits.test.y.tolist()
    assert splits.test.y[arrays["test_stored"][:, 0] == 10].tolist() == [0] * int(
        (arrays["test_stored"] == 10).sum())


def test_svhn_pixel_layout(tmp_path: Path) -> None:
    """X[h, w, c, n] in the .mat file is pixel (c, h, w) of image n."""
    from scipy.io import savemat

    X = np.zeros((32, 32, 3, 1), dtype=np.uint8)
    X[1, 2, 0, 0] = 10   # row 1, column 2, red
    X[5, 30, 2, 0] = 200  # row 5, column 30, blue
    for name in ("train", "test"):
        savemat(str(tmp_path / f"{name}_32x32.mat"), {"X": X, "y": np.array([[3]], dtype=np.uint8)})
    test = load_dataset("svhn", root=tmp_path).test
    expected = torch.zeros(1, 3, 32, 32)
    expected[0, 0, 1, 2] = 10 / 255
    expected[0, 2, 5, 30] = 200 / 255
    torch.testing.assert_close(test.x, expected, rtol=0, atol=1e-7)
    assert test.y.tolist() == [3]


# ----------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "svhn"])
def test_missing_files_is_one_line_user_error(tmp_path: Path, name: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError) as info:
        load_dataset(name, root=empty)
    message = str(info.value)
    assert "\n" not in message
    assert "--download" in message and "--data-root" in message
    assert name in message
    assert list(empty.iterdir()) == []  # nothing was created or fetched


def test_missing_files_default_root_is_user_error(tmp_path: Path) -> None:
    """Without root, ROBDISTILL_DATA is the data root (and still nothing is downloaded)."""
    with pytest.raises(UserError, match="default-data-root-unused"):
        load_dataset("mnist")


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UserError) as info:
        load_dataset("imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "imagenet" in message
    for name in ("digits", "mnist", "fashion-mnist", "cifar10", "svhn"):
        assert name in message


def _corrupt(kind: str, path: Path) -> Path:
    images = fake_images(3, (28, 28), 0)
    good = idx_bytes(images)
    if kind == "wrong-magic":
        path.write_bytes(bytes([0, 0, 0x0D, 3]) + good[4:])  # 0x0D: float32 IDX
    elif kind == "nonzero-leading-bytes":
        path.write_bytes(b"\x1f\x8b" + good[2:])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-body":
        path.write_bytes(good[:-100])
    elif kind == "truncated-header":
        path.write_bytes(good[:10])  # magic + one and a half dimensions
    elif kind == "truncated-gz":
        path = path.with_name(path.name + ".gz")
        compressed = gzip.compress(good)
        path.write_bytes(compressed[: len(compressed) // 2])
    elif kind == "not-gzip":
        path = path.with_name(path.name + ".gz")
        path.write_bytes(good)
    return path


@pytest.mark.parametrize("kind", [
    "wrong-magic", "nonzero-leading-bytes", "empty", "truncated-body",
    "truncated-header", "truncated-gz", "not-gzip",
])
def test_malformed_idx_is_user_error(tmp_path: Path, kind: str) -> None:
    path = _corrupt(kind, tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert "\n" not in str(info.value)
    assert path.name in str(info.value)


def test_malformed_idx_through_load_dataset(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_folder(raw, compress=False)
    _corrupt("truncated-body", raw / MNIST_STEMS[2])
    with pytest.raises(UserError, match="truncated"):
        load_dataset("mnist", root=tmp_path)


def test_image_label_count_mismatch_is_user_error(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    write_mnist_folder(raw, compress=False)
    write_idx(raw / MNIST_STEMS[1], fake_labels(N_TRAIN - 2, 0), compress=False)
    with pytest.raises(UserError):
        load_dataset("mnist", root=tmp_path)


# ----------------------------------------------------------------------------------------------
# iterate_batches


def _split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n) % 10)


@pytest.mark.parametrize("n, batch_size", [(10, 3), (12, 4), (5, 8), (1, 1)])
def test_iterate_batches_covers_every_index_once(n: int, batch_size: int) -> None:
    split = _split(n)
    for generator in (None, torch.Generator().manual_seed(3)):
        seen = []
        batches = list(iterate_batches(split, batch_size, generator))
        assert len(batches) == -(-n // batch_size)
        for idx, x, y in batches:
            assert len(idx) <= batch_size and len(idx) == len(x) == len(y)
            # x and y are the rows named by idx
            assert torch.equal(x.view(-1), idx.float())
            assert torch.equal(y, idx % 10)
            seen += idx.tolist()
        assert sorted(seen) == list(range(n))
        if generator is None:
            assert seen == list(range(n))  # sequential without a generator


def test_iterate_batches_order_depends_only_on_generator_seed() -> None:
    split = _split(50)

    def order(seed: int) -> list[int]:
        return [i for idx, _, _ in iterate_batches(split, 7, torch.Generator().manual_seed(seed))
                for i in idx.tolist()]

    torch.manual_seed(0)
    first = order(11)
    torch.manual_seed(99)  # the global RNG does not matter
    assert order(11) == first
    assert first != list(range(50))  # actually shuffled
    assert order(12) != first


def test_iterate_batches_does_not_touch_global_rng() -> None:
    split = _split(20)
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    list(iterate_batches(split, 4, torch.Generator().manual_seed(1)))
    list(iterate_batches(split, 4))
    assert torch.equal(torch.rand(2), expected)


def test_digits_are_read_without_importing_sklearn_and_equal_its_loader() -> None:
    """The embedded digits come from scikit-learn's own file, read as its ``load_digits`` reads it (the
    import of scikit-learn alone took about 2 s of every command); same images and labels."""
    import subprocess
    import sys

    import numpy as np
    from sklearn.datasets import load_digits

    from robdistill.data.datasets import read_sklearn_digits

    images, target = read_sklearn_digits()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and np.array_equal(target, reference.target)
    probe = ("import sys; from robdistill.data.datasets import load_dataset; load_dataset('digits'); "
             "print('sklearn' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
