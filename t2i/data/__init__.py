"""Data: tokenizer and vocabulary, CUB/COCO readers, image pyramids, datasets and collation.

The synthetic bird renderer lives in :mod:`t2i.data.synthbirds` (imported on demand).
"""

from t2i.data.coco import COCOSource
from t2i.data.cub import CUBSource, read_caption_file
from t2i.data.dataset import TextImageDataset, collate, make_loader, shorten_caption
from t2i.data.images import ImagePyramid, crop_box, load_image
from t2i.data.safe_pickle import safe_load
from t2i.data.text import Vocabulary, tokenize

__all__ = [
    "COCOSource", "CUBSource", "ImagePyramid", "TextImageDataset", "Vocabulary", "collate", "crop_box",
    "load_image", "make_loader", "read_caption_file", "safe_load", "shorten_caption", "tokenize",
]
