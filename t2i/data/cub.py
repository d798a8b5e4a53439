"""Reader of CUB-200-2011 in AttnGAN's layout (also written by the synthetic bird renderer).

Layout under ``root`` (AttnGAN's ``data/birds``: ``birds.zip`` metadata + ``CUB_200_2011.tgz``)::

    CUB_200_2011/images.txt                 "<image_id> <class_dir>/<name>.jpg"
    CUB_200_2011/bounding_boxes.txt         "<image_id> <x> <y> <w> <h>"
    CUB_200_2011/image_class_labels.txt     "<image_id> <class_id>"          (optional)
    CUB_200_2011/train_test_split.txt       "<image_id> <is_train>"          (split_source="official")
    CUB_200_2011/images/<key>.jpg
    CUB_200_2011/attributes/image_attribute_labels.txt   (optional, with attributes.txt)
    text/<key>.txt                          captions, one per line (CUB: 10)
    {train,test}/filenames.pickle           list of keys (AttnGAN split: 150 / 50 species)
    {train,test}/class_info.pickle          class id of each key
    ({train,test}/filenames.json, class_info.json: the same lists as JSON, written by
     ``tools/prepare_data.py data=cub source=official``; read in preference to the pickles)

This mirrors AttnGAN ``code/datasets.py`` (``load_bbox``, ``load_captions``, ``load_filenames``,
``load_class_id``); the metadata pickles are read with :mod:`t2i.data.safe_pickle`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from t2i.data.images import crop_box  # noqa: F401  (AttnGAN's bbox crop, applied by load_image)
from t2i.data.safe_pickle import safe_load
from t2i.data.source import SPLITS, SourceBase
from t2i.data.text import is_usable_caption
from t2i.errors import DataError
from t2i.structures import Record

__all__ = ["CUBSource", "SourceBase", "crop_box", "read_caption_file", "read_split_list", "SPLITS"]

log = logging.getLogger(__name__)



def read_caption_file(path: str | os.PathLike, captions_per_image: int) -> list[str]:
    """The first ``captions_per_image`` captions of a caption file, as AttnGAN's ``load_captions``.

    Lines are split on ``\\n``; empty lines and lines with no ``\\w+`` token are skipped (AttnGAN
    skips them too). The file is decoded as UTF-8 with invalid bytes replaced by U+FFFD (the
    tokenizer turns AttnGAN's ``\\ufffd\\ufffd`` into a space).

    Raises:
        DataError: the file is missing, or has fewer usable captions than asked for (AttnGAN only
            prints an error and then silently misaligns its caption table).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"caption file {path} does not exist; see data/README.md for the expected layout") from None
    except OSError as exc:
        raise DataError(f"cannot read caption file {path}: {exc}") from None
    captions = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not is_usable_caption(line):
            continue
        captions.append(line)
        if len(captions) == captions_per_image:
            break
    if len(captions) < captions_per_image:
        raise DataError(f"caption file {path} has {len(captions)} usable captions, fewer than "
                        f"captions_per_image={captions_per_image}; fix the file or lower captions_per_image")
    return captions


def read_split_list(split_dir: Path, stem: str, required: bool = True) -> list | None:
    """A split's list ``<stem>.json`` (as ``tools/prepare_data.py source=official`` writes it), else
    AttnGAN's ``<stem>.pickle`` through the restricted unpickler; None when neither is there and not
    ``required``.

    Raises:
        DataError: unreadable JSON, JSON that is not a list, or a missing/refused pickle.
    """
    path = split_dir / f"{stem}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, list):
            raise DataError(f"{path} must hold a JSON list, not {type(data).__name__}")
        return data
    path = split_dir / f"{stem}.pickle"
    if not required and not path.is_file():
        return None
    return safe_load(path)


def _read_table(path: Path, min_fields: int) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; see data/README.md for the expected layout")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < min_fields:
            raise DataError(f"{path} line {n}: expected at least {min_fields} fields, found {len(fields)}")
        rows.append(fields)
    return rows


