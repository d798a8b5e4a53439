"""Data: tokenizer and vocabulary, CUB/COCO readers, image pyramids, datasets and collation.

Names are imported lazily (PEP 562), so that ``import t2i.data.synthbirds`` in rendering worker
processes does not pull in torch, torchvision and nltk.
"""

import importlib

_EXPORTS = {
    "COCOSource": "coco", "CUBSource": "cub", "read_caption_file": "cub",
    "TextImageDataset": "dataset", "collate": "dataset", "make_loader": "dataset", "shorten_caption": "dataset",
    "ImagePyramid": "images", "crop_box": "images", "load_image": "images",
    "safe_load": "safe_pickle", "Vocabulary": "text", "tokenize": "text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"t2i.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 't2i.data' has no attribute {name!r}")
