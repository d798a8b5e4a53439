"""Reader of a folder of captioned images in the Hugging Face image-folder convention.

The layout that ``datasets.load_dataset("imagefolder")`` and the diffusers text-to-image scripts read::

    DIR/metadata.jsonl   {"file_name": "0001.png", "text": "a red bird"}             one JSON object a line
    DIR/metadata.csv     file_name,text                                               or a CSV with a header
    DIR/0001.png, DIR/sub/0002.jpg, ...                                               paths relative to DIR

or the same in ``DIR/train/`` and ``DIR/test/`` (each with its own metadata file). With one folder the
test split is a seeded fraction of the images (or of the classes). An image may have several captions:
a list value (``"text": ["a red bird", "a bird, red"]``) or repeated rows naming the same file. An
optional class column (``class_column``) gives the classes the matching-aware loss draws its mismatched
captions from; without one every image is its own class, as for COCO, so a mismatched caption is a
caption of another image.

Every bad row is one :class:`~t2i.errors.DataError` naming the metadata file and its line; with
``skip_bad`` it is skipped, counted in :attr:`ImageFolderSource.skipped` and logged. Whole-file
problems (no metadata, no caption column, a caption column that is empty on every row, two metadata
files) always stop.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import posixpath
import random
from dataclasses import dataclass, field
from pathlib import Path

from t2i.data.source import SPLITS, SourceBase
from t2i.data.text import Vocabulary, is_usable_caption, tokenize
from t2i.errors import DataError
from t2i.structures import Record

__all__ = ["ImageFolderSource", "IMAGE_EXTENSIONS", "METADATA_FILES"]

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
FILE_COLUMN = "file_name"
LAYOUT = ("DIR/metadata.jsonl (or metadata.csv) with a file_name and a caption column beside the images, "
          "or DIR/train/ and DIR/test/ each laid out so")


@dataclass
class _Entry:
    """One image of a metadata file, with the captions of every row that names it."""

    file_name: str          # normalised, relative to the metadata file's folder
    line: int               # first line naming it
    captions: list[str] = field(default_factory=list)
    label: str | None = None


def _has_surrogates(value) -> bool:
    # bytes that are not UTF-8 were decoded with "surrogateescape" into lone surrogates U+DC80..U+DCFF,
    # which valid UTF-8 text never contains
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    return False


class ImageFolderSource(SourceBase):
    """Captioned images in the Hugging Face image-folder layout (see the module docstring).

    Args:
        root: the folder (``DIR``).
        caption_column: the caption column (``text``, as the Hugging Face convention).
        class_column: optional column of class labels (any strings or numbers); None: every image is
            its own class.
        max_captions: keep at most this many captions per image (None: all).
        test_fraction: with one folder, the fraction of images (or classes) held out as the test split.
        split_by: ``image`` or ``class`` (the test split gets whole classes, as CUB's unseen species).
        split_seed: seed of that split.
        skip_bad: skip bad rows and images without a caption (counted in :attr:`skipped`) instead of
            raising.
        unknown: the data set's unknown-word policy (``drop`` or ``unk``); ``unk`` gives the
            vocabulary an ``<unk>`` token.

    The vocabulary is built from the *training* captions only (so a held-out split stays held out);
    test captions in which no word is known are dropped and counted, and a test image left without a
    caption is dropped too.
    """

    name = "imagefolder"

    def __init__(self, root: str | os.PathLike, caption_column: str = "text", class_column: str | None = None,
                 max_captions: int | None = None, test_fraction: float = 0.1, split_by: str = "image",
                 split_seed: int = 0, skip_bad: bool = False, unknown: str = "drop"):
        super().__init__()
        if root is None or str(root) in ("", "None"):
            raise DataError(f"data=imagefolder needs data.root=DIR: {LAYOUT}; see data/README.md")
        if split_by not in ("image", "class"):
            raise ValueError(f"split_by must be 'image' or 'class', not {split_by!r}")
        if split_by == "class" and not class_column:
            raise DataError("split_by=class needs a class column: set data.class_column=<column>")
        if not 0.0 < float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), not {test_fraction}")
        if max_captions is not None and int(max_captions) < 1:
            raise ValueError(f"max_captions must be >= 1 or None, not {max_captions}")
        if not caption_column:
            raise ValueError("caption_column must name a column")
        self.root = Path(root)
        self.caption_column = str(caption_column)
        self.class_column = str(class_column) if class_column else None
        self.captions_per_image = int(max_captions) if max_captions is not None else None
        self.test_fraction = float(test_fraction)
        self.split_by = split_by
        self.split_seed = int(split_seed)
        self.skip_bad = bool(skip_bad)
        self.unknown = unknown
        self.skipped: dict[str, int] = {}
        self._first_skip: str | None = None
        self._splits: dict[str, list[Record]] | None = None
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist: expected {LAYOUT}; see data/README.md")
        self.folders = self._find_folders()

    # ------------------------------------------------------------------ layout
    def _find_folders(self) -> dict[str, Path]:
        """``{"all": root}`` for one folder, or ``{"train": ..., "test": ...}``."""
        def has_metadata(folder: Path) -> bool:
            return any((folder / m).is_file() for m in METADATA_FILES)

        if has_metadata(self.root / "train") and has_metadata(self.root / "test"):
            return {"train": self.root / "train", "test": self.root / "test"}
        if has_metadata(self.root):
            return {"all": self.root}
        if has_metadata(self.root / "train"):  # train/ alone: split it
            return {"all": self.root / "train"}
        other = sorted(p.name for p in self.root.glob("metadata.*"))
        hint = f" ({', '.join(other)} is not read: convert it to metadata.jsonl)" if other else ""
        raise DataError(f"no metadata.jsonl or metadata.csv in {self.root}{hint}: expected {LAYOUT}; "
                        "see data/README.md")

    def _metadata_path(self, folder: Path) -> Path:
        found = [folder / m for m in METADATA_FILES if (folder / m).is_file()]
        if len(found) > 1:
            raise DataError(f"{folder} has both {found[0].name} and {found[1].name}; keep one of them")
        return found[0]

    # ------------------------------------------------------------------ bad input
    def _bad(self, kind: str, message: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{message} (data.skip_bad=true skips such rows)")
        self.skipped[kind] = self.skipped.get(kind, 0) + 1
        if self._first_skip is None:
            self._first_skip = message
        log.warning("skipped: %s", message)

    # ------------------------------------------------------------------ metadata files
    def _rows(self, path: Path) -> list[tuple[int, dict]]:
        """``(line, row)`` of a metadata file; rows that cannot be parsed go to :meth:`_bad`.

        The file is decoded with ``surrogateescape``: bytes that are not UTF-8 become lone surrogates, so
        a row that has them is still parsed (its image is known) and then reported as not UTF-8.
        """
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        text = raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
        rows: list[tuple[int, dict]] = []
        if path.suffix == ".jsonl":
            for n, line in enumerate(text.split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    if _has_surrogates(line):
                        self._bad("not UTF-8", f"{path} line {n}: not UTF-8 text; save the file as UTF-8")
                    else:
                        self._bad("not JSON", f"{path} line {n}: not a JSON object ({exc})")
                    continue
                if not isinstance(row, dict):
                    self._bad("not JSON", f"{path} line {n}: not a JSON object but {type(row).__name__}")
                    continue
                rows.append((n, row))
            columns = {k for _, r in rows for k in r}
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            columns = set(reader.fieldnames or [])
            while True:
                start = reader.line_num + 1
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise DataError(f"{path} line {start}: not valid CSV ({exc})") from None
                if None in row:
                    self._bad("bad CSV", f"{path} line {start}: more fields than the header has columns")
                    continue
                rows.append((start, row))
            # a column whose values are all missing still counts as present in a CSV header
        self._check_columns(path, columns, rows)
        return rows

    def _check_columns(self, path: Path, columns: set[str], rows: list[tuple[int, dict]]) -> None:
        listed = ", ".join(sorted(columns)) or "none"
        if not rows:
            raise DataError(f"{path} has no rows")
        if FILE_COLUMN not in columns:
            raise DataError(f"{path} has no {FILE_COLUMN!r} column (columns: {listed}); "
                            "the image-folder convention names each image in a 'file_name' column")
        if self.caption_column not in columns:
            raise DataError(f"{path} has no caption column {self.caption_column!r} (columns: {listed}); "
                            "set data.caption_column=<column>")
        if not any(self._captions_of(r.get(self.caption_column)) for _, r in rows):
            raise DataError(f"{path}: the caption column {self.caption_column!r} is empty on every row; "
                            "fill it or set data.caption_column=<column>")
        if self.class_column and self.class_column not in columns:
            raise DataError(f"{path} has no class column {self.class_column!r} (columns: {listed}); "
                            "set data.class_column=<column> or null")

    @staticmethod
    def _captions_of(value) -> list[str]:
        """The usable captions of a caption cell (a string or a list of strings), whitespace normalised."""
        values = value if isinstance(value, list) else [value]
        out = []
        for v in values:
            if isinstance(v, str):
                v = " ".join(v.split())
                if is_usable_caption(v):
                    out.append(v)
        return out

    @staticmethod
    def _normalise_name(name: str) -> str | None:
        """A ``file_name`` as a normalised relative POSIX path, or None when it leaves the folder."""
        name = name.replace("\\", "/").strip()
        if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            return None
        norm = posixpath.normpath(name)
        if norm == "." or norm == ".." or norm.startswith("../"):
            return None
        return norm

    def _read_folder(self, folder: Path) -> list[_Entry]:
        """The images of one folder's metadata file, each with all its captions, in first-row order."""
        path = self._metadata_path(folder)
        entries: dict[str, _Entry] = {}
        by_key: dict[str, str] = {}   # case-folded name without extension -> file name
        named: set[str] = set()        # every file a row names, kept or not
        for line, row in self._rows(path):
            where = f"{path} line {line}"
            name = row.get(FILE_COLUMN)
            if not isinstance(name, str) or not name.strip():
                self._bad("no file_name", f"{where}: no {FILE_COLUMN}")
                continue
            if _has_surrogates(name):
                self._bad("not UTF-8", f"{where}: not UTF-8 text; save the file as UTF-8")
                continue
            norm = self._normalise_name(name)
            if norm is None:
                self._bad("outside the folder", f"{where}: {FILE_COLUMN} {name!r} is not a path inside {folder}")
                continue
            named.add(norm)
            if _has_surrogates(row):  # bytes that are not UTF-8 (see _rows)
                self._bad("not UTF-8", f"{where}: not UTF-8 text; save the file as UTF-8")
                continue
            value = row.get(self.caption_column)
            if isinstance(value, list) and not all(isinstance(v, str) for v in value) or \
                    value is not None and not isinstance(value, (str, list)):
                self._bad("caption not text", f"{where}: the caption {value!r} is not text or a list of texts")
                continue
            captions = self._captions_of(value)
            if not captions:
                self._bad("no caption", f"{where}: image {norm!r} has no caption in column {self.caption_column!r}")
                continue
            label = None
            if self.class_column:
                raw = row.get(self.class_column)
                if raw is None or (isinstance(raw, str) and not raw.strip()) or isinstance(raw, (list, dict)):
                    self._bad("no class", f"{where}: image {norm!r} has no class in column {self.class_column!r}")
                    continue
                label = str(raw).strip()
            entry = entries.get(norm)
            if entry is None:
                key = posixpath.splitext(norm)[0].casefold()
                other = by_key.get(key)
                if other is not None:
                    self._bad("duplicate file name",
                              f"{where}: duplicate file name {norm!r}: {other!r} (line {entries[other].line}) "
                              "differs only in case or extension; rename one of them")
                    continue
                if posixpath.splitext(norm)[1].lower() not in IMAGE_EXTENSIONS:
                    self._bad("not an image", f"{where}: {norm!r} is not an image file "
                                              f"(extensions read: {' '.join(IMAGE_EXTENSIONS)})")
                    continue
                if not (folder / norm).is_file():
                    self._bad("missing image", f"{where}: image {norm!r} does not exist in {folder}")
                    continue
                entries[norm] = entry = _Entry(norm, line, label=label)
                by_key[key] = norm
            elif label != entry.label:
                self._bad("conflicting class", f"{where}: image {norm!r} has class {label!r} here but "
                                               f"{entry.label!r} on line {entry.line}")
                continue
            entry.captions.extend(captions)
        self._check_unlisted(folder, path, named)
        return list(entries.values())

    def _check_unlisted(self, folder: Path, metadata: Path, listed: set[str]) -> None:
        """Image files in ``folder`` that no row names: images without a caption."""
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if f.startswith(".") or os.path.splitext(f)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                rel = Path(dirpath, f).relative_to(folder).as_posix()
                if rel not in listed:
                    self._bad("image without a caption",
                              f"{folder / rel}: no row of {metadata} names this image, so it has no caption")

    # ------------------------------------------------------------------ splits and records
    def _split(self, entries: list[_Entry]) -> dict[str, list[_Entry]]:
        """Seeded split of one folder's images (or classes) into train and test."""
        if self.split_by == "class":
            labels = sorted({e.label for e in entries})
            if len(labels) < 2:
                raise DataError(f"{self.root}: split_by=class needs at least 2 classes, found {len(labels)}")
            random.Random(self.split_seed).shuffle(labels)
            n_test = min(len(labels) - 1, max(1, round(self.test_fraction * len(labels))))
            test_labels = set(labels[:n_test])
            return {"train": [e for e in entries if e.label not in test_labels],
                    "test": [e for e in entries if e.label in test_labels]}
        if len(entries) < 2:
            raise DataError(f"{self.root}: a train/test split needs at least 2 captioned images, found {len(entries)}")
        order = sorted(range(len(entries)), key=lambda i: entries[i].file_name)
        random.Random(self.split_seed).shuffle(order)
        n_test = min(len(entries) - 1, max(1, round(self.test_fraction * len(entries))))
        test = set(order[:n_test])
        return {"train": [e for i, e in enumerate(entries) if i not in test],
                "test": [e for i, e in enumerate(entries) if i in test]}

    def _read_splits(self) -> dict[str, list[Record]]:
        if self._splits is not None:
            return self._splits
        if "all" in self.folders:
            folder = self.folders["all"]
            prefix = "" if folder == self.root else f"{folder.name}/"
            split_entries = self._split(self._read_folder(folder))
            located = {s: [(folder, prefix, e) for e in split_entries[s]] for s in SPLITS}
        else:
            located = {s: [(self.folders[s], f"{s}/", e) for e in self._read_folder(self.folders[s])] for s in SPLITS}
        labels = sorted({e.label for s in SPLITS for _, _, e in located[s] if e.label is not None})
        label_ids = {label: i for i, label in enumerate(labels)}
        splits: dict[str, list[Record]] = {}
        next_id = 0
        for s in SPLITS:
            records = []
            for folder, prefix, e in located[s]:
                captions = e.captions[:self.captions_per_image] if self.captions_per_image else e.captions
                if e.label is not None:
                    class_id = label_ids[e.label]
                else:  # every image its own class (as COCO): mismatched captions come from other images
                    class_id = next_id
                    next_id += 1
                records.append(Record(key=prefix + posixpath.splitext(e.file_name)[0], image_path=folder / e.file_name,
                                      captions=captions, class_id=class_id))
            if not records:
                raise DataError(f"the {s} split of {self.root} has no captioned image"
                                + (f" ({self._skip_summary()})" if self.skipped else ""))
            splits[s] = records
        if self.skipped:
            log.warning("%s: %s (first: %s)", self.root, self._skip_summary(), self._first_skip)
        self._splits = splits
        return splits

    def _skip_summary(self) -> str:
        return "skipped " + ", ".join(f"{n} x {kind}" for kind, n in sorted(self.skipped.items()))

    def _read_records(self, split: str) -> list[Record]:
        records = self._read_splits()[split]
        if split == "train":
            return records
        # test captions are encoded with the training vocabulary: drop those with no known word
        vocab = self.vocabulary()
        kept, dropped_captions, dropped_images = [], 0, 0
        for r in records:
            captions = [c for c in r.captions if any(t in vocab for t in tokenize(c))]
            dropped_captions += len(r.captions) - len(captions)
            if not captions:
                dropped_images += 1
                continue
            kept.append(Record(key=r.key, image_path=r.image_path, captions=captions, class_id=r.class_id))
        if dropped_captions:
            log.warning("%s: %d test captions (%d images) have no word of the training captions; left out",
                        self.root, dropped_captions, dropped_images)
        if not kept:
            raise DataError(f"no test caption of {self.root} has a word of the training captions")
        return kept

    def vocabulary(self) -> Vocabulary:
        """The vocabulary of the training captions (AttnGAN's ``build_dictionary``, count threshold 0).

        It is not cached in the image folder (which may be read-only); the training tools save it with
        the run (``vocab.json`` and the checkpoints), as for every data set.
        """
        if self._vocab is None:
            captions = [tokenize(c) for r in self.records("train") for c in r.captions]
            self._vocab = Vocabulary.build(captions, min_count=0, unk=self.unknown == "unk")
            log.info("built vocabulary (%d tokens) from %d training captions", len(self._vocab), len(captions))
        return self._vocab
