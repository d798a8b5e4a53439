"""Drawing one synthetic bird with PIL: parts as polygons, supersampled, with its part map and box."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from t2i.data.attributes import COLOURS, PARTS
from t2i.data.synthbirds.species import BACKGROUNDS, Bird

_SUPERSAMPLE = 2
PART_LABELS: dict[str, int] = {part: i + 1 for i, part in enumerate(PARTS)}
"""Value of each part in the part map returned by :func:`draw_bird` (0 = background)."""


def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 48,
             start: float = 0.0, stop: float = 360.0) -> np.ndarray:
    """Points ``[n, 2]`` on an ellipse arc (degrees, y down), rotated by ``rot`` degrees about its centre."""
    t = np.deg2rad(np.linspace(start, stop, n, endpoint=stop - start < 360.0))
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)
    return _rotate(pts, rot) + np.array([cx, cy])


def _rotate(pts: np.ndarray, degrees: float, about: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # y down: + is counter-clockwise
    origin = np.asarray(about)
    return (pts - origin) @ rot + origin


def _bird_shapes(bird: Bird) -> list[tuple[str, str, Any]]:
    """The bird's shapes in bird units, back to front: ``(part, kind, geometry)``.

    ``kind`` is ``"poly"`` (``[n, 2]`` points), ``"clip"`` (a polygon clipped to the body),
    ``"line"`` (``([n, 2] points, width)``) or ``"spot"`` (the eye's highlight: colour only).
    """
    beak_len = 0.10 if bird.species.beak_length == "short" else 0.24
    hx, hy = 0.31 + bird.head_offset[0], -0.17 + bird.head_offset[1]
    head_r = 0.16
    shapes: list[tuple[str, str, Any]] = []
    # tail: a fan behind the body, swung by the pose
    tail = np.array([[-0.20, -0.07], [-0.60, -0.12], [-0.64, 0.00], [-0.60, 0.10], [-0.20, 0.07]])
    shapes.append(("tail", "poly", _rotate(tail, bird.tail_angle, about=(-0.22, 0.0))))
    for dx in (0.0, 0.08):  # two legs with toes
        leg = np.array([[0.02 + dx, 0.14], [0.0 + dx, 0.33]])
        shapes.append(("legs", "line", (leg, 0.028)))
        shapes.append(("legs", "line", (np.array([[-0.03 + dx, 0.34], [0.0 + dx, 0.33], [0.06 + dx, 0.345]]), 0.022)))
    shapes.append(("body", "poly", _ellipse(0.0, 0.0, 0.33, 0.22, rot=8.0)))
    shapes.append(("belly", "clip", _ellipse(-0.08, 0.17, 0.24, 0.11, rot=4.0)))
    shapes.append(("breast", "clip", _ellipse(0.21, 0.10, 0.15, 0.14, rot=20.0)))
    # wing: a teardrop on the upper body, tip pointing back and down
    t = np.deg2rad(np.linspace(0.0, 360.0, 48, endpoint=False))
    wing = np.stack([0.16 * np.cos(t), 0.085 * np.sin(t)], axis=1)
    wing[:, 0] = np.where(wing[:, 0] < 0, wing[:, 0] * 1.55, wing[:, 0])
    wing = _rotate(wing, -14.0 + bird.wing_angle) + np.array([-0.05, -0.045])
    shapes.append(("wing", "poly", wing))
    shapes.append(("head", "poly", _ellipse(hx, hy, head_r, head_r)))
    # crown: the top ~40% of the head, a cap slightly wider than the head
    crown = _ellipse(hx - 0.005, hy - 0.004, head_r * 1.05, head_r * 1.06, start=192.0, stop=348.0, n=32)
    shapes.append(("crown", "poly", crown))
    # beak: upper and lower mandible as one triangle leaving the front of the head
    base_top = np.array([hx + head_r * math.cos(math.radians(-28)), hy + head_r * math.sin(math.radians(-28))])
    base_bot = np.array([hx + head_r * math.cos(math.radians(30)), hy + head_r * math.sin(math.radians(30))])
    tip = np.array([hx + head_r + beak_len, hy + 0.035])
    shapes.append(("beak", "poly", np.stack([base_top - [0.02, 0.0], tip, base_bot - [0.02, 0.0]])))
    shapes.append(("eye", "poly", _ellipse(hx + 0.055, hy + 0.015, 0.03, 0.03, n=20)))
    shapes.append(("eye", "spot", _ellipse(hx + 0.065, hy + 0.005, 0.011, 0.011, n=12)))
    return shapes


def draw_bird(bird: Bird, image_size: int) -> tuple[Image.Image, np.ndarray, tuple[int, int, int, int]]:
    """Render one bird.

    Args:
        bird: the species scheme and per-image variation.
        image_size: side of the square image in pixels.

    Returns:
        ``(image, part_map, bbox)``: the RGB image ``[image_size, image_size]``; ``part_map`` uint8
        ``[H, W]`` holding :data:`PART_LABELS` values of the visible part at each pixel (0 = background);
        ``bbox = (x, y, width, height)`` of the drawn bird in pixels, as CUB's bounding boxes.
    """
    s = image_size
    shapes = _bird_shapes(bird)
    # scale and place: bird-unit extents -> pixels, then the box centre at a random spot that fits
    pts = np.concatenate([g[0] if kind == "line" else g for _, kind, g in shapes])
    pts = _rotate(pts, bird.tilt)
    extent = pts.max(0) - pts.min(0)
    scale = bird.width_fraction * s / extent[0]
    scale = min(scale, 0.9 * s / extent[1])
    margin = 0.04 * s
    half = extent * scale / 2
    lo, hi = margin + half, s - margin - half
    box_centre = lo + np.asarray(bird.centre) * np.maximum(hi - lo, 0.0)
    mid = (pts.max(0) + pts.min(0)) / 2

    ss = _SUPERSAMPLE
    flip = -1.0 if bird.facing == "left" else 1.0

    def to_px(p: np.ndarray) -> list[tuple[float, float]]:
        q = (_rotate(p, bird.tilt) - mid) * scale + box_centre
        if flip < 0:  # facing left: mirror about the image's vertical midline
            q[:, 0] = s - q[:, 0]
        return [(float(x * ss), float(y * ss)) for x, y in q]

    big = (s * ss, s * ss)
    colour_layer = Image.new("RGB", big, (0, 0, 0))
    alpha = Image.new("L", big, 0)
    parts_big = Image.new("L", big, 0)
    layers = [colour_layer, parts_big, alpha]
    pens = [ImageDraw.Draw(layer) for layer in layers]
    body_mask = Image.new("L", big, 0)
    for part, kind, geom in shapes:
        fills = (COLOURS[bird.species.colours[part]], PART_LABELS[part], 255)
        if kind == "clip":  # belly and breast never spill outside the body
            mask = Image.new("L", big, 0)
            ImageDraw.Draw(mask).polygon(to_px(geom), fill=255)
            mask = ImageChops.multiply(mask, body_mask)
            for layer, fill in zip(layers, fills):
                layer.paste(fill, mask=mask)
            continue
        if kind == "spot":
            pens[0].polygon(to_px(geom), fill=(235, 235, 235))
            continue
        targets = list(zip(pens, fills))
        if part == "body":
            targets.append((ImageDraw.Draw(body_mask), 255))
        for pen, fill in targets:
            if kind == "line":
                line, width = geom
                pen.line(to_px(line), fill=fill, width=max(1, round(width * scale * ss)), joint="curve")
            else:
                pen.polygon(to_px(geom), fill=fill)

    # antialias by box-downsampling the premultiplied colour layer and the coverage
    colour_small = np.asarray(colour_layer.reduce(ss), dtype=np.float32)
    alpha_small = np.asarray(alpha.reduce(ss), dtype=np.float32)[..., None] / 255.0
    part_map = np.asarray(parts_big.resize((s, s), Image.NEAREST), dtype=np.uint8).copy()

    ys, xs = np.nonzero(alpha_small[..., 0] > 0.25)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1

    # mild shading: lit from above, darker underneath; global brightness jitter
    rows = np.arange(s, dtype=np.float32)[:, None, None]
    shade = bird.brightness * (1.0 + bird.shading * (0.5 - np.clip((rows - y0) / max(y1 - y0, 1), 0.0, 1.0)))
    bird_rgb = colour_small * shade

    bg = BACKGROUNDS[bird.background]
    top = np.clip(np.asarray(bg.top) + bird.bg_jitter, 0, 255).astype(np.float32)
    bottom = np.clip(np.asarray(bg.bottom) + bird.bg_jitter, 0, 255).astype(np.float32)
    if bird.gradient:
        w = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    else:
        w = np.full((s, 1, 1), 0.5, dtype=np.float32)
    background = top * (1 - w) + bottom * w  # [S, 1, 3], broadcast over columns
    out = bird_rgb + background * (1.0 - alpha_small)
    image = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    return image, part_map, (x0, y0, x1 - x0, y1 - y0)
