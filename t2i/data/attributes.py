"""The project's attribute vocabulary: parts, colours, CUB-style attribute names, caption parsing.

One home for the schema that the synthetic-bird renderer writes, the CUB reader's attributes are mapped onto,
and the attribute-accuracy metric and the R-precision ceiling read captions with. It depends on nothing but
the standard library, so a metric does not import a data set's renderer to know what "a green crown" is.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

PARTS: tuple[str, ...] = ("body", "head", "crown", "wing", "tail", "beak", "eye", "belly", "breast", "legs")
"""Every drawn part; each has one colour per species."""


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (212, 28, 36),
    "orange": (246, 132, 18),
    "yellow": (250, 216, 30),
    "green": (42, 158, 52),
    "blue": (34, 84, 214),
    "purple": (128, 44, 168),
    "brown": (118, 72, 34),
    "black": (26, 26, 28),
    "white": (246, 246, 244),
    "grey": (134, 134, 138),
}
"""The palette: colour name -> sRGB, each unmistakably that colour."""

COLOUR_WORDS: dict[str, str] = {**{c: c for c in COLOURS}, "gray": "grey"}
"""Caption word -> palette colour (captions use both spellings of grey, as CUB's do)."""

ATTRIBUTE_PART_NAMES: dict[str, str] = {
    "body": "primary",
    "head": "head",
    "crown": "crown",
    "wing": "wing",
    "tail": "upper_tail",
    "beak": "bill",
    "eye": "eye",
    "belly": "belly",
    "breast": "breast",
    "legs": "leg",
}
"""Our part -> the part word of CUB's ``has_<part>_color::<colour>`` attribute names."""

BEAK_LENGTHS: tuple[str, ...] = ("short", "long")
SIZES: tuple[str, ...] = ("small", "large")
BEAK_LENGTH_ATTRIBUTES: dict[str, str] = {
    "short": "has_bill_length::shorter_than_head",
    "long": "has_bill_length::about_the_same_as_head",
}
SIZE_ATTRIBUTES: dict[str, str] = {"small": "has_size::small_(5_-_9_in)", "large": "has_size::large_(16_-_32_in)"}
CERTAINTIES: tuple[str, ...] = ("not visible", "guessing", "probably", "definitely")
CERTAINTY_DEFINITELY = 4


def colour_attribute(part: str, colour: str) -> str:
    """CUB-style attribute name of a part colour, e.g. ``("beak", "orange") -> "has_bill_color::orange"``."""
    return f"has_{ATTRIBUTE_PART_NAMES[part]}_color::{colour}"


def attribute_names() -> list[str]:
    """All attribute names in id order (attribute id = list index + 1), as in ``attributes.txt``."""
    names = [colour_attribute(part, colour) for part in PARTS for colour in COLOURS]
    names += [BEAK_LENGTH_ATTRIBUTES[b] for b in BEAK_LENGTHS]
    names += [SIZE_ATTRIBUTES[s] for s in SIZES]
    return names


def parse_attribute_name(name: str) -> tuple[str, str] | None:
    """Inverse of :func:`colour_attribute`: ``"has_bill_color::orange" -> ("beak", "orange")``.

    Returns None for a name that is not a part colour of this scheme (bill length, size, or a real CUB
    attribute without a synthetic counterpart).
    """
    match = re.fullmatch(r"has_(\w+?)_color::(\w+)", name)
    if match is None:
        return None
    by_cub = {v: k for k, v in ATTRIBUTE_PART_NAMES.items()}
    part, colour = by_cub.get(match.group(1)), match.group(2)
    if part is None or colour not in COLOURS:
        return None
    return part, colour


PART_WORDS: dict[str, str] = {
    "crown": "crown", "head": "head", "wing": "wing", "wings": "wing", "belly": "belly",
    "abdomen": "belly", "breast": "breast", "chest": "breast", "tail": "tail", "beak": "beak",
    "bill": "beak", "body": "body", "crowned": "crown", "winged": "wing", "bellied": "belly",
    "breasted": "breast", "tailed": "tail", "headed": "head", "billed": "beak", "beaked": "beak",
}
"""Caption word -> part (nouns and the ``-ed`` adjectives of "a red crowned bird")."""


Schema = Mapping[str, Sequence[str]]


def _colour_part(part: str) -> str | None:
    if not part.endswith("_color"):
        return None
    name = part.removesuffix("_color")
    by_cub = {v: k for k, v in ATTRIBUTE_PART_NAMES.items()}
    return by_cub.get(name, name)


def colour_schema(schema: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The colour parts of a data set's attribute schema, under the caption parser's part names.

    CUB names ``has_<part>_color::<colour>`` (``primary_color``, ``bill_color``, ``upper_tail_color``...); captions
    name ``body``, ``beak``, ``tail`` (:data:`ATTRIBUTE_PART_NAMES` maps them; other CUB parts
    keep their name without ``_color``). Non-colour attributes (bill length, size, shapes, patterns) are left out;
    parts already in caption terms (``crown``) pass unchanged.
    """
    out: dict[str, list[str]] = {}
    for part, values in schema.items():
        name = _colour_part(part) if part.endswith("_color") else (part if part in PARTS else None)
        if name is not None and len(values) >= 2:
            out[name] = list(values)
    return out


def colour_attributes(attributes: Mapping[str, str] | None, schema: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """A record's attributes renamed as :func:`colour_schema` and restricted to it."""
    out = {}
    for part, value in (attributes or {}).items():
        name = _colour_part(part) if part.endswith("_color") else part
        if name in schema and value in schema[name]:
            out[name] = value
    return out


def parse_caption_attributes(caption: str, schema: Schema, part_words: Mapping[str, str] | None = None,
                             value_words: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``{part: value}`` a caption names, from ``"<value> <part word>"`` mentions.

    ``"this bird has a green crown, black wings and a white belly"`` -> ``{"crown": "green", "wing": "black",
    "belly": "white"}``. Part words are the part names, their synonyms and ``-ed`` adjectives (``wings``,
    ``chest``, ``bill``, ``crowned``...; default: the synthetic birds' ``PART_WORDS``); value words map to values
    (default: ``COLOUR_WORDS``, so ``gray`` is ``grey``). A value right before ``bird``, or after ``is`` /
    ``mostly``, names the ``body``. The first mention of a part wins; pairs outside ``schema`` are ignored.
    """
    part_words = {**{p: p for p in schema}, **(PART_WORDS if part_words is None else part_words)}
    value_words = {**{v: v for values in schema.values() for v in values},
                   **(COLOUR_WORDS if value_words is None else value_words)}
    tokens = re.findall(r"[a-z]+", caption.lower())
    named: dict[str, str] = {}
    for i, token in enumerate(tokens):
        value = value_words.get(token)
        if value is None:
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        preceding = tokens[i - 1] if i > 0 else ""
        part = part_words.get(following)
        if part is None and (following == "bird" or preceding in ("is", "mostly")):
            part = "body"
        if part in schema and value in schema[part] and part not in named:
            named[part] = value
    return named
