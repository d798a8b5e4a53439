"""Species (a colour scheme per species) and per-image bird specifications of the synthetic birds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from t2i.data.attributes import BEAK_LENGTHS, COLOURS, SIZES
from t2i.errors import DataError

CAPTION_PARTS: tuple[str, ...] = ("crown", "wing", "belly", "breast", "body", "tail", "beak", "head")
"""The parts captions may name (big enough to read at 64 px; eyes and legs are not named)."""

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


VARIATIONS: tuple[str, ...] = ("pose", "background")
"""Per-image variation that a render can hold fixed (``render_dataset(fixed=...)``): ``pose`` (facing left, one
size, centred, level, wings and tail at rest) and ``background`` (the plain "mist" grey, or the first background the
species allows). A diagnostic: how much of a generator's FID the variety of the real images accounts for."""
MIST = next(i for i, bg in enumerate(BACKGROUNDS) if bg.name == "mist")


def fix_variation(bird: Bird, fixed: Sequence[str]) -> Bird:
    """``bird`` with the variation named in ``fixed`` (of :data:`VARIATIONS`) replaced by one value for every image.

    The species, its colours and the captions' words (``size`` included) are unchanged.
    """
    if "pose" in fixed:
        bird = replace(bird, facing="left", width_fraction=0.8, centre=(0.5, 0.5), tilt=0.0, head_offset=(0.0, 0.0),
                       wing_angle=0.0, tail_angle=0.0)
    if "background" in fixed:
        allowed = bird.species.backgrounds()
        bird = replace(bird, background=MIST if MIST in allowed else allowed[0], gradient=False, bg_jitter=(0, 0, 0))
    return bird
