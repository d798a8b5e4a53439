"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

A GAN trained on a small data set overfits its discriminator: D memorises the real images and its
gradients stop telling G anything. DiffAugment applies the *same kind* of random, differentiable
transformation to every image D sees, real and fake, in the D step and in the G step, so gradients reach
the generator through the augmentation. Policies (comma-separated, applied in order):

* ``translation``: shift by up to ``translation_ratio`` of the side (DiffAugment: 1/8), zero padded
  (grey in ``[-1, 1]`` images);
* ``cutout``: zero one square of ``cutout_ratio`` of the side (DiffAugment: 1/2) at a random place;
* ``color``: brightness, saturation and contrast jitter as in DiffAugment. The synthetic birds' captions
  *name colours*, so colour jitter on D's inputs blurs exactly the signal the conditional head must
  judge; it is offered for measurement, not recommended.

Every image draws its own transformation; pass a ``torch.Generator`` to reproduce a draw.
"""

from __future__ import annotations

import torch
from torch import Tensor

POLICIES = ("translation", "cutout", "color")


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"translation,cutout"`` -> ``("translation", "cutout")``; empty or None -> ``()``.

    Raises:
        ValueError: an unknown policy name.
    """
    if not policy:
        return ()
    names = tuple(p.strip() for p in str(policy).split(",") if p.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(POLICIES)}")
    return names


def _rand(shape, x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=generator, device="cpu").to(device=x.device, dtype=x.dtype)


def translate(x: Tensor, ratio: float = 0.125, generator: torch.Generator | None = None) -> Tensor:
    """Shift each image of ``x [B, C, H, W]`` by integers up to ``ratio * side`` each way, zero padded."""
    b, _, h, w = x.shape
    max_h, max_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if max_h == 0 and max_w == 0:
        return x
    shift_h = (torch.rand(b, generator=generator) * (2 * max_h + 1)).long() - max_h  # [-max, max]
    shift_w = (torch.rand(b, generator=generator) * (2 * max_w + 1)).long() - max_w
    rows = torch.arange(h)[None, :] - shift_h[:, None]  # (B, H): source row of each output row
    cols = torch.arange(w)[None, :] - shift_w[:, None]
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (B, H, W)
    rows, cols = rows.clamp(0, h - 1).to(x.device), cols.clamp(0, w - 1).to(x.device)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2) * valid[:, None].to(device=x.device, dtype=x.dtype)


def cutout(x: Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Zero one ``ratio * side`` square per image of ``x [B, C, H, W]`` (its centre anywhere in the image)."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if size_h == 0 or size_w == 0:
        return x
    top = (torch.rand(b, generator=generator) * (h + 1 - size_h % 2)).long() - size_h // 2
    left = (torch.rand(b, generator=generator) * (w + 1 - size_w % 2)).long() - size_w // 2
    r = torch.arange(h)[None, :] - top[:, None]
    c = torch.arange(w)[None, :] - left[:, None]
    inside = ((r >= 0) & (r < size_h))[:, :, None] & ((c >= 0) & (c < size_w))[:, None, :]  # (B, H, W)
    return x * (~inside)[:, None].to(device=x.device, dtype=x.dtype)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment's colour jitter: brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5] (on [-1, 1] images)."""
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, generator) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1), x, generator) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, generator) + 0.5) + mean


def diff_augment(x: Tensor, policy: str | tuple[str, ...] | None, translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Apply ``policy`` (see the module docstring) to ``x [B, C, H, W]``; differentiable with respect to ``x``."""
    names = parse_policy(policy) if not isinstance(policy, tuple) else policy
    for name in names:
        if name == "translation":
            x = translate(x, translation_ratio, generator)
        elif name == "cutout":
            x = cutout(x, cutout_ratio, generator)
        elif name == "color":
            x = color(x, generator)
        else:
            raise ValueError(f"unknown augmentation {name!r}; choose from {', '.join(POLICIES)}")
    return x.contiguous()
