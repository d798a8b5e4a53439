"""Tiny archives in the exact formats their authors publish (imported as ``from archive_fixtures import ...``):

* ``write_cub_tgz``: ``CUB_200_2011.tgz`` with the official member names (``CUB_200_2011/images.txt``, ...,
  ``CUB_200_2011/images/<class>/<name>.jpg``, ``CUB_200_2011/attributes/...``, ``attributes.txt`` at the top);
* ``write_reed_tgz``: Reed et al.'s ``cvpr2016_cub.tar.gz`` (``text_c10/<class>/<name>.txt``, 10 captions each,
  ``trainvalclasses.txt``, ``testclasses.txt``, ...), optionally under a top folder;
* ``write_coco_zips``: ``train2014.zip``, ``val2014.zip`` (``train2014/COCO_train2014_<id:012d>.jpg``) and
  ``annotations_trainval2014.zip`` (``annotations/captions_{train,val}2014.json``, ``instances_*.json``).
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SPECIES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]
COLOURS = ["red", "green", "blue", "yellow", "black", "white", "grey", "brown"]


def jpeg_bytes(size=(40, 30), seed=0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        return
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def cub_keys(per_class: int = 2) -> list[str]:
    keys = []
    for c, species in enumerate(SPECIES):
        stem = "_".join(w.capitalize() for w in species.split(".", 1)[1].split("_"))
        keys += [f"{species}/{stem}_{j + 1:04d}_{100 + 10 * c + j}" for j in range(per_class)]
    return keys


def write_cub_tgz(path: Path, per_class: int = 2, drop_image: str | None = None) -> Path:
    """``CUB_200_2011.tgz``: 4 species x ``per_class`` images; ``drop_image``: a listed image left out (partial)."""
    keys = cub_keys(per_class)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attr_names = [f"has_wing_color::{c}" for c in COLOURS[:4]]
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "CUB_200_2011")
        _add(tar, "CUB_200_2011/README", b"The Caltech-UCSD Birds-200-2011 Dataset (tiny test copy)\n")
        _add(tar, "CUB_200_2011/images.txt", "".join(f"{i} {k}.jpg\n" for i, k in enumerate(keys, 1)).encode())
        _add(tar, "CUB_200_2011/classes.txt", "".join(f"{c} {s}\n" for c, s in enumerate(SPECIES, 1)).encode())
        _add(tar, "CUB_200_2011/image_class_labels.txt",
             "".join(f"{i} {SPECIES.index(k.split('/')[0]) + 1}\n" for i, k in enumerate(keys, 1)).encode())
        _add(tar, "CUB_200_2011/bounding_boxes.txt",
             "".join(f"{i} {3.0 + i} 4.0 {20.0 + i} 18.0\n" for i in range(1, len(keys) + 1)).encode())
        _add(tar, "CUB_200_2011/train_test_split.txt", "".join(f"{i} {i % 2}\n" for i in range(1, len(keys) + 1)).encode())
        _add(tar, "CUB_200_2011/images")
        for i, k in enumerate(keys, 1):
            if i == 1 or k.split("/")[0] != keys[i - 2].split("/")[0]:
                _add(tar, f"CUB_200_2011/images/{k.split('/')[0]}")
            if k != drop_image:
                _add(tar, f"CUB_200_2011/images/{k}.jpg", jpeg_bytes(seed=i))
        _add(tar, "CUB_200_2011/attributes")
        _add(tar, "CUB_200_2011/attributes/image_attribute_labels.txt", "".join(
            f"{i} {a} {int((i + a) % 4 == 0)} 3 {1.5 * a}\n" for i in range(1, len(keys) + 1)
            for a in range(1, len(attr_names) + 1)).encode())
        _add(tar, "CUB_200_2011/attributes/certainties.txt", b"1 not visible\n2 guessing\n3 probably\n4 definitely\n")
        _add(tar, "CUB_200_2011/parts")
        _add(tar, "CUB_200_2011/parts/parts.txt", b"1 back\n2 beak\n")
        _add(tar, "attributes.txt", "".join(f"{a} {n}\n" for a, n in enumerate(attr_names, 1)).encode())
    return path


def reed_captions(key: str, n: int = 10) -> list[str]:
    c = int(key.split(".")[0]) - 1
    return [f"this bird has {COLOURS[(c + k) % 8]} wings and a {COLOURS[(c + 3) % 8]} crown" for k in range(n)]


def write_reed_tgz(path: Path, per_class: int = 2, prefix: str = "", short: str | None = None,
                   extra_key: str | None = None, drop_text: str | None = None) -> Path:
    """``cvpr2016_cub.tar.gz``: species 1-2 in trainvalclasses.txt, 3-4 in testclasses.txt.

    ``short``: a key whose file has 3 captions; ``extra_key``: a caption file for an image CUB does not have;
    ``drop_text``: a key whose caption file is left out (partial).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = cub_keys(per_class) + ([extra_key] if extra_key else [])
    with tarfile.open(path, "w:gz") as tar:
        if prefix:
            _add(tar, prefix.rstrip("/"))
        _add(tar, f"{prefix}text_c10")
        folders = set()
        for k in keys:
            if k == drop_text:
                continue
            if k.split("/")[0] not in folders:
                folders.add(k.split("/")[0])
                _add(tar, f"{prefix}text_c10/{k.split('/')[0]}")
            lines = reed_captions(k, 3 if k == short else 10)
            _add(tar, f"{prefix}text_c10/{k}.txt", ("\n".join(lines) + "\n").encode())
        _add(tar, f"{prefix}allclasses.txt", ("\n".join(SPECIES) + "\n").encode())
        _add(tar, f"{prefix}trainvalclasses.txt", ("\n".join(SPECIES[:2]) + "\n").encode())
        _add(tar, f"{prefix}trainclasses.txt", (SPECIES[0] + "\n").encode())
        _add(tar, f"{prefix}valclasses.txt", (SPECIES[1] + "\n").encode())
        _add(tar, f"{prefix}testclasses.txt", ("\n".join(SPECIES[2:]) + "\n").encode())
    return path


