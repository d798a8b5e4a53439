"""CUB-200-2011 in AttnGAN's layout from ``CUB_200_2011.tgz`` and Reed et al.'s ``cvpr2016_cub.tar.gz``."""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tarfile
import time
from pathlib import Path

from t2i.data.archives.common import (MANIFEST, _Bad, _copy, _scan_tar, _Staging, _usable_lines, _write_json,
                                      check_archive)
from t2i.errors import DataError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- CUB
CUB_TABLES = ("images.txt", "classes.txt", "image_class_labels.txt", "bounding_boxes.txt", "train_test_split.txt")


def _cub_table(path: Path, archive: Path, fields: int) -> dict[int, list[str]]:
    rows = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < fields or not parts[0].isdigit():
            raise DataError(f"{archive}: CUB_200_2011/{path.name} line {n} is not '<id> ...' with {fields} fields")
        rows[int(parts[0])] = parts[1:]
    return rows


def _read_class_list(data: bytes, archive: Path, member: str) -> list[str]:
    names = [line.strip() for line in data.decode("utf-8", errors="replace").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{archive}: {member} is empty")
    return names


def prepare_cub(images_archive: str | os.PathLike | None, captions_archive: str | os.PathLike | None,
                root: str | os.PathLike, *, checksum: str = "verify", force: bool = False, skip_bad: bool = False,
                captions_per_image: int = 10) -> dict:
    """Build CUB-200-2011 in AttnGAN's layout under ``root`` from ``CUB_200_2011.tgz`` and ``cvpr2016_cub.tar.gz``.

    Args:
        images_archive: ``CUB_200_2011.tgz``.
        captions_archive: Reed et al.'s ``cvpr2016_cub.tar.gz``.
        root: the data root to create (``data/birds``).
        checksum: ``verify`` or ``record`` (see :func:`check_archive`).
        force: replace an existing, non-empty ``root``.
        skip_bad: leave out (and count) images whose caption file has fewer than ``captions_per_image``
            usable captions instead of stopping.
        captions_per_image: captions each image needs (10).

    Returns:
        the manifest written to ``root/prepared.json``.

    Raises:
        DataError: a missing, truncated, partial or unknown archive, or a bad caption file (one line).
    """
    start = time.perf_counter()
    _Staging.check(Path(root), force)
    records = [check_archive("cub_images", images_archive, "archives.images", checksum),
               check_archive("cub_captions", captions_archive, "archives.captions", checksum)]
    images_archive, captions_archive = Path(records[0]["file"]), Path(records[1]["file"])
    bad = _Bad(skip_bad)
    with _Staging(Path(root), force) as stage:
        out = stage.dir
        # (1) the CUB archive: CUB_200_2011/ and the attribute names beside it, as they are
        extracted: set[str] = set()

        def take_cub(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
            if (name.startswith("CUB_200_2011/") or name == "attributes.txt") and \
                    not posixpath.basename(name).startswith("._"):
                _copy(tar.extractfile(member), out / name)
                extracted.add(name)

        _scan_tar(images_archive, "CUB-200-2011", take_cub)
        missing_tables = [t for t in CUB_TABLES if f"CUB_200_2011/{t}" not in extracted]
        if "images.txt" in missing_tables:
            raise DataError(f"{images_archive} is not the CUB-200-2011 archive: it has no CUB_200_2011/images.txt")
        if missing_tables:
            raise DataError(f"{images_archive} is partial: it has no CUB_200_2011/{missing_tables[0]}")
        cub = out / "CUB_200_2011"
        images = {i: r[0] for i, r in _cub_table(cub / "images.txt", images_archive, 2).items()}
        classes = {i: r[0] for i, r in _cub_table(cub / "classes.txt", images_archive, 2).items()}
        labels = {i: int(r[0]) for i, r in _cub_table(cub / "image_class_labels.txt", images_archive, 2).items()}
        boxes = _cub_table(cub / "bounding_boxes.txt", images_archive, 5)
        split = _cub_table(cub / "train_test_split.txt", images_archive, 2)
        absent = [p for p in images.values() if f"CUB_200_2011/images/{p}" not in extracted]
        if absent:
            raise DataError(f"{images_archive} is partial: {len(absent)} of the {len(images)} images listed in "
                            f"CUB_200_2011/images.txt are not in it (first: {absent[0]}); download it again")
        for table, rows in (("image_class_labels.txt", labels), ("bounding_boxes.txt", boxes),
                            ("train_test_split.txt", split)):
            lacking = [i for i in images if i not in rows]
            if lacking:
                raise DataError(f"{images_archive} is partial: CUB_200_2011/{table} has no line for image id "
                                f"{lacking[0]} ({len(lacking)} ids missing)")
        keys = {posixpath.splitext(p)[0]: i for i, p in images.items()}

        # (2) Reed et al.'s captions: text_c10/<class>/<name>.txt -> text/, and the species lists
        texts: dict[str, int] = {}  # key -> usable caption lines
        class_lists: dict[str, list[str]] = {}
        prefixes: set[str] = set()
        unknown: list[str] = []
        pattern = re.compile(r"^(?P<prefix>(?:[^/]+/)*)text_c10/(?P<key>[^/]+/[^/]+)\.txt$")

        def take_caption(name: str, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
            m = pattern.match(name)
            if m:
                prefixes.add(m["prefix"])
                key = m["key"]
                if key not in keys:
                    unknown.append(name)
                    return
                data = tar.extractfile(member).read()
                (out / "text" / key).parent.mkdir(parents=True, exist_ok=True)
                (out / "text" / f"{key}.txt").write_bytes(data)
                texts[key] = _usable_lines(data)
                return
            base = posixpath.basename(name)
            if base in ("trainvalclasses.txt", "testclasses.txt"):
                class_lists[posixpath.dirname(name) + "/" + base] = _read_class_list(
                    tar.extractfile(member).read(), captions_archive, name)

        _scan_tar(captions_archive, "Reed et al. caption", take_caption)
        if not texts and not unknown:
            raise DataError(f"{captions_archive} is not Reed et al.'s caption archive (cvpr2016_cub.tar.gz): "
                            "it has no text_c10/<class>/<image>.txt")
        if len(prefixes) > 1:
            raise DataError(f"{captions_archive}: text_c10/ appears under several folders ({sorted(prefixes)})")
        if unknown:
            raise DataError(f"{captions_archive} does not belong to this CUB archive: {len(unknown)} caption files "
                            f"name no image of CUB_200_2011/images.txt (first: {unknown[0]})")
        no_text = [k for k in keys if k not in texts]
        if no_text:
            raise DataError(f"{captions_archive} is partial: {len(no_text)} of {len(keys)} images have no caption "
                            f"file text_c10/<key>.txt (first: {no_text[0]}.txt); download it again")
        prefix = next(iter(prefixes)).rstrip("/")
        lists = {}
        for stem in ("trainvalclasses", "testclasses"):
            member = f"{prefix}/{stem}.txt" if prefix else f"/{stem}.txt"
            if member not in class_lists:
                raise DataError(f"{captions_archive} is partial: it has no {member.lstrip('/')} (the species split)")
            lists[stem] = class_lists[member]
        known = set(classes.values())
        for stem, names in lists.items():
            for n, name in enumerate(names, 1):
                if name not in known:
                    raise DataError(f"{captions_archive}: {stem}.txt line {n}: {name!r} is not a class of "
                                    "CUB_200_2011/classes.txt")
        both = set(lists["trainvalclasses"]) & set(lists["testclasses"])
        if both:
            raise DataError(f"{captions_archive}: {sorted(both)[0]} is in both trainvalclasses.txt and testclasses.txt")

        # (3) the split lists (AttnGAN: train = 150 trainval species, test = 50 test species)
        species = {"train": set(lists["trainvalclasses"]), "test": set(lists["testclasses"])}
        split_keys: dict[str, list[str]] = {"train": [], "test": []}
        for key, image_id in sorted(keys.items(), key=lambda kv: kv[1]):
            cls = key.split("/", 1)[0]
            which = "train" if cls in species["train"] else "test" if cls in species["test"] else None
            if which is None:
                raise DataError(f"{captions_archive}: class {cls} is in neither trainvalclasses.txt "
                                "nor testclasses.txt")
            if texts[key] < captions_per_image:
                bad("short caption file", f"{captions_archive}: text_c10/{key}.txt has {texts[key]} usable "
                                          f"captions, fewer than {captions_per_image}")
                continue
            split_keys[which].append(key)
        for s in ("train", "test"):
            if not split_keys[s]:
                raise DataError(f"{captions_archive}: the {s} split has no image")
            _write_json(out / s / "filenames.json", split_keys[s])
            _write_json(out / s / "class_info.json", [labels[keys[k]] for k in split_keys[s]])
        manifest = {
            "format": "t2i-prepared", "version": 1, "data": "cub", "layout": "attngan", "archives": records,
            "images": {s: len(split_keys[s]) for s in split_keys},
            "classes": {s: len({k.split('/', 1)[0] for k in split_keys[s]}) for s in split_keys},
            "captions_per_image": captions_per_image, "skipped": bad.counts,
            "seconds": round(time.perf_counter() - start, 2)}
        _write_json(out / MANIFEST, manifest)
        stage.commit()
    log.info("CUB-200-2011 in AttnGAN's layout at %s: %s", root, manifest["images"])
    return manifest
