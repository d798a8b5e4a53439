"""Synthetic birds: the embedded default data set, rendered in exactly the CUB-200-2011 / AttnGAN layout.

A bird is drawn with PIL from ten parts (:data:`PARTS`), each painted with a named colour from a palette
of ten (:data:`COLOURS`). A species fixes a colour scheme and a beak length; each image varies size,
facing, position, tilt, pose of wing/tail/head, shading and background. Every image gets ten CUB-like
captions that only name what is drawn, and per-image attribute labels in CUB's attribute format, so
the same reader, vocabulary and attribute-accuracy metric serve real CUB and the synthetic birds.

On-disk layout written by :func:`render_dataset` (the formats of CUB-200-2011's README and of the
AttnGAN/StackGAN metadata: ``filenames.pickle`` / ``class_info.pickle`` protocol-2 lists)::

    <root>/CUB_200_2011/images.txt                 "<image_id> <NNN.Species>/<Species_NNNN>.jpg"
    <root>/CUB_200_2011/classes.txt                "<class_id> <NNN.Species>"
    <root>/CUB_200_2011/image_class_labels.txt     "<image_id> <class_id>"
    <root>/CUB_200_2011/bounding_boxes.txt         "<image_id> <x> <y> <width> <height>" (floats)
    <root>/CUB_200_2011/train_test_split.txt       "<image_id> <is_training_image>" (the species split)
    <root>/CUB_200_2011/images/<NNN.Species>/<Species_NNNN>.jpg
    <root>/CUB_200_2011/attributes/attributes.txt  "<attribute_id> has_<part>_color::<colour>" ...
    <root>/CUB_200_2011/attributes/certainties.txt "<certainty_id> <certainty_name>"
    <root>/CUB_200_2011/attributes/image_attribute_labels.txt
                                                   "<image_id> <attribute_id> <is_present> <certainty_id> <time>"
    <root>/CUB_200_2011/attributes/class_attribute_labels_continuous.txt   (per class, percent present)
    <root>/text/<NNN.Species>/<Species_NNNN>.txt   10 captions, one per line
    <root>/{train,test}/filenames.pickle           ["<NNN.Species>/<Species_NNNN>", ...], disjoint species
    <root>/{train,test}/class_info.pickle          [class_id (1-based int), ...] aligned with filenames
    <root>/synthbirds.json                         settings + format version; written last

Real CUB copies keep ``attributes.txt`` either at the data root or under ``CUB_200_2011/attributes/``;
the synthetic set always writes ``CUB_200_2011/attributes/attributes.txt`` (the CUB README's place).
Attribute names use CUB's spelling where CUB has the part (``has_bill_color``, ``has_primary_color``,
``has_upper_tail_color``, ``has_leg_color``; see :data:`ATTRIBUTE_PART_NAMES`), so an attribute
classifier keyed on attribute names works on both.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont

from t2i.errors import ConfigError, DataError
from t2i.io import atomic_write_text
from t2i.runtime import exit_with_parent

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MARKER = "synthbirds.json"
INCOMPLETE_MARKER = ".synthbirds_incomplete"
CUB_DIR = "CUB_200_2011"
JPEG_QUALITY = 95

# --------------------------------------------------------------------------------------------------
# Naming scheme: parts, colours, attributes
# --------------------------------------------------------------------------------------------------

PARTS: tuple[str, ...] = ("body", "head", "crown", "wing", "tail", "beak", "eye", "belly", "breast", "legs")
"""Every drawn part; each has one colour per species."""

CAPTION_PARTS: tuple[str, ...] = ("crown", "wing", "belly", "breast", "body", "tail", "beak", "head")
"""The parts captions may name (big enough to read at 64 px; eyes and legs are not named)."""

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


# --------------------------------------------------------------------------------------------------
# Species and per-image bird specifications
# --------------------------------------------------------------------------------------------------

BEAK_PALETTE = ("black", "orange", "yellow", "grey", "brown", "red")
LEG_PALETTE = ("black", "grey", "brown", "orange")
GENERA = (
    "Finch", "Warbler", "Sparrow", "Tanager", "Bunting", "Wren", "Jay", "Oriole", "Grosbeak",
    "Flycatcher", "Vireo", "Thrush", "Kingbird", "Chat", "Pipit", "Robin", "Shrike", "Siskin",
)
PART_ADJECTIVES = {"crown": "crowned", "wing": "winged", "breast": "breasted", "belly": "bellied",
                   "tail": "tailed", "head": "headed", "body": "backed", "beak": "billed"}


@dataclass(frozen=True)
class Background:
    """A plain or gradient background; never drawn behind a bird wearing one of ``conflicts``."""

    name: str
    top: tuple[int, int, int]
    bottom: tuple[int, int, int]
    conflicts: frozenset[str]


BACKGROUNDS: tuple[Background, ...] = (
    Background("sky", (128, 182, 236), (206, 226, 246), frozenset({"blue", "white", "grey"})),
    Background("foliage", (64, 112, 56), (138, 174, 96), frozenset({"green", "brown", "black"})),
    Background("sand", (236, 218, 178), (206, 182, 138), frozenset({"yellow", "orange", "brown", "white"})),
    Background("mist", (206, 210, 214), (172, 178, 184), frozenset({"grey", "white"})),
    Background("dusk", (212, 186, 224), (242, 214, 204), frozenset({"purple", "white", "red"})),
)


@dataclass(frozen=True)
class Species:
    """A species: class id (1-based), CUB-style folder name and the colour scheme of every part."""

    class_id: int
    name: str
    colours: dict[str, str]
    beak_length: str

    @property
    def folder(self) -> str:
        """``"NNN.Species_Name"`` as the CUB image folders."""
        return f"{self.class_id:03d}.{self.name}"

    def backgrounds(self) -> list[int]:
        """Indices into :data:`BACKGROUNDS` that never share a colour with a captioned part."""
        used = {self.colours[p] for p in CAPTION_PARTS}
        return [i for i, bg in enumerate(BACKGROUNDS) if not (bg.conflicts & used)]


@dataclass(frozen=True)
class Bird:
    """Everything needed to draw one image of a species (all randomness already drawn).

    Geometry is in bird units (body length ~ 1) with the bird facing right and y pointing down.
    """

    species: Species
    size: str
    facing: str
    width_fraction: float  # bird box width / image width
    centre: tuple[float, float]  # bird box centre, fractions of the image
    tilt: float  # degrees, positive = head up
    head_offset: tuple[float, float]
    wing_angle: float
    tail_angle: float
    shading: float
    brightness: float
    background: int
    gradient: bool
    bg_jitter: tuple[int, int, int]


def make_species(num_species: int, seed: int) -> list[Species]:
    """Draw ``num_species`` colour schemes that pairwise differ in at least two captioned parts.

    Each scheme also admits at least two backgrounds, so images vary their backdrop.
    """
    rng = np.random.default_rng([seed, 0x5EC1E5])
    names = list(COLOURS)
    species: list[Species] = []
    used_names: set[str] = set()
    attempts = 0
    while len(species) < num_species:
        attempts += 1
        if attempts > 100_000:
            raise DataError(f"cannot draw {num_species} distinct species; use num_species <= 200")
        pick = lambda pool: str(pool[rng.integers(len(pool))])  # noqa: E731
        body = pick(names)
        head = body if rng.random() < 0.5 else pick(names)
        crown = pick([c for c in names if c != head])
        wing = pick([c for c in names if c != body])
        tail = wing if rng.random() < 0.4 else pick(names)
        breast = pick([c for c in names if c != body]) if rng.random() < 0.8 else body
        belly = breast if rng.random() < 0.3 else pick([c for c in names if c != body])
        scheme = {"body": body, "head": head, "crown": crown, "wing": wing, "tail": tail,
                  "beak": pick(BEAK_PALETTE), "eye": "black", "belly": belly, "breast": breast,
                  "legs": pick(LEG_PALETTE)}
        beak_length = BEAK_LENGTHS[int(rng.integers(2))]
        candidate = Species(len(species) + 1, "", scheme, beak_length)
        if len(candidate.backgrounds()) < 2:
            continue
        if any(sum(scheme[p] != s.colours[p] for p in CAPTION_PARTS) < 2 for s in species):
            continue
        name = _species_name(scheme, rng, used_names)
        used_names.add(name)
        species.append(Species(len(species) + 1, name, scheme, beak_length))
    return species


def _species_name(scheme: dict[str, str], rng: np.random.Generator, used: set[str]) -> str:
    """A CUB-like name such as ``Red_crowned_Tanager`` (unique within the set)."""
    for _ in range(200):
        part = ("crown", "wing", "breast", "belly", "tail", "head")[int(rng.integers(6))]
        genus = GENERA[int(rng.integers(len(GENERA)))]
        name = f"{scheme[part].capitalize()}_{PART_ADJECTIVES[part]}_{genus}"
        if name not in used:
            return name
    index = len(used) + 1
    return f"Painted_{GENERA[index % len(GENERA)]}_{index}"


def sample_bird(species: Species, rng: np.random.Generator) -> Bird:
    """Draw the per-image variation (size, facing, position, pose, shading, background) of a species."""
    size = SIZES[int(rng.integers(2))]
    width_fraction = rng.uniform(0.56, 0.66) if size == "small" else rng.uniform(0.74, 0.88)
    backgrounds = species.backgrounds()
    if not backgrounds:
        raise DataError(f"species {species.name} wears every background colour; drop a colour from its scheme")
    return Bird(
        species=species,
        size=size,
        facing="right" if rng.random() < 0.5 else "left",
        width_fraction=float(width_fraction),
        centre=(float(rng.uniform(0.0, 1.0)), float(rng.uniform(0.0, 1.0))),
        tilt=float(rng.uniform(-12.0, 12.0)),
        head_offset=(float(rng.uniform(-0.02, 0.02)), float(rng.uniform(-0.03, 0.02))),
        wing_angle=float(rng.uniform(-8.0, 8.0)),
        tail_angle=float(rng.uniform(-12.0, 12.0)),
        shading=float(rng.uniform(0.10, 0.24)),
        brightness=float(rng.uniform(0.94, 1.05)),
        background=int(backgrounds[int(rng.integers(len(backgrounds)))]),
        gradient=bool(rng.random() < 0.7),
        bg_jitter=tuple(int(v) for v in rng.integers(-10, 11, size=3)),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------

_SUPERSAMPLE = 2
PART_LABELS: dict[str, int] = {part: i + 1 for i, part in enumerate(PARTS)}
"""Value of each part in the part map returned by :func:`draw_bird` (0 = background)."""


def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 48,
             start: float = 0.0, stop: float = 360.0) -> np.ndarray:
    """Points ``[n, 2]`` on an ellipse arc (degrees, y down), rotated by ``rot`` degrees about its centre."""
    t = np.deg2rad(np.linspace(start, stop, n, endpoint=stop - start < 360.0))
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return _rotate(pts, rot) + np.array([cx, cy])


def _rotate(pts: np.ndarray, degrees: float, about: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # y down: + is counter-clockwise
    origin = np.asarray(about)
    return (pts - origin) @ rot + origin


def _bird_shapes(bird: Bird) -> list[tuple[str, str, Any]]:
    """The bird's shapes in bird units, back to front: ``(part, kind, geometry)``.

    ``kind`` is ``"poly"`` (``[n, 2]`` points), ``"clip"`` (a polygon clipped to the body),
    ``"line"`` (``([n, 2] points, width)``) or ``"spot"`` (the eye's highlight: colour only).
    """
    beak_len = 0.10 if bird.species.beak_length == "short" else 0.24
    hx, hy = 0.31 + bird.head_offset[0], -0.17 + bird.head_offset[1]
    head_r = 0.16
    shapes: list[tuple[str, str, Any]] = []
    # tail: a fan behind the body, swung by the pose
    tail = np.array([[-0.20, -0.07], [-0.60, -0.12], [-0.64, 0.00], [-0.60, 0.10], [-0.20, 0.07]])
    shapes.append(("tail", "poly", _rotate(tail, bird.tail_angle, about=(-0.22, 0.0))))
    for dx in (0.0, 0.08):  # two legs with toes
        leg = np.array([[0.02 + dx, 0.14], [0.0 + dx, 0.33]])
        shapes.append(("legs", "line", (leg, 0.028)))
        shapes.append(("legs", "line", (np.array([[-0.03 + dx, 0.34], [0.0 + dx, 0.33], [0.06 + dx, 0.345]]), 0.022)))
    shapes.append(("body", "poly", _ellipse(0.0, 0.0, 0.33, 0.22, rot=8.0)))
    shapes.append(("belly", "clip", _ellipse(-0.08, 0.17, 0.24, 0.11, rot=4.0)))
    shapes.append(("breast", "clip", _ellipse(0.21, 0.10, 0.15, 0.14, rot=20.0)))
    # wing: a teardrop on the upper body, tip pointing back and down
    t = np.deg2rad(np.linspace(0.0, 360.0, 48, endpoint=False))
    wing = np.stack([0.16 * np.cos(t), 0.085 * np.sin(t)], axis=1)
    wing[:, 0] = np.where(wing[:, 0] < 0, wing[:, 0] * 1.55, wing[:, 0])
    wing = _rotate(wing, -14.0 + bird.wing_angle) + np.array([-0.05, -0.045])
    shapes.append(("wing", "poly", wing))
    shapes.append(("head", "poly", _ellipse(hx, hy, head_r, head_r)))
    # crown: the top ~40% of the head, a cap slightly wider than the head
    crown = _ellipse(hx - 0.005, hy - 0.004, head_r * 1.05, head_r * 1.06, start=192.0, stop=348.0, n=32)
    shapes.append(("crown", "poly", crown))
    # beak: upper and lower mandible as one triangle leaving the front of the head
    base_top = np.array([hx + head_r * math.cos(math.radians(-28)), hy + head_r * math.sin(math.radians(-28))])
    base_bot = np.array([hx + head_r * math.cos(math.radians(30)), hy + head_r * math.sin(math.radians(30))])
    tip = np.array([hx + head_r + beak_len, hy + 0.035])
    shapes.append(("beak", "poly", np.stack([base_top - [0.02, 0.0], tip, base_bot - [0.02, 0.0]])))
    shapes.append(("eye", "poly", _ellipse(hx + 0.055, hy + 0.015, 0.03, 0.03, n=20)))
    shapes.append(("eye", "spot", _ellipse(hx + 0.065, hy + 0.005, 0.011, 0.011, n=12)))
    return shapes


def draw_bird(bird: Bird, image_size: int) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
    """Render one bird.

    Args:
        bird: the species scheme and per-image variation.
        image_size: side of the square image in pixels.

    Returns:
        ``(image, part_map, bbox)``: the RGB image ``[image_size, image_size]``; ``part_map`` uint8
        ``[H, W]`` holding :data:`PART_LABELS` values of the visible part at each pixel (0 = background);
        ``bbox = (x, y, width, height)`` of the drawn bird in pixels, as CUB's bounding boxes.
    """
    s = image_size
    shapes = _bird_shapes(bird)
    # scale and place: bird-unit extents -> pixels, then the box centre at a random spot that fits
    pts = np.concatenate([g[0] if kind == "line" else g for _, kind, g in shapes])
    pts = _rotate(pts, bird.tilt)
    extent = pts.max(0) - pts.min(0)
    scale = bird.width_fraction * s / extent[0]
    scale = min(scale, 0.9 * s / extent[1])
    margin = 0.04 * s
    half = extent * scale / 2
    lo, hi = margin + half, s - margin - half
    box_centre = lo + np.asarray(bird.centre) * np.maximum(hi - lo, 0.0)
    mid = (pts.max(0) + pts.min(0)) / 2

    ss = _SUPERSAMPLE
    flip = -1.0 if bird.facing == "left" else 1.0

    def to_px(p: np.ndarray) -> list[tuple[float, float]]:
        q = (_rotate(p, bird.tilt) - mid) * scale + box_centre
        if flip < 0:  # facing left: mirror about the image's vertical midline
            q[:, 0] = s - q[:, 0]
        return [(float(x * ss), float(y * ss)) for x, y in q]

    big = (s * ss, s * ss)
    colour_layer = Image.new("RGB", big, (0, 0, 0))
    alpha = Image.new("L", big, 0)
    parts_big = Image.new("L", big, 0)
    layers = [colour_layer, parts_big, alpha]
    pens = [ImageDraw.Draw(layer) for layer in layers]
    body_mask = Image.new("L", big, 0)
    for part, kind, geom in shapes:
        fills = (COLOURS[bird.species.colours[part]], PART_LABELS[part], 255)
        if kind == "clip":  # belly and breast never spill outside the body
            mask = Image.new("L", big, 0)
            ImageDraw.Draw(mask).polygon(to_px(geom), fill=255)
            mask = ImageChops.multiply(mask, body_mask)
            for layer, fill in zip(layers, fills):
                layer.paste(fill, mask=mask)
            continue
        if kind == "spot":
            pens[0].polygon(to_px(geom), fill=(235, 235, 235))
            continue
        targets = list(zip(pens, fills))
        if part == "body":
            targets.append((ImageDraw.Draw(body_mask), 255))
        for pen, fill in targets:
            if kind == "line":
                line, width = geom
                pen.line(to_px(line), fill=fill, width=max(1, round(width * scale * ss)), joint="curve")
            else:
                pen.polygon(to_px(geom), fill=fill)

    # antialias by box-downsampling the premultiplied colour layer and the coverage
    colour_small = np.asarray(colour_layer.reduce(ss), dtype=np.float32)
    alpha_small = np.asarray(alpha.reduce(ss), dtype=np.float32)[..., None] / 255.0
    part_map = np.asarray(parts_big.resize((s, s), Image.NEAREST), dtype=np.uint8).copy()

    ys, xs = np.nonzero(alpha_small[..., 0] > 0.25)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1

    # mild shading: lit from above, darker underneath; global brightness jitter
    rows = np.arange(s, dtype=np.float32)[:, None, None]
    shade = bird.brightness * (1.0 + bird.shading * (0.5 - np.clip((rows - y0) / max(y1 - y0, 1), 0.0, 1.0)))
    bird_rgb = colour_small * shade

    bg = BACKGROUNDS[bird.background]
    top = np.clip(np.asarray(bg.top) + bird.bg_jitter, 0, 255).astype(np.float32)
    bottom = np.clip(np.asarray(bg.bottom) + bird.bg_jitter, 0, 255).astype(np.float32)
    if bird.gradient:
        w = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    else:
        w = np.full((s, 1, 1), 0.5, dtype=np.float32)
    background = top * (1 - w) + bottom * w  # [S, 1, 3], broadcast over columns
    out = bird_rgb + background * (1.0 - alpha_small)
    image = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    return image, part_map, (x0, y0, x1 - x0, y1 - y0)


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------

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
PART_WORDS: dict[str, str] = {
    "crown": "crown", "head": "head", "wing": "wing", "wings": "wing", "belly": "belly",
    "abdomen": "belly", "breast": "breast", "chest": "breast", "tail": "tail", "beak": "beak",
    "bill": "beak", "body": "body", "crowned": "crown", "winged": "wing", "bellied": "belly",
    "breasted": "breast", "tailed": "tail", "headed": "head", "billed": "beak", "beaked": "beak",
}
"""Caption word -> part (nouns and the ``-ed`` adjectives of "a red crowned bird")."""
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


# --------------------------------------------------------------------------------------------------
# Data set rendering
# --------------------------------------------------------------------------------------------------

_OWNED = (CUB_DIR, "text", "train", "test", MARKER, INCOMPLETE_MARKER, "contact_sheet.png")


@dataclass(frozen=True)
class _Job:
    index: int  # 0-based image index (image_id - 1)
    species: Species
    number: int  # 1-based number within the species
    image_size: int
    captions: int
    seed: int
    root: str


def _image_key(species: Species, number: int) -> str:
    """``"NNN.Species/Species_NNNN"``: the AttnGAN filename key (no extension)."""
    return f"{species.folder}/{species.name}_{number:04d}"


def _render_one(job: _Job) -> tuple[int, str, tuple[int, int, int, int], list[str]]:
    """Render, save and caption one image; seeded from (seed, image index) only, never worker order."""
    rng = np.random.default_rng([job.seed, 0xB1BD, job.index])
    bird = sample_bird(job.species, rng)
    image, _, bbox = draw_bird(bird, job.image_size)
    key = _image_key(job.species, job.number)
    root = Path(job.root)
    image.save(root / CUB_DIR / "images" / f"{key}.jpg", "JPEG", quality=JPEG_QUALITY)
    captions = make_captions(bird, rng, job.captions)
    (root / "text" / f"{key}.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return job.index, bird.size, bbox, captions


def _settings(num_species: int, images_per_species: int, image_size: int, test_fraction: float,
              captions_per_image: int, seed: int) -> dict[str, Any]:
    return {"num_species": int(num_species), "images_per_species": int(images_per_species),
            "image_size": int(image_size), "test_fraction": float(test_fraction),
            "captions_per_image": int(captions_per_image), "seed": int(seed)}


DEFAULTS: dict[str, Any] = _settings(80, 40, 256, 0.25, 10, 0)
"""Default render settings (3200 images of 80 species; the keyword arguments of :func:`render_dataset`)."""


def check_settings(settings: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for keys that are not :func:`render_dataset` settings."""
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown synthbirds render settings {sorted(unknown)}; use keys among {sorted(DEFAULTS)}")


def is_rendered(root: str | Path, **settings: Any) -> bool:
    """True when ``root`` holds a complete synthetic set rendered with ``settings`` (defaults filled in).

    The marker ``synthbirds.json`` is written last, so an interrupted render is never taken for complete.
    """
    root = Path(root)
    marker = root / MARKER
    if not marker.is_file() or (root / INCOMPLETE_MARKER).exists():
        return False
    check_settings(settings)
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = _settings(**{**DEFAULTS, **settings})
    return meta.get("format_version") == FORMAT_VERSION and meta.get("settings") == wanted


def read_summary(root: str | Path) -> dict[str, Any]:
    """The contents of ``<root>/synthbirds.json`` (settings, counts, species split and schemes)."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        raise DataError(f"no {marker}; render the set first (python tools/prepare_data.py data=synthbirds)")
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataError(f"{marker} is corrupt ({err}); render again with force=true") from err


def _split_species(num_species: int, test_fraction: float, seed: int) -> set[int]:
    """Class ids of the test species (as CUB's 150/50 class split of AttnGAN/StackGAN)."""
    num_test = int(round(num_species * test_fraction))
    if num_species >= 2:
        num_test = min(max(num_test, 1), num_species - 1)
    order = np.random.default_rng([seed, 0x7E57]).permutation(num_species) + 1
    return {int(c) for c in order[:num_test]}


def _prepare_root(root: Path) -> None:
    """Clear a previous render; refuse to touch a directory that is not ours."""
    if root.exists():
        entries = {p.name for p in root.iterdir()}
        ours = (root / MARKER).exists() or (root / INCOMPLETE_MARKER).exists()
        if entries and not ours:
            raise DataError(f"{root} is not empty and holds no synthetic bird set; choose an empty data.root")
        # the readers' derived caches (vocabulary, AttnGAN's captions.pickle) go with the old render
        from t2i.data.cub import ATTNGAN_CAPTIONS, VOCAB_FILE

        for name in (*_OWNED, VOCAB_FILE, ATTNGAN_CAPTIONS):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        others = sorted(entries - set(_OWNED) - {VOCAB_FILE, ATTNGAN_CAPTIONS})
        if others:
            log.warning("left in %s from before (caches may be stale): %s", root, ", ".join(others))
    root.mkdir(parents=True, exist_ok=True)
    (root / INCOMPLETE_MARKER).write_text("rendering\n", encoding="utf-8")


def render_dataset(
    root: str | Path,
    *,
    num_species: int = DEFAULTS["num_species"],
    images_per_species: int = DEFAULTS["images_per_species"],
    image_size: int = DEFAULTS["image_size"],
    test_fraction: float = DEFAULTS["test_fraction"],
    captions_per_image: int = DEFAULTS["captions_per_image"],
    seed: int = DEFAULTS["seed"],
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Render the synthetic bird set into ``root`` in the CUB-200-2011 / AttnGAN layout (module docstring).

    Deterministic: the same settings give byte-identical files, whatever ``workers`` is.

    Args:
        root: output directory; must be empty, absent, or a previous synthetic render (cleared first).
        num_species: number of species (classes); split into train/test species.
        images_per_species: images per species.
        image_size: image side in pixels (square JPEGs, quality 95).
        test_fraction: fraction of species held out for the test split.
        captions_per_image: captions per image (CUB has 10).
        seed: seed of species schemes, split and every image.
        workers: rendering processes; None = ``os.cpu_count()``, 1 = in this process.
        progress: show a tqdm progress bar.

    Returns:
        ``root`` as a Path.
    """
    settings = _settings(num_species, images_per_species, image_size, test_fraction, captions_per_image, seed)
    if num_species < 1 or images_per_species < 1 or image_size < 32 or captions_per_image < 1:
        raise DataError(f"render settings out of range: {settings}; need >=1 species/images/captions, size >= 32")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction} must be in [0, 1)")
    root = Path(root)
    start = time.perf_counter()
    _prepare_root(root)
    species = make_species(num_species, seed)
    test_ids = _split_species(num_species, test_fraction, seed)
    cub = root / CUB_DIR
    for sp in species:
        (cub / "images" / sp.folder).mkdir(parents=True, exist_ok=True)
        (root / "text" / sp.folder).mkdir(parents=True, exist_ok=True)
    jobs = [_Job(i * images_per_species + n, sp, n + 1, image_size, captions_per_image, seed, str(root))
            for i, sp in enumerate(species) for n in range(images_per_species)]

    results: list[Any] = [None] * len(jobs)
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    bar = _progress(len(jobs), progress)
    if workers == 1 or len(jobs) < 8:
        for job in jobs:
            results[job.index] = _render_one(job)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent) as pool:
            chunk = max(1, min(32, len(jobs) // (4 * workers)))
            for res in pool.map(_render_one, jobs, chunksize=chunk):
                results[res[0]] = res
                bar.update(1)
    bar.close()

    _write_metadata(root, species, jobs, results, test_ids)
    meta = {"format_version": FORMAT_VERSION, "settings": settings, "num_images": len(jobs),
            "train_species": [sp.folder for sp in species if sp.class_id not in test_ids],
            "test_species": [sp.folder for sp in species if sp.class_id in test_ids],
            "species": {sp.folder: {"colours": sp.colours, "beak_length": sp.beak_length} for sp in species}}
    atomic_write_text(root / MARKER, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (root / INCOMPLETE_MARKER).unlink()
    log.info("rendered %d images of %d species into %s in %.1f s", len(jobs), num_species, root,
             time.perf_counter() - start)
    return root


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="synthbirds", unit="img", disable=not enabled)


def _write_metadata(root: Path, species: list[Species], jobs: list[_Job], results: list[Any],
                    test_ids: set[int]) -> None:
    """The CUB index files, the attribute labels and the AttnGAN split pickles."""
    cub = root / CUB_DIR
    names = attribute_names()
    attr_id = {name: i + 1 for i, name in enumerate(names)}
    images, labels, boxes, split, attr_lines = [], [], [], [], []
    class_counts = np.zeros((len(species), len(names)))
    split_keys: dict[str, tuple[list[str], list[int]]] = {"train": ([], []), "test": ([], [])}
    for job, (_, size, bbox, _) in zip(jobs, results):
        image_id, sp = job.index + 1, job.species
        key = _image_key(sp, job.number)
        is_train = sp.class_id not in test_ids
        images.append(f"{image_id} {key}.jpg")
        labels.append(f"{image_id} {sp.class_id}")
        boxes.append(f"{image_id} " + " ".join(f"{float(v):.1f}" for v in bbox))
        split.append(f"{image_id} {int(is_train)}")
        present = {colour_attribute(p, c) for p, c in sp.colours.items()}
        present |= {BEAK_LENGTH_ATTRIBUTES[sp.beak_length], SIZE_ATTRIBUTES[size]}
        for name in names:
            flag = int(name in present)
            class_counts[sp.class_id - 1, attr_id[name] - 1] += flag
            attr_lines.append(f"{image_id} {attr_id[name]} {flag} {CERTAINTY_DEFINITELY} 0.000")
        keys, classes = split_keys["train" if is_train else "test"]
        keys.append(key)
        classes.append(sp.class_id)
    per_class = np.bincount([j.species.class_id - 1 for j in jobs], minlength=len(species))[:, None]
    percent = 100.0 * class_counts / np.maximum(per_class, 1)

    def lines(path: Path, rows: list[str]) -> None:
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    lines(cub / "images.txt", images)
    lines(cub / "classes.txt", [f"{sp.class_id} {sp.folder}" for sp in species])
    lines(cub / "image_class_labels.txt", labels)
    lines(cub / "bounding_boxes.txt", boxes)
    lines(cub / "train_test_split.txt", split)
    (cub / "attributes").mkdir(parents=True, exist_ok=True)
    lines(cub / "attributes" / "attributes.txt", [f"{i + 1} {n}" for i, n in enumerate(names)])
    lines(cub / "attributes" / "certainties.txt", [f"{i + 1} {c}" for i, c in enumerate(CERTAINTIES)])
    lines(cub / "attributes" / "image_attribute_labels.txt", attr_lines)
    lines(cub / "attributes" / "class_attribute_labels_continuous.txt",
          [" ".join(f"{v:.6f}" for v in row) for row in percent])
    for name, (keys, classes) in split_keys.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        with open(root / name / "filenames.pickle", "wb") as f:
            pickle.dump(keys, f, protocol=2)
        with open(root / name / "class_info.pickle", "wb") as f:
            pickle.dump(classes, f, protocol=2)


# --------------------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------------------


def contact_sheet(root: str | Path, path: str | Path | None = None, *, count: int = 64, columns: int = 8,
                  cell: int = 128) -> Path:
    """A PNG grid of ``count`` birds spread over all species, each with its first caption under it.

    Args:
        root: a rendered synthetic set (or any CUB-layout root with ``text/``).
        path: output PNG; default ``<root>/contact_sheet.png``.
        count: number of birds.
        columns: birds per row.
        cell: pixels per bird.

    Returns:
        the path written.
    """
    root = Path(root)
    path = Path(path) if path is not None else root / "contact_sheet.png"
    index = root / CUB_DIR / "images.txt"
    if not index.is_file():
        raise DataError(f"no {index}; render the set first (python tools/prepare_data.py data=synthbirds)")
    files = [line.split(maxsplit=1)[1] for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round()]
    font = ImageFont.load_default()
    line_h, text_lines = 11, 4
    rows = math.ceil(len(picks) / columns)
    cell_h = cell + line_h * text_lines + 4
    sheet = Image.new("RGB", (columns * cell, rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, name in enumerate(picks):
        x, y = (i % columns) * cell, (i // columns) * cell_h
        with Image.open(root / CUB_DIR / "images" / name) as img:
            sheet.paste(img.convert("RGB").resize((cell, cell), Image.BICUBIC), (x, y))
        caption = (root / "text" / name).with_suffix(".txt").read_text(encoding="utf-8").splitlines()[0]
        for j, text in enumerate(_wrap(caption, draw, font, cell - 4)[:text_lines]):
            draw.text((x + 2, y + cell + 1 + j * line_h), text, fill=(0, 0, 0), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _wrap(text: str, draw: ImageDraw.ImageDraw, font: Any, width: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            out.append(line)
            line = word
    if line:
        out.append(line)
    return out


__all__ = [
    "ATTRIBUTE_PART_NAMES", "BACKGROUNDS", "BEAK_LENGTHS", "BEAK_LENGTH_ATTRIBUTES", "CAPTION_PARTS",
    "COLOURS", "COLOUR_WORDS", "DEFAULTS", "FORMAT_VERSION", "MAX_CAPTION_WORDS", "PARTS", "PART_LABELS", "PART_WORDS",
    "SIZES", "SIZE_ATTRIBUTES", "Bird", "Species", "attribute_names", "caption_attributes", "check_settings",
    "colour_attribute", "contact_sheet", "draw_bird", "is_rendered", "make_captions", "make_species",
    "parse_attribute_name", "read_summary", "render_dataset", "sample_bird",
]
