"""Pictures: image grids, captioned sheets, word-attention figures and DRAW canvas strips/animations.

Images come in the package convention (``[B, 3, H, W]`` in [-1, 1]) unless a function says otherwise.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import make_grid

from t2i.io import atomic_write


def to_pil(image: Tensor) -> Image.Image:
    """``[3, H, W]`` in [-1, 1] (or ``[1, H, W]``) -> PIL RGB."""
    array = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy(), "RGB")


def grid_image(images: Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """A grid of ``[B, C, H, W]`` images in [-1, 1]."""
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, value_range=(-1, 1), normalize=True)
    return to_pil(grid * 2 - 1)


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Save a PIL image atomically (format from the suffix)."""
    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}.get(path.suffix.lower(), "PNG")
    return atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def _font(size: int = 10):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def captioned_grid(images: Tensor, captions: Sequence[str], ncol: int = 8, cell: int = 128,
                   text_lines: int = 3) -> Image.Image:
    """A sheet of images, each with its caption written under it."""
    n = images.shape[0]
    nrow = (n + ncol - 1) // ncol
    line_h = 12
    text_h = line_h * text_lines + 4
    sheet = Image.new("RGB", (ncol * cell, nrow * (cell + text_h)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(10)
    chars = max(8, cell // 6)
    for i in range(n):
        r, c = divmod(i, ncol)
        x, y = c * cell, r * (cell + text_h)
        sheet.paste(to_pil(images[i]).resize((cell, cell), Image.BICUBIC), (x, y))
        lines = textwrap.wrap(captions[i] if i < len(captions) else "", chars)[:text_lines]
        for k, line in enumerate(lines):
            draw.text((x + 2, y + cell + 2 + k * line_h), line, fill="black", font=font)
    return sheet


def attention_figure(stage_images: Sequence[Tensor], attn_maps: Sequence[Tensor], words: Sequence[str],
                     cell: int = 96, max_words: int = 12, labels: Sequence[str] | None = None) -> Image.Image:
    """Word-attention figure for one sample: one row per attention stage, one column per word.

    Args:
        stage_images: per stage ``[3, H, W]`` images; row s shows the image that stage s's attention
            was computed for (the attention stages' inputs map onto their output images).
        attn_maps: per attention stage ``[T, h, w]`` weights over words.
        words: the caption's words (the first ``len(words)`` positions of T).

    Each cell is the stage's image lit by the word's attention map (upsampled, normalised per map:
    bright where the word is attended, dark elsewhere), with the word written above it. ``labels`` name
    the rows (default ``attention 1, 2, ...``).
    """
    words = list(words)[:max_words]
    rows = len(attn_maps)
    label_h = 14
    fig = Image.new("RGB", ((len(words) + 1) * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(fig)
    font = _font(11)
    for r, (attn, image) in enumerate(zip(attn_maps, stage_images)):
        y = r * (cell + label_h)
        base = to_pil(image).resize((cell, cell), Image.BICUBIC)
        fig.paste(base, (0, y + label_h))
        draw.text((2, y + 1), labels[r] if labels else f"attention {r + 1}", fill="black", font=font)
        up = F.interpolate(attn[None, : len(words)].float(), size=(cell, cell), mode="bilinear", align_corners=False)[0]
        for k, word in enumerate(words):
            a = up[k]
            a = (a - a.min()) / (a.max() - a.min() + 1e-8)
            weight = a.cpu().numpy()[..., None]
            mixed = np.asarray(base, dtype=np.float32) / 255 * (0.15 + 0.85 * weight)
            tile = Image.fromarray((mixed.clip(0, 1) * 255).astype(np.uint8))
            x = (k + 1) * cell
            fig.paste(tile, (x, y + label_h))
            draw.text((x + 2, y + 1), word, fill="black", font=font)
    return fig


def canvas_strip(canvases: Tensor, every: int = 1) -> Image.Image:
    """DRAW canvas progression ``[T, C, H, W]`` (in [-1, 1]) as one horizontal strip."""
    frames = canvases[::every]
    if every > 1 and (canvases.shape[0] - 1) % every:
        frames = torch.cat([frames, canvases[-1:]])
    return grid_image(frames, nrow=frames.shape[0])


def canvas_sheet(canvases: Tensor, pad: int = 1) -> Image.Image:
    """Canvas progressions ``[B, T, C, H, W]`` (or ``[T, C, H, W]``) in [-1, 1]: one row per sample, one column
    per step, on white."""
    if canvases.dim() == 4:
        canvases = canvases[None]
    grid = make_grid(canvases.flatten(0, 1).detach().float().cpu(), nrow=canvases.shape[1], padding=pad,
                     pad_value=1.0)  # (3, h, w)
    return to_pil(grid)


def save_canvas_gif(canvases: Tensor, path: str | Path, scale: int = 2, ms_per_frame: int = 150,
                    hold: int = 8) -> Path:
    """DRAW canvas progression as an animated GIF, written atomically.

    Args:
        canvases: ``[T, C, H, W]`` (one sample) or ``[B, T, C, H, W]`` (frame t: every sample's canvas after
            step t, in a square grid on white), in [-1, 1].
        scale: nearest-neighbour upscaling.
        ms_per_frame: frame duration; the last frame is held ``hold`` times as long.
    """
    if canvases.dim() == 5:
        nrow = max(1, int(math.ceil(math.sqrt(canvases.shape[0]))))
        frames = [to_pil(make_grid(canvases[:, t].detach().float().cpu(), nrow=nrow, padding=1, pad_value=1.0))
                  for t in range(canvases.shape[1])]
    else:
        frames = [to_pil(c) for c in canvases]
    frames = [f.resize((f.width * scale, f.height * scale), Image.NEAREST) for f in frames]
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * hold]

    def write(tmp):
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)

    return atomic_write(path, write)
