"""Reader of MS-COCO 2014 captions, in AttnGAN's layout or the official annotation files.

``layout="attngan"`` (AttnGAN's ``coco.zip`` metadata + the 2014 images, ``data/coco``)::

    images/<name>.jpg                 train2014 and val2014 images together
    text/<name>.txt                   5 captions per image
    {train,test}/filenames.pickle     train = train2014, test = val2014 (AttnGAN); or filenames.json
                                      (written by ``tools/prepare_data.py data=coco source=official``)

``layout="json"`` (as downloaded from cocodataset.org)::

    annotations/captions_{train,val}2014.json
    train2014/<file_name>   val2014/<file_name>

In both, every image is its own class (AttnGAN ``load_class_id``: ``np.arange(total_num)`` when there
is no ``class_info.pickle``), so mismatched captions are simply captions of other images.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from t2i.data.cub import read_caption_file, read_split_list
from t2i.data.safe_pickle import safe_load
from t2i.data.source import SourceBase
from t2i.data.text import is_usable_caption
from t2i.errors import DataError
from t2i.structures import Record

__all__ = ["COCOSource"]

log = logging.getLogger(__name__)

_JSON_SPLITS = {"train": "train2014", "test": "val2014"}


class COCOSource(SourceBase):
    """MS-COCO 2014 captions.

    Args:
        root: data directory (``data/coco``).
        layout: ``attngan`` or ``json`` (see the module docstring).
        captions_per_image: captions kept per image (5).
        on_short: json layout only: what to do with an image with fewer captions than
            ``captions_per_image``: ``error`` (DataError naming it) or ``skip`` (logged with a count).
    """

    name = "coco"
    LAYOUTS = {
        "attngan": "images/<name>.jpg, text/<name>.txt, {train,test}/filenames.pickle",
        "json": "annotations/captions_{train,val}2014.json, train2014/, val2014/",
    }

    def __init__(self, root: str | os.PathLike, layout: str = "attngan", captions_per_image: int = 5,
                 on_short: str = "error"):
        super().__init__()
        if layout not in self.LAYOUTS:
            raise ValueError(f"unknown COCO layout {layout!r}; choose one of {tuple(self.LAYOUTS)}")
        if on_short not in ("error", "skip"):
            raise ValueError(f"on_short must be 'error' or 'skip', not {on_short!r}")
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be >= 1, not {captions_per_image}")
        self.root = Path(root)
        self.layout = layout
        self.captions_per_image = captions_per_image
        self.on_short = on_short
        self.skipped: dict[str, int] = {}
        probe = self.root / ("images" if layout == "attngan" else "annotations")
        if not probe.is_dir():
            raise DataError(f"COCO data ({layout} layout) not found under {self.root}: expected "
                            f"{self.LAYOUTS[layout]}; see data/README.md, or set data.root=...")

    def _metadata_files(self) -> list[Path]:
        if self.layout == "json":
            return [self.root / "annotations" / f"captions_{f}.json" for f in _JSON_SPLITS.values()]
        return super()._metadata_files()

    def _read_records(self, split: str) -> list[Record]:
        return self._attngan_records(split) if self.layout == "attngan" else self._json_records(split)

    def _attngan_records(self, split: str) -> list[Record]:
        split_dir = self.root / split
        names = read_split_list(split_dir, "filenames")
        if not isinstance(names, (list, tuple)):
            raise DataError(f"{split_dir / 'filenames.pickle'} must hold a list of image names")
        names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        info_path = split_dir / "class_info.*"
        info = read_split_list(split_dir, "class_info", required=False)
        class_ids = [int(c) for c in info] if info is not None else list(range(len(names)))
        if len(class_ids) != len(names):
            raise DataError(f"{info_path} has {len(class_ids)} class ids for {len(names)} filenames")
        return [Record(key=name, image_path=self.root / "images" / f"{name}.jpg",
                       captions=read_caption_file(self.root / "text" / f"{name}.txt", self.captions_per_image),
                       class_id=cid)
                for name, cid in zip(names, class_ids)]

    def _json_records(self, split: str) -> list[Record]:
        folder = _JSON_SPLITS[split]
        path = self.root / "annotations" / f"captions_{folder}.json"
        if not path.is_file():
            raise DataError(f"{path} does not exist; expected {self.LAYOUTS['json']} (see data/README.md)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            images = data["images"]
            annotations = data["annotations"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is not a COCO captions file ({type(exc).__name__}: {exc})") from None
        by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
        for ann in annotations:
            by_image[int(ann["image_id"])].append((int(ann["id"]), str(ann["caption"])))
        records, short = [], []
        for img in sorted(images, key=lambda im: int(im["id"])):
            # first captions_per_image usable captions in annotation-id order
            caps = [c for _, c in sorted(by_image.get(int(img["id"]), [])) if is_usable_caption(c.strip())]
            name = os.path.splitext(img["file_name"])[0]
            if len(caps) < self.captions_per_image:
                if self.on_short == "error":
                    raise DataError(f"{path}: image {name} has {len(caps)} usable captions, fewer than "
                                    f"captions_per_image={self.captions_per_image}; use on_short=skip to skip such images")
                short.append(name)
                continue
            records.append(Record(key=name, image_path=self.root / folder / img["file_name"],
                                  captions=[c.strip() for c in caps[:self.captions_per_image]],
                                  class_id=len(records)))
        if short:
            self.skipped[split] = len(short)
            log.warning("%s: skipped %d images with fewer than %d captions (first: %s)",
                        path, len(short), self.captions_per_image, short[0])
        return records
