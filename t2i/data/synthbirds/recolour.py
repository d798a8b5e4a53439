"""Palette swaps: a colour augmentation of the synthetic birds that keeps every caption true.

Colour jitter is wrong for text-to-image data whose captions name colours: a bird whose red crown turns
pink is no longer "a bird with a red crown". A palette swap is a permutation ``pi`` of the ten palette
colours (:data:`t2i.data.attributes.COLOURS`) applied to the whole example at once: every part painted
``c`` is painted ``pi(c)`` instead, and every colour word ``c`` of the caption becomes ``pi(c)``. Caption and
image then agree as before, whichever words named which parts, while the colour schemes the models see
are no longer the training species' few fixed ones.

The image is not recoloured pixel by pixel but drawn again: each image of a render is a function of the
render's seed and its image index (:func:`.render.image_rng`), so the same bird (pose, size, shading,
background) is redrawn with the permuted scheme, exactly, at ``render_size`` pixels (no JPEG round trip).
What the swap changes besides colours: a swapped bird may wear its background's colour (the render
never draws a blue bird on the sky), and beaks, legs and eyes take any palette colour.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from PIL import Image

from t2i.data.attributes import COLOUR_WORDS, COLOURS
from t2i.data.synthbirds.drawing import draw_bird
from t2i.data.synthbirds.render import blur_image, image_index, image_rng, read_summary
from t2i.data.synthbirds.species import Bird, Species, fix_variation, make_species, sample_bird
from t2i.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["PaletteSwap"]

_PALETTE = tuple(COLOURS)
_WORD = re.compile(r"\b(?:(an?)(\s+))?(" + "|".join(sorted(COLOUR_WORDS, key=len, reverse=True)) + r")\b",
                   re.IGNORECASE)


def _swap_word(match: re.Match, mapping: Mapping[str, str]) -> str:
    """One colour word (with its article, if any, made to agree: "a red" -> "an orange")."""
    article, space, word = match.groups()
    new = mapping.get(COLOUR_WORDS[word.lower()], word)
    if new == COLOUR_WORDS[word.lower()]:
        new = word  # a colour mapped to itself keeps its spelling ("gray")
    if article is None:
        return new
    fitting = "an" if new[0].lower() in "aeiou" else "a"
    return (fitting.capitalize() if article[0].isupper() else fitting) + space + new


class PaletteSwap:
    """Redraws training images of a synthetic-bird render with permuted palette colours (module docstring).

    Args:
        root: the render's data root (holds ``synthbirds.json``).
        probability: chance that an example is swapped (the others are left as rendered).
        render_size: side at which swapped images are drawn; at most the render's own image size.
            Twice the largest training resolution is enough: AttnGAN's crop keeps at least 0.84 of
            the image and the pyramid needs ``76/64`` of the final size.
        colours: the palette colours to permute (default: all ten); the others keep their colour. Give
            the colours the vocabulary knows, so that a swap never writes a word the text encoder drops
            (the default render's captions never say "white": it paints only eyes).

    Raises:
        DataError: ``root`` holds no render, or one whose species this code no longer draws the same.
        ValueError: ``probability`` outside [0, 1].
    """

    def __init__(self, root: str | Path, probability: float = 0.5, render_size: int | None = None,
                 colours: Sequence[str] | None = None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"palette swap probability {probability} must be in [0, 1]")
        self.colours = tuple(_PALETTE if colours is None else (c for c in _PALETTE if c in set(colours)))
        if len(self.colours) < 2:
            raise ValueError(f"palette swaps need two colours or more to permute, not {list(self.colours)}")
        summary = read_summary(root)
        settings = summary["settings"]
        self.probability = float(probability)
        self.seed = int(settings["seed"])
        self.images_per_species = int(settings["images_per_species"])
        self.fixed = tuple(settings.get("fixed", ()))
        self.blur = float(settings.get("blur", 0.0))
        self.render_size = min(int(settings["image_size"]), int(render_size or settings["image_size"]))
        self.species: dict[str, Species] = {sp.folder: sp for sp in make_species(int(settings["num_species"]),
                                                                                   self.seed)}
        stored = summary.get("species", {})
        if {k: v["colours"] for k, v in stored.items()} != {k: sp.colours for k, sp in self.species.items()}:
            raise DataError(f"the species of the render in {root} differ from those this version of t2i draws; "
                            "render it again (python tools/prepare_data.py data=synthbirds data.force=true)")

    def __repr__(self) -> str:
        return (f"PaletteSwap(probability={self.probability}, render_size={self.render_size}, "
                f"colours={list(self.colours)})")

    def sample(self, generator: torch.Generator | None = None) -> dict[str, str] | None:
        """A random permutation ``{colour: new colour}`` of the palette (of ``colours``; the others map to
        themselves), or None (no swap) with 1 - probability."""
        import torch  # here, not at import: the package's render workers run without torch

        if self.probability <= 0.0 or float(torch.rand((), generator=generator)) >= self.probability:
            return None
        order = torch.randperm(len(self.colours), generator=generator).tolist()
        return {**{c: c for c in _PALETTE}, **{c: self.colours[j] for c, j in zip(self.colours, order)}}

    def bird(self, key: str) -> Bird:
        """The rendered bird of image ``key`` (``"NNN.Species/Species_NNNN"``), as :func:`render_dataset` drew it."""
        folder, _, name = key.partition("/")
        species = self.species.get(folder)
        number = name.rsplit("_", 1)[-1]
        if species is None or not number.isdigit():
            raise DataError(f"image {key!r} is not an image of this synthetic-bird render")
        rng = image_rng(self.seed, image_index(species, int(number), self.images_per_species))
        return fix_variation(sample_bird(species, rng), self.fixed)

    def image(self, key: str, mapping: Mapping[str, str]) -> Image.Image:
        """Image ``key`` drawn with every palette colour ``c`` replaced by ``mapping[c]``, cropped around the bird
        as :func:`t2i.data.images.load_image` crops (AttnGAN's square box crop)."""
        from t2i.data.images import crop_box  # torch-free import of the package, as above

        bird = self.bird(key)
        colours = {part: mapping.get(c, c) for part, c in bird.species.colours.items()}
        bird = replace(bird, species=replace(bird.species, colours=colours))
        image, _, bbox = draw_bird(bird, self.render_size)
        image = blur_image(image, self.blur)  # as the render blurred it
        return image.crop(crop_box(image.width, image.height, bbox))

    @staticmethod
    def text(caption: str, mapping: Mapping[str, str]) -> str:
        """``caption`` with each colour word replaced by its image (``"gray"`` counts as ``"grey"``) and the
        article before it made to agree."""
        return _WORD.sub(lambda m: _swap_word(m, mapping), caption)
