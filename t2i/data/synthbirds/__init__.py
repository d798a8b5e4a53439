"""Synthetic birds: the embedded default data set, rendered in exactly the CUB-200-2011 / AttnGAN layout.

A bird is drawn with PIL from ten parts (:data:`t2i.data.attributes.PARTS`), each painted with a named colour
from a palette of ten (:data:`t2i.data.attributes.COLOURS`). A species fixes a colour scheme and a beak length;
each image varies size, facing, position, tilt, pose of wing/tail/head, shading and background. Every image
gets ten CUB-like captions that only name what is drawn, and per-image attribute labels in CUB's attribute
format, so the same reader, vocabulary and attribute-accuracy metric serve real CUB and the synthetic birds.

The package, one module per concept: :mod:`.species` (colour schemes, per-image specifications),
:mod:`.drawing` (PIL), :mod:`.captions` (sentences and their parser), :mod:`.render` (the data set on disk:
``render_dataset``, ``is_rendered``; its docstring lists the files), :mod:`.contact_sheet` and :mod:`.recolour`
(palette swaps: training images redrawn with permuted colours, captions permuted alike). The
part/colour vocabulary is :mod:`t2i.data.attributes`, shared with the CUB reader and the metrics.
"""

from t2i.data.attributes import (ATTRIBUTE_PART_NAMES, BEAK_LENGTH_ATTRIBUTES, BEAK_LENGTHS, COLOUR_WORDS, COLOURS,
                                  PART_WORDS, PARTS, SIZE_ATTRIBUTES, SIZES, attribute_names, colour_attribute,
                                  parse_attribute_name)
from t2i.data.synthbirds.captions import MAX_CAPTION_WORDS, caption_attributes, make_captions
from t2i.data.synthbirds.contact_sheet import contact_sheet
from t2i.data.synthbirds.drawing import PART_LABELS, draw_bird
from t2i.data.synthbirds.recolour import PaletteSwap
from t2i.data.synthbirds.render import (CUB_DIR, DEFAULTS, FORMAT_VERSION, INCOMPLETE_MARKER, MARKER, check_settings,
                                        image_index, image_rng, is_rendered, read_summary, render_dataset)
from t2i.data.synthbirds.species import (BACKGROUNDS, CAPTION_PARTS, VARIATIONS, Bird, Species, fix_variation,
                                         make_species, sample_bird)


__all__ = [
    "ATTRIBUTE_PART_NAMES", "BACKGROUNDS", "BEAK_LENGTHS", "BEAK_LENGTH_ATTRIBUTES", "CAPTION_PARTS", "CUB_DIR",
    "INCOMPLETE_MARKER", "MARKER",
    "COLOURS", "COLOUR_WORDS", "DEFAULTS", "FORMAT_VERSION", "MAX_CAPTION_WORDS", "PARTS", "PART_LABELS", "PART_WORDS",
    "SIZES", "SIZE_ATTRIBUTES", "Bird", "PaletteSwap", "Species", "attribute_names", "caption_attributes", "check_settings",
    "VARIATIONS", "colour_attribute", "contact_sheet", "draw_bird", "fix_variation", "image_index", "image_rng",
    "is_rendered", "make_captions", "make_species", "parse_attribute_name", "read_summary", "render_dataset",
    "sample_bird",
]
