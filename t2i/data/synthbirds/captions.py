"""CUB-like captions of a synthetic bird (naming only what is drawn), and parsing them back."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from t2i.data.attributes import COLOUR_WORDS, PART_WORDS
from t2i.data.synthbirds.species import CAPTION_PARTS, Bird
from t2i.errors import DataError

# noun forms per part: (words, plural)
_NOUNS: dict[str, list[tuple[str, bool]]] = {
    "crown": [("crown", False)],
    "head": [("head", False)],
    "wing": [("wings", True), ("wings", True), ("wing", False)],
    "belly": [("belly", False), ("belly", False), ("abdomen", False)],
    "breast": [("breast", False), ("breast", False), ("chest", False)],
    "tail": [("tail", False), ("tail feathers", True)],
    "beak": [("beak", False), ("bill", False)],
    "body": [("body", False)],
}
_ADJECTIVE = {"crown": "crowned", "wing": "winged", "belly": "bellied", "breast": "breasted",
              "tail": "tailed", "head": "headed", "beak": "billed"}
SIZE_WORDS: dict[str, str] = {"small": "small", "little": "small", "large": "large", "big": "large"}
BEAK_LENGTH_WORDS: dict[str, str] = {"short": "short", "stubby": "short", "long": "long"}
MAX_CAPTION_WORDS = 18
"""Longest caption in tokens: AttnGAN's birds ``TEXT.WORDS_NUM``, so no caption is ever truncated."""
_PART_WEIGHTS = {"crown": 3.0, "wing": 3.0, "belly": 3.0, "breast": 2.5, "body": 2.5, "tail": 1.5,
                 "beak": 1.5, "head": 1.5}


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    last = " and " if len(items) == 2 or rng.random() < 0.7 else ", and "
    return ", ".join(items[:-1]) + last + items[-1]


class _CaptionMaker:
    """Sentences about 2-4 attributes of one bird, faithful to the picture by construction."""

    def __init__(self, bird: Bird, rng: np.random.Generator) -> None:
        self.bird, self.rng = bird, rng
        self.colours = bird.species.colours

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def colour(self, part: str) -> str:
        c = self.colours[part]
        return ("gray" if self.rng.random() < 0.3 else "grey") if c == "grey" else c

    def size_word(self) -> str:
        return self.pick(["small", "small", "little"] if self.bird.size == "small" else ["large", "large", "big"])

    def beak_len_word(self) -> str:
        return self.pick(["short", "short", "stubby"] if self.bird.species.beak_length == "short" else ["long"])

    def phrase(self, part: str, with_length: bool) -> str:
        """``"a red crown"``, ``"blue wings"``, ``"a short orange beak"`` (colour always right before the noun)."""
        noun, plural = self.pick(_NOUNS[part])
        words = f"{self.colour(part)} {noun}"
        if part == "beak" and with_length:
            words = f"{self.beak_len_word()} {words}"
        return words if plural else _article(words)

    def parts(self, k: int) -> list[str]:
        names = list(_PART_WEIGHTS)
        w = np.array([_PART_WEIGHTS[n] for n in names])
        idx = self.rng.choice(len(names), size=k, replace=False, p=w / w.sum())
        return [names[i] for i in idx]

    def caption(self) -> str:
        rng = self.rng
        if rng.random() < 0.12:
            return self.short()
        parts = self.parts(int(rng.choice([2, 3, 4], p=[0.4, 0.4, 0.2])))
        spare = 4 - len(parts)  # size and beak length count too: 2-4 attributes in all
        with_length = "beak" in parts and spare > 0 and rng.random() < 0.5
        spare -= with_length
        body_adjective = "body" in parts and rng.random() < 0.75
        listed = [p for p in parts if not (p == "body" and body_adjective)]
        phrases = [self.phrase(p, with_length) for p in listed]
        if spare > 0 and "beak" not in parts and rng.random() < 0.2:
            phrases.append(_article(f"{self.beak_len_word()} {self.pick(['beak', 'bill'])}"))
            spare -= 1
        size = f"{self.size_word()} " if spare > 0 and rng.random() < 0.4 else ""
        if not phrases:  # only the body colour was chosen
            bird = _article(f"{size}{self.colour('body')} bird")
            return self.pick([f"this is {bird}", bird])
        items = _join(phrases, rng)
        if body_adjective:
            body = self.colour("body")
            return self.pick([
                f"this is {_article(f'{size}{body} bird')} with {items}",
                f"{_article(f'{size}{body} bird')} with {items}",
                f"this {size}bird is {body} with {items}",
                f"this {size}bird is mostly {body} and has {items}",
                f"this {size}bird has {items} and is mostly {body}",
                f"a {size}bird that is mostly {body} with {items}",
                f"the {size}bird is mostly {body}, with {items}",
                f"this {size}bird has {items} and its body is {body}",
            ])
        return self.pick([
            f"this {size}bird has {items}",
            f"a {size}bird with {items}",
            f"this is a {size}bird with {items}",
            f"the {size}bird has {items}",
            f"this {size}bird has {items}" if len(phrases) < 3 else f"{items}",
            f"this particular {size}bird has {items}",
            f"a {size}bird that has {items}",
            f"this {size}bird features {items}",
            f"{items} on this {size}bird" if len(phrases) < 3 else f"this {size}bird has {items}",
        ])

    def short(self) -> str:
        """Short forms: ``"green crown bird"``, ``"a small red breasted bird"``, ``"red bird with a black crown"``."""
        part = self.pick([p for p in CAPTION_PARTS if p != "body"])
        c = self.colour(part)
        form = int(self.rng.integers(5))
        if form == 0:
            noun = {"wing": "wing", "tail": "tail", "belly": "belly", "breast": "breast"}.get(part, _NOUNS[part][0][0])
            return f"{c} {noun} bird"
        if form == 1:
            return f"a {self.size_word()} {c} {_ADJECTIVE[part]} bird"
        if form == 2:
            return f"{c} {_ADJECTIVE[part]} bird"
        if form == 3:
            return f"{self.colour('body')} bird with {self.phrase(part, False)}"
        return f"{self.size_word()} bird with {self.phrase(part, self.rng.random() < 0.5)}"


