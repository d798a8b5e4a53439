"""Shared fixtures: tiny data sets written in the exact on-disk formats of CUB (AttnGAN layout) and COCO.

Fixtures:
    make_cub(root, **kw) -> Path        CUB_200_2011/ tables, JPEGs, text/, {train,test}/*.pickle (protocol 2)
    cub_root -> Path                    make_cub(tmp_path / "birds") with defaults
    make_coco_attngan(root, **kw)       images/, text/, {train,test}/filenames.pickle
    make_coco_json(root, **kw)          annotations/captions_{train,val}2014.json, train2014/, val2014/
    write_image(path, size, mode, color) a small image file in any PIL mode
    make_imagefolder(root, **kw)        Hugging Face image folder: images + metadata.jsonl or metadata.csv
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The suite runs as two pytest-xdist workers on two cores: one intra-op thread each avoids
# oversubscription, which makes tiny tensor ops several times slower.
torch.set_num_threads(1)
# precision=auto caches its probe per machine: the suite (and the tools it runs) keep theirs out of ~/.cache.
os.environ.setdefault("T2I_CACHE_DIR", tempfile.mkdtemp(prefix="t2i-test-cache-"))

COLOURS = ["red", "green", "blue", "yellow", "black", "white", "grey", "brown"]
PARTS = ["crown", "wing", "belly"]


def write_image(path: Path, size: tuple[int, int] = (80, 60), mode: str = "RGB", color=None,
                fmt: str | None = None, seed: int = 0) -> Path:
    """Write a small noisy image (JPEG by default from the suffix) in the given PIL mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    if color is not None:
        rgb[...] = color
    img = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def _caption_lines(class_idx: int, image_idx: int, n: int) -> list[str]:
    c1 = COLOURS[class_idx % len(COLOURS)]
    c2 = COLOURS[(class_idx + 3) % len(COLOURS)]
    lines = []
    for k in range(n):
        part = PARTS[(image_idx + k) % len(PARTS)]
        lines.append(f"this bird has a {c1} {part} and {c2} wings number{k}.")
    return lines


