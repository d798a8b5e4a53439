"""Resize/normalisation profiles on tiny exact matrices."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2i.errors import ConfigError
from t2i.metrics.profiles import PROFILES, bilinear_matrix, get_profile, resize_bilinear, to_uint8

GRID = torch.tensor([[0.0, 1.0], [2.0, 3.0]], dtype=torch.float64)[None, None]


def test_bilinear_2x2_to_4x4_by_hand():
    r = torch.tensor([0, 0.25, 0.75, 1], dtype=torch.float64)  # half-pixel: src = (i + .5) / 2 - .5, clamped
    torch.testing.assert_close(resize_bilinear(GRID, (4, 4), "half_pixel")[0, 0], 2 * r[:, None] + r[None])
    a = torch.arange(4, dtype=torch.float64) / 3  # align corners: src = i / 3
    torch.testing.assert_close(resize_bilinear(GRID, (4, 4), "align_corners")[0, 0], 2 * a[:, None] + a[None])
    t = torch.tensor([0, 0.5, 1, 1], dtype=torch.float64)  # TF1 legacy: src = i / 2, border repeated
    torch.testing.assert_close(resize_bilinear(GRID, (4, 4), "tf1_legacy")[0, 0], 2 * t[:, None] + t[None])


@pytest.mark.parametrize("align", [False, True])
@pytest.mark.parametrize("sizes", [(5, 11), (13, 4), (7, 7)])
def test_bilinear_matrix_matches_torch_interpolate(align, sizes):
    x = torch.rand(1, 2, sizes[0], sizes[0] + 1, dtype=torch.float64)
    out = (sizes[1], sizes[1] + 2)
    expected = F.interpolate(x, size=out, mode="bilinear", align_corners=align)
    got = resize_bilinear(x, out, "align_corners" if align else "half_pixel")
    torch.testing.assert_close(got, expected)
    assert torch.allclose(bilinear_matrix(sizes[0], sizes[1], "tf1_legacy").sum(1), torch.ones(sizes[1], dtype=torch.float64))


def test_profiles_shapes_ranges_and_names():
    images = torch.rand(2, 3, 16, 24) * 2 - 1
    for name, profile in PROFILES.items():
        out = profile(images)
        assert profile.name == name and out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    const = torch.full((1, 3, 8, 8), 1.0)  # white
    assert torch.allclose(get_profile("pytorch-fid")(const), torch.ones(1))
    assert torch.allclose(get_profile("tf1")(const), torch.tensor(127 / 128))  # (255 - 128) / 128
    black = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    assert torch.allclose(get_profile("clean-fid")(black), torch.tensor(-1.0))


def test_pytorch_fid_profile_is_interpolate_then_2x_minus_1():
    images = torch.rand(1, 3, 10, 10) * 2 - 1
    expected = 2 * F.interpolate((images + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(get_profile("pytorch-fid")(images), expected)
    as_uint8 = torch.randint(0, 256, (1, 3, 5, 5), dtype=torch.uint8)
    expected = 2 * F.interpolate(as_uint8.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(get_profile("pytorch-fid")(as_uint8), expected)


def test_tf1_profile_samples_legacy_coordinates():
    images = torch.randint(0, 256, (1, 3, 13, 17), dtype=torch.uint8)
    out = get_profile("tf1")(images)
    # output pixel (i, j) samples input (i * 13 / 299, j * 17 / 299); at i = j = 0 and multiples it is exact
    assert torch.allclose(out[0, :, 0, 0], (images[0, :, 0, 0].float() - 128) / 128)
    src = 100 * 17 / 299  # column 100 lies between input columns 5 and 6
    f = src - 5
    expected = (1 - f) * images[0, :, 0, 5].double() + f * images[0, :, 0, 6].double()
    assert torch.allclose(out[0, :, 0, 100].double(), (expected - 128) / 128, atol=1e-6)
    i = 23  # 23 * 13 / 299 = 1.0 exactly
    assert torch.allclose(out[0, :, i, 0], (images[0, :, 1, 0].float() - 128) / 128, atol=1e-6)


def test_clean_fid_profile_is_pil_bicubic_in_float():
    row = torch.tensor([[0, 255], [0, 255]], dtype=torch.uint8)
    images = row.expand(1, 3, 2, 2)
    out = get_profile("clean-fid")(images) * 128 + 128  # back to pixel values
    # PIL bicubic (a = -0.5) upsampling 2 -> 299 columns, at column 0: center 1/598, taps at 0 and 1
    def keys(x):
        x = abs(x)
        return 1.5 * x ** 3 - 2.5 * x ** 2 + 1 if x < 1 else -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2
    center = 0.5 * 2 / 299
    w0, w1 = keys(0 + 0.5 - center), keys(1 + 0.5 - center)
    # the bicubic overshoot at column 0 (255 * w1 / (w0 + w1) = -31.8) is clipped to 0, as clean-fid does
    assert 255 * w1 / (w0 + w1) == pytest.approx(-31.82, abs=0.01) and out[0, 0, 0, 0].item() == 0.0
    c = 149  # an interior column: no overshoot, the plain bicubic value
    center = (c + 0.5) * 2 / 299
    w0, w1 = keys(0 + 0.5 - center), keys(1 + 0.5 - center)
    assert out[0, 0, 0, c].item() == pytest.approx(255 * w1 / (w0 + w1), abs=1e-3)
    assert torch.allclose(out[0, :, :, 0], out[0, :, :1, 0])  # rows constant, channels equal


def test_to_uint8_rounds_like_png_writers_and_unknown_profile():
    x = torch.tensor([-1.0, -0.99, 0.0, 0.999, 1.0, 1.5]).view(1, 1, 1, 6)
    np.testing.assert_array_equal(to_uint8(x).flatten().tolist(), [0, 1, 128, 255, 255, 255])
    with pytest.raises(ConfigError, match="pytorch-fid, tf1, clean-fid, stackgan-cub"):
        get_profile("torchvision")
