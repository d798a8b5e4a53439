"""Pictures (t2i/visualize.py): pixel values, grid and sheet sizes, attention figures, canvas strips and GIFs."""

import numpy as np
import torch
from PIL import Image

from t2i.visualize import (attention_figure, canvas_strip, captioned_grid, grid_image, save_canvas_gif, save_image,
                           to_pil)


def test_to_pil_maps_minus_one_to_black_and_one_to_white():
    image = torch.stack([torch.full((2, 2), -1.0), torch.zeros(2, 2), torch.ones(2, 2)])
    array = np.asarray(to_pil(image))
    assert array.shape == (2, 2, 3) and array[0, 0].tolist() == [0, 128, 255]
    assert np.asarray(to_pil(torch.ones(1, 2, 2)))[0, 0].tolist() == [255, 255, 255]  # grey -> RGB


def test_grid_and_captioned_sheet_sizes(tmp_path):
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    grid = grid_image(images, nrow=3, padding=2)
    assert grid.size == (3 * 10 + 2, 2 * 10 + 2)
    sheet = captioned_grid(images, ["a red bird"] * 5, ncol=4, cell=32, text_lines=2)
    assert sheet.size == (4 * 32, 2 * (32 + 12 * 2 + 4))
    path = save_image(sheet, tmp_path / "sheet.png")
    assert Image.open(path).size == sheet.size and not list(tmp_path.glob("*.tmp"))


def test_attention_figure_lights_the_attended_region():
    image = torch.ones(3, 8, 8) * 0.8
    attn = torch.zeros(2, 4, 4)
    attn[0, :2, :2] = 1.0  # word 0 attends to the top-left corner
    attn[1, 2:, 2:] = 1.0
    fig = attention_figure([image], [attn], ["red", "crown"], cell=16)
    assert fig.size == (3 * 16, 16 + 14)
    cell = np.asarray(fig)[14:, 16:32].astype(float).mean(axis=2)  # word 0's cell
    assert cell[:4, :4].mean() > cell[-4:, -4:].mean() + 50


def test_canvas_strip_keeps_the_last_frame_and_the_gif_has_every_frame(tmp_path):
    canvases = torch.linspace(-1, 1, 5)[:, None, None, None].expand(5, 3, 6, 6)
    strip = canvas_strip(canvases, every=3)  # frames 0, 3 and the last one
    assert strip.size == (3 * 8 + 2, 8 + 2)
    path = save_canvas_gif(canvases, tmp_path / "c.gif", scale=2)
    gif = Image.open(path)
    assert gif.n_frames == 5 and gif.size == (12, 12)