class CUBSource(SourceBase):
    """CUB-200-2011 (or the synthetic birds) in AttnGAN's layout.

    Args:
        root: data directory (``data/birds`` in AttnGAN; ``data/synthbirds`` for the embedded set).
        captions_per_image: captions read per image (CUB: 10).
        split_source: ``pickle`` uses AttnGAN's ``{split}/filenames.pickle`` and
            ``class_info.pickle``; ``official`` uses CUB's ``train_test_split.txt`` and
            ``image_class_labels.txt``.
    """

    name = "cub"
    LAYOUT = ("CUB_200_2011/{images.txt, bounding_boxes.txt, images/}, text/<key>.txt, "
              "{train,test}/filenames.pickle")

    def __init__(self, root: str | os.PathLike, captions_per_image: int = 10, split_source: str = "pickle"):
        super().__init__()
        if split_source not in ("pickle", "official"):
            raise ValueError(f"split_source must be 'pickle' or 'official', not {split_source!r}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, not {captions_per_image}")
        self.root = Path(root)
        self.captions_per_image = captions_per_image
        self.split_source = split_source
        self.cub_dir = self.root / "CUB_200_2011"
        if not self.cub_dir.is_dir():
            raise DataError(f"CUB data not found under {self.root}: expected {self.LAYOUT}; "
                            "see data/README.md, or set data.root=...")
        self._meta: dict | None = None
        self._schema: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ metadata tables
    def _metadata(self) -> dict:
        if self._meta is not None:
            return self._meta
        images = {int(r[0]): r[1] for r in _read_table(self.cub_dir / "images.txt", 2)}
        key_to_id = {os.path.splitext(p)[0]: i for i, p in images.items()}
        bboxes = {int(r[0]): tuple(float(v) for v in r[1:5])
                  for r in _read_table(self.cub_dir / "bounding_boxes.txt", 5)}
        labels_path = self.cub_dir / "image_class_labels.txt"
        labels = ({int(r[0]): int(r[1]) for r in _read_table(labels_path, 2)} if labels_path.is_file() else {})
        self._meta = {"images": images, "key_to_id": key_to_id, "bboxes": bboxes, "labels": labels,
                      "attributes": self._read_attributes()}
        return self._meta

    def _attribute_names_path(self) -> Path | None:
        # synthetic birds: CUB_200_2011/attributes/attributes.txt; the CUB tgz: attributes.txt beside
        # CUB_200_2011/ (AttnGAN's root) or inside it.
        for p in (self.cub_dir / "attributes" / "attributes.txt", self.root / "attributes.txt",
                  self.cub_dir / "attributes.txt"):
            if p.is_file():
                return p
        return None

    def _read_attributes(self) -> dict[int, dict[str, str]] | None:
        """Per-image ``{part: value}`` from ``image_attribute_labels.txt``.

        Attribute names are ``has_<part>::<value>``. For each part the present value with the
        lowest attribute id is kept (CUB annotators may mark several; their certainty column is
        ignored). Parts with no present value are left out of the image's dict.
        """
        labels_path = self.cub_dir / "attributes" / "image_attribute_labels.txt"
        names_path = self._attribute_names_path()
        if not labels_path.is_file() or names_path is None:
            return None
        attr = {}  # attribute id -> (part, value)
        schema: dict[str, list[str]] = {}
        for r in _read_table(names_path, 2):
            full = r[1]
            if "::" not in full:
                raise DataError(f"{names_path}: attribute {full!r} is not of the form has_<part>::<value>")
            part, value = full.split("::", 1)
            part = part[4:] if part.startswith("has_") else part
            attr[int(r[0])] = (part, value)
            schema.setdefault(part, []).append(value)
        per_image: dict[int, dict[str, tuple[int, str]]] = {}
        # Real CUB has a few lines with an extra column; only the first three fields are used.
        for r in _read_table(labels_path, 3):
            if r[2] != "1":
                continue
            image_id, attr_id = int(r[0]), int(r[1])
            if attr_id not in attr:
                raise DataError(f"{labels_path}: attribute id {attr_id} is not in {names_path}")
            part, value = attr[attr_id]
            current = per_image.setdefault(image_id, {})
            if part not in current or attr_id < current[part][0]:
                current[part] = (attr_id, value)
        self._schema = schema
        return {i: {p: v for p, (_, v) in parts.items()} for i, parts in per_image.items()}

    def attribute_schema(self) -> dict[str, list[str]] | None:
        meta = self._metadata()
        return None if meta["attributes"] is None else {p: list(v) for p, v in self._schema.items()}

    # ------------------------------------------------------------------ splits
    def _split_keys(self, split: str) -> tuple[list[str], list[int]]:
        meta = self._metadata()
        if self.split_source == "official":
            rows = _read_table(self.cub_dir / "train_test_split.txt", 2)
            want = "1" if split == "train" else "0"
            ids = [int(r[0]) for r in rows if r[1] == want]
            if not meta["labels"]:
                raise DataError(f"{self.cub_dir / 'image_class_labels.txt'} is needed with split_source=official")
            return ([os.path.splitext(meta["images"][i])[0] for i in ids], [meta["labels"][i] for i in ids])
        split_dir = self.root / split
        names = read_split_list(split_dir, "filenames")
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
            raise DataError(f"{split_dir / 'filenames.pickle'} must hold a list of file keys")
        keys = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
        info = read_split_list(split_dir, "class_info", required=False)
        info_path = split_dir / "class_info.*"
        if info is not None:
            class_ids = [int(c) for c in info]
            if len(class_ids) != len(keys):
                raise DataError(f"{info_path} has {len(class_ids)} class ids for {len(keys)} filenames")
        elif meta["labels"]:
            class_ids = [meta["labels"][self._image_id(k)] for k in keys]
        else:  # AttnGAN load_class_id: np.arange(total_num)
            class_ids = list(range(len(keys)))
        return keys, class_ids

    def _image_id(self, key: str) -> int:
        try:
            return self._metadata()["key_to_id"][key]
        except KeyError:
            raise DataError(f"image {key!r} is not listed in {self.cub_dir / 'images.txt'}") from None

    def _read_records(self, split: str) -> list[Record]:
        meta = self._metadata()
        keys, class_ids = self._split_keys(split)
        records = []
        for key, class_id in zip(keys, class_ids):
            image_id = self._image_id(key)
            if image_id not in meta["bboxes"]:
                raise DataError(f"image {key!r} (id {image_id}) has no line in {self.cub_dir / 'bounding_boxes.txt'}")
            attributes = None
            if meta["attributes"] is not None:
                attributes = dict(meta["attributes"].get(image_id, {}))
            records.append(Record(
                key=key,
                image_path=self.cub_dir / "images" / meta["images"][image_id],
                captions=read_caption_file(self.root / "text" / f"{key}.txt", self.captions_per_image),
                class_id=class_id,
                bbox=meta["bboxes"][image_id],
                attributes=attributes,
            ))
        return records
