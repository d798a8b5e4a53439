"""Build CUB-200-2011 and COCO 2014 in the layouts t2i reads, from the archives their authors publish.

Nothing is downloaded: the user passes the archive files.

CUB (``data=cub``, AttnGAN's layout, read by :class:`t2i.data.cub.CUBSource`) from

* ``CUB_200_2011.tgz`` (Caltech): ``CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt,
  bounding_boxes.txt, train_test_split.txt, images/<class>/<name>.jpg, attributes/...}`` and the
  attribute names ``attributes.txt`` at the top of the archive, beside ``CUB_200_2011/``;
* Reed et al.'s ``cvpr2016_cub.tar.gz`` (CVPR 2016, the captions AttnGAN's ``birds.zip`` copies):
  ``text_c10/<class>/<name>.txt`` (10 captions an image), ``trainvalclasses.txt`` (150 species) and
  ``testclasses.txt`` (50), possibly under one top folder;

writes ``CUB_200_2011/`` and ``attributes.txt`` as in the archive, ``text/<class>/<name>.txt`` and
``{train,test}/filenames.json`` + ``class_info.json`` (the lists AttnGAN keeps as pickles: train = the
150 trainval species, test = the 50 test species, in ``images.txt`` order; the class id is CUB's).

COCO 2014 from ``train2014.zip``, ``val2014.zip`` and ``annotations_trainval2014.zip``: AttnGAN's
layout (``data=coco``: ``images/``, ``text/<name>.txt`` with every caption of the image in annotation-id
order, ``{train,test}/filenames.json``: train = train2014, test = val2014) or the official one
(``data=coco_json``: ``annotations/captions_{train,val}2014.json``, ``train2014/``, ``val2014/``).

Each archive's size, sha256 and md5 are computed and recorded in ``<root>/prepared.json`` (written
last); where a digest is published (:data:`PUBLISHED`) an archive that does not match is refused
unless ``checksum="record"``. A truncated archive, one that is not the one asked for, or one that
lacks files its own tables list, is refused with one line. The set is built in a hidden folder beside
the root and moved into place at the end, so an interrupted run leaves nothing half-written and an
existing root is replaced only with ``force``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import lzma
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, IO

from t2i.data.text import is_usable_caption
from t2i.errors import DataError

__all__ = ["PUBLISHED", "Published", "archive_digest", "check_archive", "prepare_cub", "prepare_coco",
           "MANIFEST"]

log = logging.getLogger(__name__)

MANIFEST = "prepared.json"
CHECKSUM_POLICIES = ("verify", "record")


@dataclass(frozen=True)
class Published:
    """What is published about an archive: its official name and, where known, size and digests."""

    name: str
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None
    where: str = "no published checksum found"


# Digests as published by others; none is invented. CUB: size and sha256 from TensorFlow Datasets
# (url_checksums/caltech_birds2011.txt), md5 from the torchvision-style CUB loaders
# (tgz_md5 = '97ecee...'); COCO 2014: size and sha256 from TensorFlow Datasets (url_checksums/coco2014.txt).
# Reed et al.'s caption archive: no published checksum was found, so only its sha256 is recorded.
PUBLISHED: dict[str, Published] = {
    "cub_images": Published("CUB_200_2011.tgz", 1150585339,
                            "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
                            "97eceeb196236b17998738112f37df78",
                            "TensorFlow Datasets url_checksums/caltech_birds2011.txt (size, sha256); "
                            "torchvision-style CUB loaders (md5)"),
    "cub_captions": Published("cvpr2016_cub.tar.gz"),
    "coco_train": Published("train2014.zip", 13510573713,
                            "ede4087e640bddba550e090eae701092534b554b42b05ac33f0300b984b31775",
                            where="TensorFlow Datasets url_checksums/coco2014.txt"),
    "coco_val": Published("val2014.zip", 6645013297,
                          "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
                          where="TensorFlow Datasets url_checksums/coco2014.txt"),
    "coco_annotations": Published("annotations_trainval2014.zip", 252872794,
                                  "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
                                  where="TensorFlow Datasets url_checksums/coco2014.txt"),
}

_READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)
_SAFE_COCO_NAME = re.compile(r"^[\w.-]+$")


# ---------------------------------------------------------------------------- digests
def archive_digest(path: str | os.PathLike, chunk: int = 8 << 20) -> dict:
    """``{"size", "sha256", "md5"}`` of a file, read once."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return {"size": size, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def check_archive(role: str, path: str | os.PathLike | None, option: str, checksum: str = "verify") -> dict:
    """Digest an archive and compare it with what is published for ``role`` (a key of :data:`PUBLISHED`).

    Args:
        role: which archive this is meant to be.
        path: the file.
        option: the command-line option that names it (for the error messages).
        checksum: ``verify`` refuses an archive whose published digest differs; ``record`` only records.

    Returns:
        the record stored in ``prepared.json``.

    Raises:
        DataError: no such file, or (``verify``) not the published archive.
    """
    if checksum not in CHECKSUM_POLICIES:
        raise DataError(f"checksum={checksum} must be one of {', '.join(CHECKSUM_POLICIES)}")
    pub = PUBLISHED[role]
    if path is None or str(path) in ("", "None"):
        raise DataError(f"no {pub.name} given: pass {option}=PATH/{pub.name} (nothing is downloaded)")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{option}={path}: no such file (the archive {pub.name}; nothing is downloaded)")
    start = time.perf_counter()
    digest = archive_digest(path)
    verified = None
    if pub.sha256 is not None:
        verified = digest["sha256"] == pub.sha256
        if not verified and checksum == "verify":
            size = (f", and is {digest['size']:,} bytes where the published one has {pub.size:,}"
                    if pub.size is not None and pub.size != digest["size"] else "")
            raise DataError(f"{path}: sha256 {digest['sha256'][:16]}... is not the published {pub.name}'s "
                            f"({pub.sha256[:16]}...){size}: an incomplete download or another file; download "
                            "it again, or pass checksum=record to use it anyway")
        if not verified:
            log.warning("%s is not the published %s (sha256 differs); used anyway (checksum=record)", path, pub.name)
    log.info("%s: %s bytes, sha256 %s (%.1f s)%s", path, f"{digest['size']:,}", digest["sha256"],
             time.perf_counter() - start, " = published" if verified else "")
    return {"role": role, "official_name": pub.name, "file": str(path.resolve()), **digest,
            "published_sha256": pub.sha256, "published_md5": pub.md5, "digest_source": pub.where,
            "verified": verified}


