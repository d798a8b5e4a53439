"""Tokenizer and vocabulary, matching AttnGAN's ``datasets.py`` (``load_captions``, ``build_dictionary``).

AttnGAN (taoxugit/AttnGAN ``code/datasets.py``) reads a caption by replacing the two-character
sequence ``"\\ufffd\\ufffd"`` with a space, lower-casing, splitting with
``nltk.tokenize.RegexpTokenizer(r'\\w+')`` (Unicode word characters; punctuation is dropped), then
removing non-ASCII characters from every token and dropping tokens that become empty. The
vocabulary is built from train + test captions with a count threshold of 0; index 0 is ``<end>``,
which doubles as padding. Unknown words are silently dropped when a caption is encoded.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import torch
from nltk.tokenize import RegexpTokenizer
from torch import Tensor

from t2i.errors import CaptionError, DataError
from t2i.io import atomic_write_text
from t2i.structures import CaptionBatch

__all__ = ["tokenize", "is_usable_caption", "Vocabulary", "pad_ids", "END_TOKEN", "UNK_TOKEN", "UNKNOWN_POLICIES"]

log = logging.getLogger(__name__)

END_TOKEN = "<end>"
UNK_TOKEN = "<unk>"
UNKNOWN_POLICIES = ("drop", "unk")
_FORMAT = "t2i-vocab"
_TOKENIZER = RegexpTokenizer(r"\w+")


def _raw_tokens(text: str) -> list[str]:
    # AttnGAN: cap.replace("\ufffd\ufffd", " "); RegexpTokenizer(r'\w+').tokenize(cap.lower())
    return _TOKENIZER.tokenize(text.replace("\ufffd\ufffd", " ").lower())


def tokenize(text: str) -> list[str]:
    """Split a caption into lower-case ASCII word tokens exactly as AttnGAN does.

    ``"This bird's crown is GREEN!!"`` -> ``['this', 'bird', 's', 'crown', 'is', 'green']``;
    ``"café-colored"`` -> ``['caf', 'colored']`` (non-ASCII characters are removed from tokens, and
    tokens left empty are dropped).
    """
    tokens = []
    for tok in _raw_tokens(text):
        tok = tok.encode("ascii", "ignore").decode("ascii")
        if tok:
            tokens.append(tok)
    return tokens


def is_usable_caption(line: str) -> bool:
    """Whether AttnGAN's ``load_captions`` counts this line as a caption.

    It skips empty lines and lines in which ``\\w+`` finds no token at all (e.g. only punctuation).
    A line whose tokens are all non-ASCII still counts (it yields an empty token list).
    """
    return len(line) > 0 and len(_raw_tokens(line)) > 0


class Vocabulary:
    """Word <-> index mapping with index 0 = ``<end>`` (padding), as AttnGAN's ``ixtoword[0]``.

    Args:
        words: the words in index order, *without* ``<end>`` (and ``<unk>``), which are added here.
        counts: optional word counts (from :meth:`build`), for statistics.
        unk: add an ``<unk>`` token at index 1 (for the ``unk`` unknown-word policy).
    """

    def __init__(self, words: Iterable[str], counts: dict[str, int] | None = None, unk: bool = False):
        specials = [END_TOKEN] + ([UNK_TOKEN] if unk else [])
        self.itos: list[str] = list(specials)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(specials)}
        for w in words:
            if w in self.stoi:
                if w in specials:
                    continue
                raise ValueError(f"duplicate word {w!r} in vocabulary")
            self.stoi[w] = len(self.itos)
            self.itos.append(w)
        self.counts: Counter = Counter(counts or {})
        self.has_unk = unk

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 0, unk: bool = False) -> "Vocabulary":
        """Build from token lists, words in order of first appearance (AttnGAN ``build_dictionary``).

        Args:
            captions: token lists, e.g. train captions followed by test captions as AttnGAN does.
            min_count: keep words seen at least this many times (AttnGAN: 0, i.e. every word).
            unk: add ``<unk>``.
        """
        counts: Counter = Counter()
        for tokens in captions:
            counts.update(tokens)
        words = [w for w in counts if counts[w] >= min_count and w not in (END_TOKEN, UNK_TOKEN)]
        return cls(words, counts=dict(counts), unk=unk)

    @classmethod
    def from_attngan_captions_pickle(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read AttnGAN's ``captions.pickle`` (``[train_captions, test_captions, ixtoword, wordtoix]``).

        The pickle is read with :func:`t2i.data.safe_pickle.safe_load` (no code runs). Word counts
        are recomputed from the id lists it stores, so the statistics match the released file.

        Raises:
            DataError: the file is not in that format, or ``ixtoword`` has a gap or a wrong ``<end>``.
        """
        from t2i.data.safe_pickle import safe_load

        path = Path(path)
        data = safe_load(path)
        if not isinstance(data, (list, tuple)) or len(data) < 4 or not isinstance(data[2], dict):
            raise DataError(f"{path} is not an AttnGAN captions.pickle "
                            "([train_captions, test_captions, ixtoword, wordtoix] expected)")
        ixtoword = {int(k): (v.decode("latin1") if isinstance(v, bytes) else str(v)) for k, v in data[2].items()}
        n = len(ixtoword)
        if sorted(ixtoword) != list(range(n)) or ixtoword.get(0) != END_TOKEN:
            raise DataError(f"{path}: ixtoword must map 0..{n - 1} with 0 -> '<end>'")
        id_counts: Counter = Counter()
        for caps in (data[0], data[1]):
            for ids in caps:
                id_counts.update(int(i) for i in ids)
        counts = {ixtoword[i]: c for i, c in id_counts.items() if i in ixtoword and i != 0}
        return cls([ixtoword[i] for i in range(1, n)], counts=counts)

    # ------------------------------------------------------------------ mapping
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens, unk={self.has_unk})"

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int | None:
        return self.stoi[UNK_TOKEN] if self.has_unk else None

    def encode(self, tokens: Sequence[str], unknown: str = "drop",
               unknown_words: list[str] | None = None) -> list[int]:
        """Map tokens to ids.

        Args:
            tokens: word tokens (see :func:`tokenize`).
            unknown: ``drop`` removes unknown words (AttnGAN); ``unk`` maps them to ``<unk>``.
            unknown_words: if given, the unknown tokens are appended to it (for reporting).

        Returns:
            token ids, never containing 0 (``<end>``).
        """
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown-word policy {unknown!r}; choose one of {UNKNOWN_POLICIES}")
        if unknown == "unk" and not self.has_unk:
            raise ValueError("unknown='unk' needs a vocabulary built with unk=True")
        ids = []
        for tok in tokens:
            idx = self.stoi.get(tok)
            if idx is None or idx == 0:
                if unknown_words is not None:
                    unknown_words.append(tok)
                if unknown == "unk":
                    ids.append(self.stoi[UNK_TOKEN])
                continue
            ids.append(idx)
        return ids

    def encode_text(self, text: str, unknown: str = "drop") -> list[int]:
        """Tokenize and encode a caption string.

        Raises:
            CaptionError: nothing of the caption is left (empty, or only unknown words).
        """
        unknown_words: list[str] = []
        ids = self.encode(tokenize(text), unknown=unknown, unknown_words=unknown_words)
        if not ids:
            detail = f"; unknown words: {', '.join(unknown_words[:10])}" if unknown_words else ""
            raise CaptionError(f"caption {text!r} has no word in the vocabulary{detail}; "
                               "use words from the training captions")
        if unknown_words:
            log.warning("caption %r: unknown words %s were %s", text, unknown_words,
                        "dropped" if unknown == "drop" else "mapped to <unk>")
        return ids

    def encode_captions(self, captions: Sequence[str] | str, words_num: int | None = None,
                        empty: str = "error") -> CaptionBatch:
        """Captions to a :class:`CaptionBatch` for ``text_encoder.encode_captions`` (generation, evaluation, demo).

        Tokenised as AttnGAN does; unknown words are dropped (with a warning) and at most ``words_num`` known
        words are kept. ``texts`` are the raw captions, what a tokenising encoder reads, as in training.

        Args:
            captions: caption strings.
            words_num: longest caption in words (AttnGAN ``TEXT.WORDS_NUM``); None: no limit.
            empty: ``error`` raises on a caption with no known word; ``end`` encodes it as one ``<end>``
                token (scoring many captions, where one such caption must not stop the run).

        Raises:
            CaptionError: (``empty="error"``) a caption that is empty or has no known word.
        """
        if isinstance(captions, str):
            captions = [captions]
        ids, kept_words, dropped, blank = [], [], [], 0
        for caption in captions:
            tokens = tokenize(caption)
            unknown: list[str] = []
            row = self.encode(tokens, unknown_words=unknown)
            kept = [t for t in tokens if t not in set(unknown)]
            if not row:
                if empty != "end":
                    if not tokens:
                        raise CaptionError(f"caption {caption!r} has no words; give a description such as "
                                           "'a bird with a green crown'")
                    common = ", ".join(w for w, _ in self.most_common(8) if w not in (END_TOKEN, UNK_TOKEN))
                    raise CaptionError(f"none of the words of {caption!r} is in the model's vocabulary; "
                                       f"try words like {common}")
                blank += 1
                row = [self.pad_id]
            elif unknown and empty != "end":
                log.warning("unknown words dropped from %r: %s", caption, ", ".join(unknown))
            if words_num is not None and len(row) > words_num:
                if empty != "end":
                    log.warning("caption %r has %d known words; keeping the first %d", caption, len(row), words_num)
                row, kept = row[:words_num], kept[:words_num]
            ids.append(row)
            kept_words.append(kept)
            dropped.append(unknown)
        if blank:
            log.warning("%d captions have no word in the vocabulary", blank)
        padded, lengths = pad_ids(ids)
        return CaptionBatch(padded, lengths, list(captions), kept_words, dropped)

    def decode(self, ids: Iterable[int], strip_end: bool = True) -> list[str]:
        """Ids back to words; ``<end>`` (padding) is removed when ``strip_end``."""
        words = []
        for i in ids:
            i = int(i)
            if strip_end and i == 0:
                continue
            words.append(self.itos[i])
        return words

    # ------------------------------------------------------------------ statistics
    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """The ``n`` most frequent words with their counts (from :meth:`build`)."""
        return self.counts.most_common(n)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """Plain dict for JSON files and checkpoints."""
        return {"format": _FORMAT, "version": 1, "unk": self.has_unk, "itos": list(self.itos),
                "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("itos"), list):
            raise DataError("not a t2i vocabulary (expected a dict with format 't2i-vocab' and 'itos')")
        itos = data["itos"]
        unk = bool(data.get("unk", False))
        specials = [END_TOKEN] + ([UNK_TOKEN] if unk else [])
        if itos[:len(specials)] != specials:
            raise DataError(f"vocabulary must start with {specials}, found {itos[:len(specials)]}")
        return cls(itos[len(specials):], counts=data.get("counts") or {}, unk=unk)

    def save(self, path: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write the vocabulary as JSON (atomically); ``extra`` keys are stored beside it."""
        text = json.dumps({**(extra or {}), **self.to_dict()}, ensure_ascii=True)
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`.

        Raises:
            DataError: missing or malformed file.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"vocabulary file {path} does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read vocabulary {path}: {exc}; delete it to rebuild") from None
        try:
            return cls.from_dict(data)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None


def pad_ids(rows: Sequence[Sequence[int] | Tensor]) -> tuple[Tensor, Tensor]:
    """``(ids [B, T], lengths [B])``: id sequences zero-padded (0 = ``<end>`` = padding) to the longest."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    out = torch.zeros(len(rows), int(lengths.max()) if len(rows) else 0, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out, lengths
