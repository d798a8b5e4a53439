"""A contact sheet of rendered synthetic birds with their captions (for README figures and a quick look)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from t2i.data.synthbirds.render import CUB_DIR
from t2i.errors import DataError


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