# ---------------------------------------------------------------------------- staging
class _Staging:
    """A hidden folder beside ``root`` that becomes ``root`` on :meth:`commit` (removed on failure)."""

    def __init__(self, root: Path, force: bool):
        self.root = Path(root)
        self.check(self.root, force)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.partial-", dir=self.root.parent))

    @staticmethod
    def check(root: Path, force: bool) -> None:
        """Refuse a non-empty ``root`` unless ``force`` (called before the archives are read)."""
        if root.exists() and (not root.is_dir() or any(root.iterdir())) and not force:
            raise DataError(f"{root} already exists and is not empty; pass force=true to replace it, "
                            "or data.root=<another folder>")

    def __enter__(self) -> "_Staging":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self) -> None:
        if self.root.exists():
            old = self.root.with_name(f".{self.root.name}.old-{os.getpid()}")
            self.root.rename(old)
            self.dir.rename(self.root)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            self.dir.rename(self.root)


def _safe_name(name: str) -> str | None:
    """A member name as a relative POSIX path inside the archive, or None (absolute, ``..``, empty)."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return norm


def _copy(src: IO[bytes], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)


def _scan_tar(path: Path, what: str, handle: Callable[[str, tarfile.TarFile, tarfile.TarInfo], None]) -> None:
    """Read a (compressed) tar archive once, in order, calling ``handle(name, tar, member)`` per regular file.

    Links, devices and names that would leave the archive's folder are skipped (and counted in the log).

    Raises:
        DataError: not a tar archive, truncated or corrupt (one line naming it).
    """
    skipped = 0
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = _safe_name(member.name)
                if name is None or not member.isfile():
                    skipped += not member.isdir()
                    continue
                handle(name, tar, member)
    except _READ_ERRORS as exc:
        raise DataError(f"{path} is truncated or not a {what} archive ({type(exc).__name__}: "
                        f"{str(exc)[:120] or 'unexpected end'}); download it again") from None
    if skipped:
        log.warning("%s: %d members that are links, devices or outside the archive were not extracted", path, skipped)


def _open_zip(path: Path, what: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{path} is truncated or not a {what} zip archive ({type(exc).__name__}: "
                        f"{str(exc)[:120]}); download it again") from None


def _zip_read(zf: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: member {name} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); "
                        "download the archive again") from None


def _zip_extract(zf: zipfile.ZipFile, path: Path, name: str, dest: Path) -> None:
    try:
        with zf.open(name) as src:
            _copy(src, dest)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: member {name} is corrupt ({type(exc).__name__}: {str(exc)[:120]}); "
                        "download the archive again") from None


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")


def _usable_lines(raw: bytes) -> int:
    text = raw.decode("utf-8", errors="replace")
    return sum(1 for line in text.split("\n") if is_usable_caption(line.rstrip("\r")))


class _Bad:
    """Bad items: raise one line, or (``skip_bad``) count and log."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.counts: dict[str, int] = {}

    def __call__(self, kind: str, message: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{message} (skip_bad=true skips such images)")
        self.counts[kind] = self.counts.get(kind, 0) + 1
        log.warning("skipped: %s", message)


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
