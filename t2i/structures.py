"""Tensor contracts at module boundaries.

One shape convention for the whole package (STYLE.md 8):

* words        ``[B, T, D]``  per-word features
* sentence     ``[B, D]``     sentence vector
* pad_mask     ``[B, T]``     bool, True at padding positions
* images       ``[B, C, H, W]`` float in [-1, 1]
* captions     ``[B, T]``     long token ids, 0 (``<end>``) is padding, as in AttnGAN
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from torch import Tensor


def _map_tensors(obj, fn):
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_tensors(x, fn) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_map_tensors(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


class _TensorStruct:
    """Mixin: ``.to(device)`` moves every tensor field (also inside lists)."""

    def to(self, *args, **kwargs):
        return replace(self, **{f.name: _map_tensors(getattr(self, f.name), lambda t: t.to(*args, **kwargs))
                                for f in fields(self)})


@dataclass
class TextEmbedding(_TensorStruct):
    """Output of every text encoder (BiLSTM, GRU, BERT).

    Attributes:
        words: ``[B, T, D]`` word features (zero at padding is not guaranteed; use ``pad_mask``).
        sentence: ``[B, D]`` sentence vector.
        pad_mask: ``[B, T]`` bool, True where the position is padding.
    """

    words: Tensor
    sentence: Tensor
    pad_mask: Tensor

    def __post_init__(self):
        b, t, _ = self.words.shape
        if self.sentence.shape[0] != b or self.pad_mask.shape != (b, t):
            raise ValueError(
                f"TextEmbedding shapes disagree: words {tuple(self.words.shape)}, "
                f"sentence {tuple(self.sentence.shape)}, pad_mask {tuple(self.pad_mask.shape)}")


@dataclass
class Record:
    """One image of a data set with all its captions, as read from disk.

    Attributes:
        key: the data set's own name for the image, e.g. ``001.Black_footed_Albatross/Black_Footed_Albatross_0046_18``.
        image_path: path of the image file.
        captions: the raw caption strings (CUB: 10, COCO: 5).
        class_id: integer class (CUB species; for COCO the image index, so every image is its own class).
        bbox: ``(x, y, w, h)`` in pixels, or None.
        attributes: per-part attribute labels ``{part: value}`` (synthetic birds, CUB), or None.
    """

    key: str
    image_path: Path
    captions: list[str]
    class_id: int
    bbox: tuple[float, float, float, float] | None = None
    attributes: dict[str, str] | None = None


@dataclass
class CaptionBatch(_TensorStruct):
    """Captions as every text encoder reads them (``text_encoder.encode_captions``): the one caption path.

    A vocabulary-based encoder (BiLSTM, GRU) reads ``ids``/``lengths``; a tokenising one (BERT, MiniLM) reads
    ``texts``, the raw caption strings, which are the same at training, generation and evaluation.

    Attributes:
        ids: ``[B, T]`` token ids, zero-padded.
        lengths: ``[B]`` number of ids per caption (>= 1).
        texts: the ``B`` raw caption strings.
        words: the vocabulary words kept per caption (for labelling attention maps); empty when unknown.
        unknown: the words dropped per caption as not in the vocabulary.
    """

    ids: Tensor
    lengths: Tensor
    texts: list[str]
    words: list[list[str]] = field(default_factory=list)
    unknown: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.ids.shape[0]


@dataclass
class Batch(_TensorStruct):
    """A collated training or evaluation batch.

    Attributes:
        images: one tensor per stage, ``[B, 3, H_s, W_s]`` in [-1, 1], increasing resolution.
        captions: ``[B, T]`` token ids sorted by decreasing length (for packed LSTMs).
        lengths: ``[B]`` caption lengths (>= 1).
        class_ids: ``[B]`` class ids.
        wrong_captions / wrong_lengths: captions of images of *other* classes, for the matching-aware loss.
        keys: record keys, same order as the tensors.
        caption_texts: the caption strings that were tokenised.
        caption_ids: ``[B]`` which of the record's captions was used.
        wrong_texts: the mismatched caption strings (for encoders that tokenise text themselves).
        recolourings: per example, the palette swap drawn for it (``{colour: new colour}``, ``data.recolour``)
            or None; empty when the data set swaps nothing.
    """

    images: list[Tensor]
    captions: Tensor
    lengths: Tensor
    class_ids: Tensor
    wrong_captions: Tensor | None = None
    wrong_lengths: Tensor | None = None
    keys: list[str] = field(default_factory=list)
    caption_texts: list[str] = field(default_factory=list)
    caption_ids: Tensor | None = None
    wrong_texts: list[str] = field(default_factory=list)
    recolourings: list[dict[str, str] | None] = field(default_factory=list)

    @property
    def pad_mask(self) -> Tensor:
        """``[B, T]`` True at padding."""
        steps = torch.arange(self.captions.shape[1], device=self.captions.device)
        return steps[None, :] >= self.lengths[:, None]

    def caption_batch(self) -> CaptionBatch:
        """The batch's captions for ``text_encoder.encode_captions``."""
        return CaptionBatch(self.captions, self.lengths, list(self.caption_texts))

    def wrong_caption_batch(self) -> CaptionBatch | None:
        """The mismatched captions for ``text_encoder.encode_captions`` (None without them)."""
        if self.wrong_captions is None:
            return None
        return CaptionBatch(self.wrong_captions, self.wrong_lengths, list(self.wrong_texts))

    def __len__(self) -> int:
        return self.captions.shape[0]


@dataclass
class GeneratorOutput(_TensorStruct):
    """What a multi-stage generator returns.

    Attributes:
        images: one image per stage, ``[B, 3, H_s, W_s]`` in [-1, 1].
        attn_maps: one entry per attention stage, ``[B, T, h, w]`` word attention (sums to 1 over T).
        mu / logvar: ``[B, C]`` conditioning-augmentation statistics (None without CA).
        canvases: for DRAW stages, the starting canvas and the canvas after every write,
            ``[B, steps + 1, 3, H, W]`` in [-1, 1]; else None.
    """

    images: list[Tensor]
    attn_maps: list[Tensor] = field(default_factory=list)
    mu: Tensor | None = None
    logvar: Tensor | None = None
    canvases: Tensor | None = None
