"""Named resize/normalisation profiles that turn images into the FID Inception's 299x299 input.

FID values depend on how images reach 299x299 (Parmar et al., "On Aliased Resizing and Surprising Subtleties
in GAN Evaluation", 2022), so each result and each cached statistics file records the profile's name, and
statistics of one profile are never compared with another's (:func:`t2i.metrics.fid.load_statistics`).

Every profile takes images as the project stores them (``[N, 3, H, W]`` float in [-1, 1], see
:mod:`t2i.structures`) or as read from disk (``uint8`` in [0, 255]) and returns ``[N, 3, 299, 299]`` float32:

``pytorch-fid``
    pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``: values in [0, 1]
    (``(x + 1) / 2``, or ``uint8 / 255``), ``F.interpolate(bilinear, align_corners=False)`` (half-pixel
    centres, no antialiasing), then ``2x - 1``. Float input is not quantised.
``tf1``
    The original TensorFlow FID/IS graph (TTUR ``fid.py``, improved-gan ``inception_score.py``; also NVIDIA's
    ``inception-2015-12-05.pt`` and clean-fid's ``legacy_tensorflow`` mode): uint8 pixels go through the
    graph's ``ResizeBilinear`` with TF1's default ``align_corners=False`` and no half-pixel centres, i.e. output
    pixel ``i`` samples input coordinate ``i * in / out`` (the last row/column repeats the border), then
    ``(x - 128) / 128``, so values lie in [-1, 0.9921875]. Computed as TF1's ``ResizeBilinear`` CPU kernel
    does, in float32: ``scale = float32(in) / float32(out)``, source ``float32(i) * scale``, ``lerp = src -
    floor(src)``, neighbours ``floor(src)`` and ``min(ceil(src), in - 1)``, then ``top = tl + (tr - tl) * x_lerp``
    (likewise ``bottom``) and ``top + (bottom - top) * y_lerp``, each rounded to float32. The one difference
    left: a TF build whose compiler fuses these multiply-adds (FMA) rounds once instead of twice, which
    moves an output by at most one float32 ulp.
``clean-fid``
    clean-fid's ``clean`` mode: each uint8 image channel is resized by PIL's bicubic filter in float
    (``mode 'F'``, antialiased when downsampling), the bicubic overshoot is clipped to [0, 255] (clean-fid's
    ``resize_single_channel`` ends with ``.clip(0, 255)``), then ``(x - 128) / 128``.
``stackgan-cub``
    the input of StackGAN's CUB Inception Score (``StackGAN-inception-model/inception_score.py``,
    ``preprocess``): the uint8 RGB image is resized by ``scipy.misc.imresize(img, (299, 299, 3),
    interp='bilinear')``, i.e. PIL's bilinear filter on the 8-bit image (the result is 8-bit again), then
    ``x / 127.5 - 1``.

``tf1``, ``clean-fid`` and ``stackgan-cub`` model images that were saved as 8-bit files: float input is first
quantised as a PNG writer does (``round((x + 1) * 127.5)`` clamped to [0, 255]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from t2i.errors import ConfigError

INCEPTION_SIZE = 299


def to_uint8(images: Tensor) -> Tensor:
    """Quantise ``[N, 3, H, W]`` images in [-1, 1] to uint8 as saving a PNG would; uint8 passes through."""
    if images.dtype == torch.uint8:
        return images
    return torch.floor((images.float() + 1) * 127.5 + 0.5).clamp_(0, 255).to(torch.uint8)


def bilinear_matrix(size_in: int, size_out: int, mode: str) -> Tensor:
    """1-D bilinear resampling matrix ``[size_out, size_in]`` (float64), rows summing to one.

    Args:
        mode: ``"half_pixel"`` (PyTorch ``align_corners=False``; TF2 ``resize``): source coordinate
            ``(i + 0.5) * in / out - 0.5`` clamped at 0; ``"align_corners"`` (PyTorch and TF1
            ``align_corners=True``): ``i * (in - 1) / (out - 1)``; ``"tf1_legacy"`` (TF1
            ``resize_bilinear(align_corners=False)``): ``i * in / out``.
    """
    i = torch.arange(size_out, dtype=torch.float64)
    if mode == "half_pixel":
        src = ((i + 0.5) * size_in / size_out - 0.5).clamp(min=0)
    elif mode == "align_corners":
        src = i * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    elif mode == "tf1_legacy":
        src = i * size_in / size_out
    else:
        raise ValueError(f"unknown bilinear mode {mode!r}; use half_pixel, align_corners or tf1_legacy")
    lo = src.floor().long().clamp(max=size_in - 1)
    hi = (lo + 1).clamp(max=size_in - 1)
    frac = src - lo
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights[torch.arange(size_out), lo] += 1 - frac
    weights[torch.arange(size_out), hi] += frac
    return weights


def resize_bilinear(images: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """Separable bilinear resize of ``[N, C, H, W]`` to ``[N, C, *size]`` with an explicit coordinate mode."""
    rows = bilinear_matrix(images.shape[2], size[0], mode).to(images.dtype)
    cols = bilinear_matrix(images.shape[3], size[1], mode).to(images.dtype)
    return torch.einsum("oh,nchw,pw->ncop", rows, images, cols)


def _pytorch_fid(images: Tensor) -> Tensor:
    x = images.float() / 255 if images.dtype == torch.uint8 else (images.float() + 1) / 2  # [0, 1]
    x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


def _tf1_coordinates(size_in: int, size_out: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """TF1 ``compute_interpolation_weights`` with the legacy scaler, in float32: lower, upper, lerp."""
    scale = torch.tensor(size_in, dtype=torch.float32) / torch.tensor(size_out, dtype=torch.float32)
    src = torch.arange(size_out, dtype=torch.float32, device=device) * scale.to(device)  # float32 product
    floor = torch.floor(src)
    lower = floor.long().clamp(min=0)
    upper = torch.ceil(src).long().clamp(max=size_in - 1)
    return lower, upper, src - floor


def resize_bilinear_tf1(images: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)`` of ``[N, C, H, W]`` in float32, as its CPU kernel."""
    x = images.to(torch.float32)
    y_lo, y_hi, y_lerp = _tf1_coordinates(x.shape[2], size[0], x.device)
    x_lo, x_hi, x_lerp = _tf1_coordinates(x.shape[3], size[1], x.device)
    top_rows, bottom_rows = x[:, :, y_lo, :], x[:, :, y_hi, :]  # [N, C, out_h, W]
    top = top_rows[..., x_lo] + (top_rows[..., x_hi] - top_rows[..., x_lo]) * x_lerp  # [N, C, out_h, out_w]
    bottom = bottom_rows[..., x_lo] + (bottom_rows[..., x_hi] - bottom_rows[..., x_lo]) * x_lerp
    return top + (bottom - top) * y_lerp[:, None]


