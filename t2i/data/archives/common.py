"""What both builders share: published digests, archive checks, a staging folder moved into place at the
end, safe member names and readers for tar and zip members (see :mod:`t2i.data.archives`)."""

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
from typing import IO, Callable

from t2i.data.text import is_usable_caption
from t2i.errors import DataError

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