def _make_cub(root: Path, num_classes: int = 4, per_class: int = 2, captions_per_image: int = 10,
              test_classes: int = 1, image_size: tuple[int, int] = (80, 60), attributes: bool = True,
              class_info: bool = True) -> Path:
    """A tiny CUB in AttnGAN's layout; the last ``test_classes`` species form the test split."""
    root = Path(root)
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True, exist_ok=True)
    images, bboxes, labels, split_rows, keys_by_split = [], [], [], [], {"train": [], "test": []}
    ids_by_split = {"train": [], "test": []}
    attr_rows = []
    attr_names = [f"has_{part}_color::{c}" for part in PARTS for c in COLOURS]
    image_id = 0
    for c in range(num_classes):
        species = f"{c + 1:03d}.Species_{c + 1}"
        split = "test" if c >= num_classes - test_classes else "train"
        for j in range(per_class):
            image_id += 1
            key = f"{species}/Species_{c + 1}_{j + 1:04d}"
            write_image(cub / "images" / f"{key}.jpg", image_size, seed=image_id)
            images.append(f"{image_id} {key}.jpg")
            bboxes.append(f"{image_id} {10 + j}.0 {5 + c}.0 {40 + j}.0 {30 + c}.0")
            labels.append(f"{image_id} {c + 1}")
            split_rows.append(f"{image_id} {1 if split == 'train' else 0}")
            keys_by_split[split].append(key)
            ids_by_split[split].append(c + 1)
            (root / "text" / species).mkdir(parents=True, exist_ok=True)
            (root / "text" / f"{key}.txt").write_text("\n".join(_caption_lines(c, j, captions_per_image)) + "\n")
            for a, name in enumerate(attr_names, 1):
                part, value = name.split("::")
                present = int(value == COLOURS[(c + PARTS.index(part[4:-6])) % len(COLOURS)])
                attr_rows.append(f"{image_id} {a} {present} 3 1.5")
    (cub / "images.txt").write_text("\n".join(images) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(bboxes) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "train_test_split.txt").write_text("\n".join(split_rows) + "\n")
    (cub / "classes.txt").write_text("\n".join(f"{c + 1} {c + 1:03d}.Species_{c + 1}" for c in range(num_classes)) + "\n")
    if attributes:
        (cub / "attributes").mkdir(exist_ok=True)
        (cub / "attributes" / "attributes.txt").write_text(
            "\n".join(f"{a} {n}" for a, n in enumerate(attr_names, 1)) + "\n")
        (cub / "attributes" / "image_attribute_labels.txt").write_text("\n".join(attr_rows) + "\n")
    for split in ("train", "test"):
        (root / split).mkdir(exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(keys_by_split[split], f, protocol=2)
        if class_info:
            with open(root / split / "class_info.pickle", "wb") as f:
                pickle.dump(ids_by_split[split], f, protocol=2)
    return root


def _make_coco_attngan(root: Path, n_train: int = 3, n_test: int = 2, captions_per_image: int = 5) -> Path:
    root = Path(root)
    names = {"train": [f"COCO_train2014_{i:012d}" for i in range(1, n_train + 1)],
             "test": [f"COCO_val2014_{i:012d}" for i in range(1, n_test + 1)]}
    for split, split_names in names.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(split_names, f, protocol=2)
        for k, name in enumerate(split_names):
            write_image(root / "images" / f"{name}.jpg", (70, 50), seed=k)
            (root / "text").mkdir(exist_ok=True)
            (root / "text" / f"{name}.txt").write_text(
                "\n".join(f"a {COLOURS[k]} bus parked near a {COLOURS[(k + i) % 8]} house {i}" for i in range(captions_per_image)))
    return root


def _make_coco_json(root: Path, n_train: int = 3, n_test: int = 2, captions: int = 6, short_image: bool = False) -> Path:
    """Official layout; annotation ids are deliberately not in file order, one image may have 2 captions."""
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    ann_id = 1000
    for folder, n in (("train2014", n_train), ("val2014", n_test)):
        images, anns = [], []
        for i in range(n, 0, -1):  # images listed in decreasing id order
            image_id = i * 7
            fname = f"COCO_{folder}_{image_id:012d}.jpg"
            write_image(root / folder / fname, (64, 48), seed=image_id)
            images.append({"id": image_id, "file_name": fname, "width": 64, "height": 48})
            count = 2 if (short_image and i == 1) else captions
            for k in range(count):
                ann_id -= 1  # decreasing ids: file order is the reverse of id order
                anns.append({"id": ann_id, "image_id": image_id,
                             "caption": f" A {COLOURS[k % 8]} cat on image {image_id} id {ann_id}. "})
        (root / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"info": {}, "images": images, "annotations": anns}))
    return root


def _make_imagefolder(root: Path, fmt: str = "jsonl", n: int = 6, captions: int = 2, classes: int | None = None,
                      folders: bool = False, size: tuple[int, int] = (40, 30), repeated_rows: bool = False) -> Path:
    """A tiny Hugging Face image folder: ``n`` JPEG/PNG images (alternating) with ``captions`` captions each
    (a list value in JSONL, or with ``repeated_rows`` one row per caption; CSV always repeats rows), a ``label``
    column when ``classes`` is given, and with ``folders`` the images split into ``train/`` and ``test/``."""
    root = Path(root)
    rows_by_folder: dict[Path, list[dict]] = {}
    for i in range(n):
        folder = root / ("test" if folders and i % 3 == 2 else "train") if folders else root
        name = f"img_{i:03d}.{'png' if i % 2 else 'jpg'}"
        write_image(folder / name, size, seed=i)
        caps = [f"a {COLOURS[i % len(COLOURS)]} bird with {COLOURS[(i + k + 1) % len(COLOURS)]} wings"
                for k in range(captions)]
        extra = {"label": f"class_{i % classes}"} if classes else {}
        if fmt == "jsonl" and not repeated_rows:
            rows_by_folder.setdefault(folder, []).append({"file_name": name, "text": caps, **extra})
        else:
            rows_by_folder.setdefault(folder, []).extend({"file_name": name, "text": c, **extra} for c in caps)
    for folder, rows in rows_by_folder.items():
        if fmt == "jsonl":
            (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            with open(folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    return root


@pytest.fixture
def make_imagefolder():
    return _make_imagefolder


@pytest.fixture
def write_image_file():
    return write_image


@pytest.fixture
def make_cub():
    return _make_cub


@pytest.fixture
def cub_root(tmp_path):
    return _make_cub(tmp_path / "birds")


@pytest.fixture
def make_coco_attngan():
    return _make_coco_attngan


@pytest.fixture
def make_coco_json():
    return _make_coco_json
