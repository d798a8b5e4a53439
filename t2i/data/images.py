"""Image loading, AttnGAN's bounding-box crop, and the multi-resolution image pyramid.

Matches AttnGAN ``code/datasets.py`` ``get_imgs`` and the transform built in ``code/main.py``:
``Resize(int(imsize * 76 / 64))`` -> ``RandomCrop(imsize)`` -> ``RandomHorizontalFlip()``, then one
image per stage resized to ``base_size * 2**i`` and normalised to [-1, 1].
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFile
from torch import Tensor
from torchvision.transforms import InterpolationMode

from t2i.errors import DataError

__all__ = ["crop_box", "load_image", "ImagePyramid"]


def crop_box(width: int, height: int, bbox: Sequence[float]) -> tuple[int, int, int, int]:
    """AttnGAN's square crop around a bird's bounding box, clipped to the image.

    The box ``(x, y, w, h)`` is first truncated to integers (AttnGAN reads ``bounding_boxes.txt``
    with ``.astype(int)``); the crop is the square of half-side ``r = int(max(w, h) * 0.75)``
    centred on ``(int((2x + w) / 2), int((2y + h) / 2))``, clipped to ``[0, width] x [0, height]``.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        bbox: ``(x, y, w, h)``, top-left corner and size.

    Returns:
        ``(x1, y1, x2, y2)`` for ``PIL.Image.crop``.
    """
    x, y, w, h = (int(v) for v in bbox)
    r = int(max(w, h) * 0.75)
    center_x = int((2 * x + w) / 2)
    center_y = int((2 * y + h) / 2)
    y1 = max(0, center_y - r)
    y2 = min(height, center_y + r)
    x1 = max(0, center_x - r)
    x2 = min(width, center_x + r)
    return x1, y1, x2, y2


def load_image(path: str | os.PathLike, bbox: Sequence[float] | None = None) -> Image.Image:
    """Open an image fully, as RGB, optionally cropped around ``bbox`` with :func:`crop_box`.

    Grayscale, CMYK, RGBA, LA and palette images are converted to RGB (alpha is dropped, as
    AttnGAN's ``.convert('RGB')``). The whole file is decoded here, so a truncated or corrupt file
    fails now, with its name, rather than inside a worker later.

    Raises:
        DataError: missing, unreadable, truncated or corrupt image.
    """
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True somewhere in this process; "
                        "set it back to False so truncated images are detected")
    if not path.is_file():
        raise DataError(f"image {path} does not exist; see data/README.md for the expected layout")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette-with-transparency notices; we convert below
            with Image.open(path) as img:
                img.load()
                if img.mode == "P" and "transparency" in img.info:
                    img = img.convert("RGBA")
                rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc)[:150] or type(exc).__name__} "
                        "(truncated or corrupt; replace the file or use data.skip_bad=true)") from None
    if bbox is not None:
        rgb = rgb.crop(crop_box(rgb.width, rgb.height, bbox))
    return rgb


class ImagePyramid:
    """AttnGAN's training transform and per-stage resizing.

    Args:
        base_size: side of the first stage (64).
        num_stages: number of stages; stage ``i`` has side ``base_size * 2**i``.
        train: random crop + random horizontal flip (AttnGAN); otherwise centre crop, no flip.

    Calling it on a PIL image returns ``num_stages`` tensors ``[3, S_i, S_i]`` in [-1, 1].
    """

    def __init__(self, base_size: int = 64, num_stages: int = 3, train: bool = True):
        if base_size < 1 or num_stages < 1:
            raise ValueError(f"base_size ({base_size}) and num_stages ({num_stages}) must be >= 1")
        self.base_size = base_size
        self.num_stages = num_stages
        self.train = train
        self.sizes = [base_size * 2 ** i for i in range(num_stages)]
        self.final_size = self.sizes[-1]
        self.load_size = int(self.final_size * 76 / 64)  # AttnGAN main.py: Scale(int(imsize * 76 / 64))

    def __repr__(self) -> str:
        return f"ImagePyramid(sizes={self.sizes}, load_size={self.load_size}, train={self.train})"

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> list[Tensor]:
        """Args: img: RGB PIL image; generator: optional RNG for crop and flip.

        Returns:
            list of ``[3, S_i, S_i]`` float tensors in [-1, 1], increasing size.
        """
        img = TF.resize(img, self.load_size, interpolation=InterpolationMode.BILINEAR)  # shorter side
        s = self.final_size
        if self.train:
            top = int(torch.randint(0, img.height - s + 1, (1,), generator=generator))
            left = int(torch.randint(0, img.width - s + 1, (1,), generator=generator))
            img = TF.crop(img, top, left, s, s)
            if torch.rand((), generator=generator) < 0.5:
                img = TF.hflip(img)
        else:
            img = TF.center_crop(img, [s, s])
        out = []
        for size in self.sizes:
            stage = img if size == s else TF.resize(img, size, interpolation=InterpolationMode.BILINEAR)
            out.append(to_signed_tensor(stage))
        return out


def to_signed_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image -> ``[3, H, W]`` float32 in [-1, 1] (``ToTensor`` + ``Normalize(0.5, 0.5)``).

    Done in numpy: single-threaded, which in loader workers and on busy machines is much faster than
    torch's intra-op thread pool for tensors this small.
    """
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)  # (3, H, W)
    return torch.from_numpy(np.ascontiguousarray(arr / np.float32(127.5) - np.float32(1.0)))