def make_captions(bird: Bird, rng: np.random.Generator, count: int = 10) -> list[str]:
    """``count`` different captions of one bird (CUB-like, lower case)."""
    maker = _CaptionMaker(bird, rng)
    captions: list[str] = []
    for _ in range(50 * count):
        text = maker.caption()
        if text not in captions and len(re.findall(r"[a-z]+", text)) <= MAX_CAPTION_WORDS:
            captions.append(text)
            if len(captions) == count:
                return captions
    raise DataError(f"could not make {count} different captions; use captions_per_image <= 10")


def caption_attributes(caption: str) -> dict[str, Any]:
    """Parse a synthetic caption back into what it claims.

    Every colour word binds to the part noun (or ``-ed`` adjective) right after it, or to ``bird`` /
    a predicate ("is yellow", "mostly yellow") meaning the body. Used by the tests to check captions
    against labels and usable by metrics on real captions of the same style.

    Args:
        caption: one caption.

    Returns:
        ``{"colours": [(part, colour), ...], "size": str | None, "beak_length": str | None}``.

    Raises:
        ValueError: a colour word bound to nothing.
    """
    tokens = re.findall(r"[a-z]+", caption.lower())
    pairs: list[tuple[str, str]] = []
    size = beak_length = None
    for i, tok in enumerate(tokens):
        if tok in COLOUR_WORDS:
            colour = COLOUR_WORDS[tok]
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            prev = tokens[i - 1] if i > 0 else ""
            if nxt in PART_WORDS:
                pairs.append((PART_WORDS[nxt], colour))
            elif nxt == "bird" or prev in ("is", "mostly"):
                pairs.append(("body", colour))
            else:
                raise ValueError(f"colour {tok!r} binds to no part in {caption!r}")
        elif tok in SIZE_WORDS and i + 1 < len(tokens) and tokens[i + 1] in ("bird",) + tuple(COLOUR_WORDS):
            size = SIZE_WORDS[tok]
        elif tok in BEAK_LENGTH_WORDS:
            beak_length = BEAK_LENGTH_WORDS[tok]
        elif tok in SIZE_WORDS:
            size = SIZE_WORDS[tok]
    return {"colours": pairs, "size": size, "beak_length": beak_length}
