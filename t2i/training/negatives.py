"""Colour-swapped hard negatives for DAMSM training (``model.hard_negatives``).

Each caption's copies with one colour word replaced by another colour are negatives of its own image only
(:class:`t2i.losses.damsm.CaptionNegatives`): NegCLIP's compositional negatives (Yuksekgonul et al. 2023).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from t2i.data.attributes import COLOUR_WORDS
from t2i.structures import CaptionBatch

_COLOUR_RE = re.compile(r"\b(" + "|".join(sorted(COLOUR_WORDS, key=len, reverse=True)) + r")\b", re.IGNORECASE)


def colour_token_ids(vocab: Any) -> dict[int, str]:
    """Token id -> palette colour of every colour word in ``vocab`` (``gray`` and ``grey`` are one colour)."""
    stoi = getattr(vocab, "stoi", {}) or {}
    return {stoi[w]: c for w, c in COLOUR_WORDS.items() if w in stoi}


def colour_swapped_captions(captions: CaptionBatch, colour_ids: dict[int, str], k: int,
                            generator: torch.Generator) -> tuple[CaptionBatch, Tensor]:
    """``k`` copies of every caption, each with one colour word replaced by a different colour.

    The position (one of the caption's colour words) and the new colour are drawn from ``generator``. Token
    ids and the raw text are changed alike, so tokenising encoders (BERT) read the same negative; a caption
    without a colour word (or whose text does not show the same colour words) gives invalid copies.

    Returns:
        negatives: a :class:`CaptionBatch` of ``B * k`` captions, caption ``i``'s copies at ``i*k .. i*k+k-1``
            (lengths unchanged, so a length-sorted batch stays sorted).
        valid: ``[B, k]`` True where a colour word was swapped.
    """
    if k < 1:
        raise ValueError(f"hard negatives per caption must be >= 1, got {k}")
    ids = captions.ids.cpu()
    b = ids.shape[0]
    colours = sorted(set(colour_ids.values()))
    id_of = {c: min(i for i, name in colour_ids.items() if name == c) for c in colours}
    out = ids.repeat_interleave(k, dim=0).clone()
    texts = [t for t in captions.texts for _ in range(k)] if captions.texts else []
    valid = torch.zeros(b, k, dtype=torch.bool)
    for i in range(b):
        length = int(captions.lengths[i])
        where = [t for t in range(length) if int(ids[i, t]) in colour_ids]
        matches = list(_COLOUR_RE.finditer(captions.texts[i])) if captions.texts else []
        text_ok = not captions.texts or len(matches) == len(where)
        if not where or len(colours) < 2:
            continue
        for j in range(k):
            pick = int(torch.randint(len(where), (1,), generator=generator))
            old = colour_ids[int(ids[i, where[pick]])]
            others = [c for c in colours if c != old]
            new = others[int(torch.randint(len(others), (1,), generator=generator))]
            out[i * k + j, where[pick]] = id_of[new]
            if captions.texts:
                if not text_ok:
                    continue
                m = matches[pick]
                texts[i * k + j] = captions.texts[i][:m.start()] + new + captions.texts[i][m.end():]
            valid[i, j] = True
    lengths = captions.lengths.cpu().repeat_interleave(k)
    negatives = CaptionBatch(out.to(captions.ids.device), lengths.to(captions.lengths.device), texts)
    return negatives, valid.to(captions.ids.device)