def _tf1(images: Tensor) -> Tensor:
    x = resize_bilinear_tf1(to_uint8(images), (INCEPTION_SIZE, INCEPTION_SIZE))
    return (x - 128) / 128  # the graph's Sub and Mul(1/128), exact in float32


def _clean_fid(images: Tensor) -> Tensor:
    pixels = to_uint8(images).cpu().numpy().astype(np.float32)  # [N, 3, H, W]
    out = np.empty((pixels.shape[0], 3, INCEPTION_SIZE, INCEPTION_SIZE), dtype=np.float32)
    for n, image in enumerate(pixels):
        for c, channel in enumerate(image):
            resized = Image.fromarray(channel).resize((INCEPTION_SIZE, INCEPTION_SIZE), resample=Image.BICUBIC)
            out[n, c] = np.asarray(resized).clip(0, 255)  # clean-fid clips the bicubic overshoot
    return (torch.from_numpy(out).to(images.device) - 128) / 128


def _stackgan_cub(images: Tensor) -> Tensor:
    pixels = to_uint8(images).permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, 3] uint8
    out = np.empty((pixels.shape[0], INCEPTION_SIZE, INCEPTION_SIZE, 3), dtype=np.float32)
    for n, image in enumerate(pixels):  # scipy.misc.imresize(..., interp='bilinear'): PIL bilinear, uint8 out
        out[n] = np.asarray(Image.fromarray(image, "RGB").resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BILINEAR))
    return torch.from_numpy(out / np.float32(127.5) - np.float32(1.0)).permute(0, 3, 1, 2).contiguous().to(images.device)


@dataclass(frozen=True)
class Profile:
    """A named way of preparing images for the FID Inception.

    Attributes:
        name: recorded with every metric result and cached statistics file.
        prepare: ``[N, 3, H, W]`` float in [-1, 1] or uint8 -> ``[N, 3, 299, 299]`` float32.
    """

    name: str
    prepare: Callable[[Tensor], Tensor]

    def __call__(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"profile {self.name} expects images [N, 3, H, W], got {tuple(images.shape)}")
        return self.prepare(images)


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("pytorch-fid", _pytorch_fid), Profile("tf1", _tf1), Profile("clean-fid", _clean_fid),
    Profile("stackgan-cub", _stackgan_cub))}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    if name not in PROFILES:
        raise ConfigError(f"unknown Inception profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
