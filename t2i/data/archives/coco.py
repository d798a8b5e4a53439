"""COCO 2014 (AttnGAN's or the official layout) from the three official zips."""

from __future__ import annotations

import json
import logging
import os
import posixpath
import time
from pathlib import Path

from t2i.data.archives.common import (_SAFE_COCO_NAME, MANIFEST, _Bad, _open_zip, _Staging, _write_json, _zip_extract,
                                      _zip_read, check_archive)
from t2i.data.text import is_usable_caption
from t2i.errors import DataError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- COCO
COCO_FOLDERS = {"train": "train2014", "test": "val2014"}
COCO_LAYOUTS = ("attngan", "json")


def _coco_captions(data: bytes, archive: Path, member: str) -> tuple[list[dict], dict[int, list[tuple[int, str]]]]:
    try:
        doc = json.loads(data.decode("utf-8"))
        images, annotations = doc["images"], doc["annotations"]
        by_image: dict[int, list[tuple[int, str]]] = {}
        for ann in annotations:
            by_image.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), str(ann["caption"])))
        for img in images:
            int(img["id"]), str(img["file_name"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{archive}: {member} is not a COCO captions file "
                        f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return images, by_image


def prepare_coco(train_archive: str | os.PathLike | None, val_archive: str | os.PathLike | None,
                 annotations_archive: str | os.PathLike | None, root: str | os.PathLike, *, layout: str = "attngan",
                 checksum: str = "verify", force: bool = False, skip_bad: bool = False,
                 captions_per_image: int = 5) -> dict:
    """Build COCO 2014 under ``root`` from ``train2014.zip``, ``val2014.zip`` and ``annotations_trainval2014.zip``.

    Args:
        layout: ``attngan`` (``images/``, ``text/``, ``{train,test}/filenames.json``; ``data=coco``) or
            ``json`` (the official folders; ``data=coco_json``).
        captions_per_image: attngan layout: captions each image needs (5); an image with fewer usable
            captions stops the run, or with ``skip_bad`` is left out and counted.
        checksum, force, skip_bad: as :func:`prepare_cub`.

    Returns:
        the manifest written to ``root/prepared.json``.
    """
    if layout not in COCO_LAYOUTS:
        raise DataError(f"COCO layout {layout!r} must be one of {COCO_LAYOUTS}")
    start = time.perf_counter()
    _Staging.check(Path(root), force)
    records = [check_archive("coco_train", train_archive, "archives.train", checksum),
               check_archive("coco_val", val_archive, "archives.val", checksum),
               check_archive("coco_annotations", annotations_archive, "archives.annotations", checksum)]
    paths = {"train": Path(records[0]["file"]), "test": Path(records[1]["file"])}
    ann_path = Path(records[2]["file"])
    bad = _Bad(skip_bad)
    with _Staging(Path(root), force) as stage, _open_zip(ann_path, "COCO annotations") as ann_zip:
        out = stage.dir
        names = set(ann_zip.namelist())
        counts: dict[str, int] = {}
        for split, folder in COCO_FOLDERS.items():
            member = f"annotations/captions_{folder}.json"
            if member not in names:
                raise DataError(f"{ann_path} is not annotations_trainval2014.zip: it has no {member}")
            raw = _zip_read(ann_zip, ann_path, member)
            images, by_image = _coco_captions(raw, ann_path, member)
            if layout == "json":
                (out / "annotations").mkdir(parents=True, exist_ok=True)
                (out / member).write_bytes(raw)
            with _open_zip(paths[split], folder) as zf:
                members = set(zf.namelist())
                if not any(n.startswith(f"{folder}/") for n in members):
                    raise DataError(f"{paths[split]} is not {folder}.zip: it has no member under {folder}/")
                kept = []
                for img in sorted(images, key=lambda im: int(im["id"])):
                    file_name = str(img["file_name"])
                    if not _SAFE_COCO_NAME.match(file_name):
                        raise DataError(f"{ann_path}: {member}: image {img['id']} has file_name {file_name!r}, "
                                        "which is not a plain file name")
                    if f"{folder}/{file_name}" not in members:
                        missing = sum(f"{folder}/{im['file_name']}" not in members for im in images)
                        raise DataError(f"{paths[split]} is partial: {missing} of the {len(images)} images of "
                                        f"{member} are not in it (first: {folder}/{file_name}); download it again")
                    stem = posixpath.splitext(file_name)[0]
                    if layout == "attngan":
                        caps = [" ".join(c.split()) for _, c in sorted(by_image.get(int(img["id"]), []))]
                        caps = [c for c in caps if is_usable_caption(c)]
                        if len(caps) < captions_per_image:
                            bad("few captions", f"{ann_path}: {member}: image {img['id']} ({file_name}) has "
                                                f"{len(caps)} usable captions, fewer than {captions_per_image}")
                            continue
                        (out / "text").mkdir(parents=True, exist_ok=True)
                        (out / "text" / f"{stem}.txt").write_text("\n".join(caps) + "\n", encoding="utf-8")
                        dest = out / "images" / file_name
                    else:
                        dest = out / folder / file_name
                    _zip_extract(zf, paths[split], f"{folder}/{file_name}", dest)
                    kept.append(stem)
            if not kept:
                raise DataError(f"{ann_path}: {member} lists no usable image")
            if layout == "attngan":
                _write_json(out / split / "filenames.json", kept)
            counts[split] = len(kept)
        manifest = {"format": "t2i-prepared", "version": 1, "data": "coco", "layout": layout, "archives": records,
                    "images": counts, "captions_per_image": captions_per_image if layout == "attngan" else None,
                    "skipped": bad.counts, "seconds": round(time.perf_counter() - start, 2)}
        _write_json(out / MANIFEST, manifest)
        stage.commit()
    log.info("COCO 2014 (%s layout) at %s: %s", layout, root, counts)
    return manifest