def coco_captions(image_id: int, n: int) -> list[str]:
    # COCO's own captions carry stray whitespace, trailing newlines and no final full stop at times
    return [f"A {COLOURS[(image_id + k) % 8]} bus parked  near a house {k}.\n" if k % 2 else
            f" a {COLOURS[(image_id + k) % 8]} cat sitting on a couch {k}" for k in range(n)]


def write_coco_zips(folder: Path, n_train: int = 3, n_val: int = 2, captions: int = 5, short_id: int | None = None,
                    drop_image: str | None = None) -> dict[str, Path]:
    """The three COCO 2014 archives in ``folder``; annotation ids deliberately out of image order.

    ``short_id``: an image with 2 captions; ``drop_image``: a listed file name left out of its zip (partial).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = {}
    ann_id = 900
    for split, n, start in (("train2014", n_train, 9), ("val2014", n_val, 42)):
        images, anns = [], []
        with zipfile.ZipFile(folder / f"{split}.zip", "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(f"{split}/", b"")
            for k in range(n):
                image_id = start + 7 * k
                name = f"COCO_{split}_{image_id:012d}.jpg"
                if name != drop_image:
                    zf.writestr(f"{split}/{name}", jpeg_bytes((48, 36), seed=image_id))
                images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}/{name}",
                               "height": 36, "width": 48, "date_captured": "2013-11-14 16:28:13",
                               "flickr_url": "", "id": image_id})
                for caption in coco_captions(image_id, 2 if image_id == short_id else captions + k % 2):
                    ann_id -= 3
                    anns.append({"image_id": image_id, "id": ann_id, "caption": caption})
        docs[split] = {"info": {"description": "COCO 2014 Dataset (tiny test copy)", "year": 2014},
                       "images": images[::-1], "licenses": [{"url": "", "id": 1, "name": "test"}],
                       "annotations": anns}
    with zipfile.ZipFile(folder / "annotations_trainval2014.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/", b"")
        for split, doc in docs.items():
            zf.writestr(f"annotations/captions_{split}.json", json.dumps(doc))
            zf.writestr(f"annotations/instances_{split}.json", json.dumps({"images": doc["images"], "annotations": []}))
    return {"train": folder / "train2014.zip", "val": folder / "val2014.zip",
            "annotations": folder / "annotations_trainval2014.zip"}


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path
