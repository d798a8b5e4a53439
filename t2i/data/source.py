"""The base class of every caption data source (CUB, COCO, image folders): records per split, the vocabulary.

A reader subclasses :class:`SourceBase`, implements ``_read_records(split) -> list[Record]`` and sets ``name``,
``root`` and ``captions_per_image``; the vocabulary (built from its captions, or AttnGAN's, cached as
``<root>/vocab.json``) and the split handling come with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from t2i.data.text import Vocabulary, tokenize
from t2i.structures import Record

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
VOCAB_FILE = "vocab.json"
ATTNGAN_CAPTIONS = "captions.pickle"


class SourceBase:
    """What every data source offers: records per split, a cached vocabulary, attribute schema.

    Subclasses implement :meth:`_read_records` and set ``name``, ``root``, ``captions_per_image``.
    """

    name = "source"
    root: Path
    captions_per_image: int

    def __init__(self) -> None:
        self._records: dict[str, list[Record]] = {}
        self._vocab: Vocabulary | None = None

    def records(self, split: str) -> list[Record]:
        """All records of ``split`` (``train`` or ``test``), read once and cached."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        if split not in self._records:
            self._records[split] = self._read_records(split)
            log.info("%s: %d %s records from %s", self.name, len(self._records[split]), split, self.root)
        return self._records[split]

    def _read_records(self, split: str) -> list[Record]:  # pragma: no cover - abstract
        raise NotImplementedError

    def vocabulary(self) -> Vocabulary:
        """The vocabulary of train + test captions (AttnGAN ``build_dictionary``), cached on disk.

        Order of preference: ``<root>/vocab.json``; AttnGAN's ``<root>/captions.pickle`` (so that
        released AttnGAN/DAMSM weights see the word ids they were trained with); else built from
        the captions and saved as ``<root>/vocab.json``.
        """
        if self._vocab is not None:
            return self._vocab
        cache = self.root / VOCAB_FILE
        fingerprint = self._fingerprint()
        if cache.is_file():
            try:
                stored = json.loads(cache.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError, AttributeError):
                stored = None
            if stored == fingerprint:
                self._vocab = Vocabulary.load(cache)
                log.info("loaded vocabulary (%d tokens) from %s", len(self._vocab), cache)
                return self._vocab
            log.info("%s was made from other data files; rebuilding it", cache)
        attngan = self.root / ATTNGAN_CAPTIONS
        if attngan.is_file():
            vocab = Vocabulary.from_attngan_captions_pickle(attngan)
            log.info("vocabulary (%d tokens) from AttnGAN's %s", len(vocab), attngan)
        else:
            captions = [tokenize(c) for split in SPLITS for r in self.records(split) for c in r.captions]
            vocab = Vocabulary.build(captions, min_count=0)
            log.info("built vocabulary (%d tokens) from %d captions", len(vocab), len(captions))
        try:
            vocab.save(cache, extra={"fingerprint": fingerprint})
        except OSError as exc:
            log.warning("could not cache the vocabulary at %s: %s", cache, exc)
        self._vocab = vocab
        return vocab

    def attribute_schema(self) -> dict[str, list[str]] | None:
        """``{part: [values]}`` of the per-image attributes, or None when the data set has none."""
        return None

    def _metadata_files(self) -> list[Path]:
        """Files whose change invalidates the cached vocabulary (split lists, render marker, ...)."""
        return [self.root / s / f"filenames.{ext}" for s in SPLITS for ext in ("pickle", "json")] + [
            self.root / ATTNGAN_CAPTIONS, self.root / "synthbirds.json"]

    def _fingerprint(self) -> str:
        """A digest of the settings and of the size and mtime of :meth:`_metadata_files`."""
        h = hashlib.sha1(f"{type(self).__name__}:{self.captions_per_image}".encode())
        for p in self._metadata_files():
            st = p.stat() if p.is_file() else None
            h.update(f"|{p.name}:{st.st_size if st else -1}:{st.st_mtime_ns if st else -1}".encode())
        return h.hexdigest()
