"""Image loading (modes, corrupt files), AttnGAN's crop rule, and the image pyramid."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageFile

from t2i.data.images import ImagePyramid, crop_box, load_image
from t2i.errors import DataError


@pytest.mark.parametrize("size, bbox, expected", [
    # r = int(max(w,h)*0.75); centre = int((2x+w)/2), int((2y+h)/2); clip to the image
    ((500, 400), (100, 50, 200, 100), (50, 0, 350, 250)),        # r=150, c=(200,100): top clipped
    ((500, 375), (60.7, 27.2, 325.9, 304.3), (0, 0, 465, 375)),  # floats truncated: (60,27,325,304), r=243
    ((100, 80), (80, 60, 20, 20), (75, 55, 100, 80)),            # r=15, c=(90,70): right+bottom clipped
    ((300, 300), (100, 100, 40, 40), (90, 90, 150, 150)),        # r=30, c=(120,120): no clipping
    ((300, 300), (101, 101, 41, 40), (91, 91, 151, 151)),        # c=int(243/2)=121, r=int(30.75)=30
])
def test_crop_box_hand_computed(size, bbox, expected):
    assert crop_box(*size, bbox) == expected


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"),
                                       ("LA", "PNG"), ("1", "PNG"), ("I;16", "PNG")])
def test_modes_become_rgb(tmp_path, write_image_file, mode, fmt):
    path = write_image_file(tmp_path / f"img.{fmt.lower()}", (33, 21), mode=mode, fmt=fmt)
    if mode == "P":  # palette with transparency
        img = Image.open(path)
        img.save(path, transparency=0)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (33, 21)
    if mode == "L":
        arr = np.asarray(out)
        assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


def test_bbox_crop_applied(tmp_path, write_image_file):
    path = write_image_file(tmp_path / "a.jpg", (100, 80))
    assert load_image(path, bbox=(80, 60, 20, 20)).size == (25, 25)  # (75,55,100,80)


def test_truncated_corrupt_missing_named(tmp_path, write_image_file):
    path = write_image_file(tmp_path / "trunc.jpg", (120, 90))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="trunc.jpg"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all" * 10)
    with pytest.raises(DataError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    with pytest.raises(DataError, match="missing.jpg"):
        load_image(tmp_path / "missing.jpg")


def test_pyramid_sizes_and_range(tmp_path, write_image_file):
    img = load_image(write_image_file(tmp_path / "a.jpg", (90, 70)))
    pyr = ImagePyramid(base_size=16, num_stages=3, train=True)
    assert pyr.sizes == [16, 32, 64] and pyr.load_size == 76  # int(64 * 76 / 64)
    out = pyr(img, generator=torch.Generator().manual_seed(0))
    assert [tuple(t.shape) for t in out] == [(3, 16, 16), (3, 32, 32), (3, 64, 64)]
    for t in out:
        assert t.dtype == torch.float32 and t.min() >= -1 and t.max() <= 1
    assert out[-1].min() < -0.8 and out[-1].max() > 0.8  # noise image spans the range
    # smaller stages are resizes of the final crop (AttnGAN get_imgs)
    final = Image.fromarray(((out[-1] + 1) / 2 * 255).round().byte().permute(1, 2, 0).numpy())
    assert torch.allclose(out[0], TF.to_tensor(TF.resize(final, 16)) * 2 - 1, atol=1e-6)


def test_pyramid_eval_is_centre_crop(tmp_path, write_image_file):
    img = load_image(write_image_file(tmp_path / "a.jpg", (90, 70)))
    pyr = ImagePyramid(base_size=16, num_stages=2, train=False)
    a, b = pyr(img), pyr(img)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    resized = TF.resize(img, 38)  # int(32 * 76 / 64) on the shorter side -> 48x38
    assert resized.size == (48, 38)
    expected = TF.to_tensor(resized.crop((8, 3, 40, 35))) * 2 - 1
    assert torch.allclose(a[-1], expected, atol=1e-6)


def test_pyramid_train_flips_sometimes(tmp_path):
    arr = np.zeros((64, 64, 3), dtype=np.uint8)
    arr[:, 32:] = 255  # left black, right white
    img = Image.fromarray(arr)
    pyr = ImagePyramid(base_size=32, num_stages=1, train=True)
    flipped = []
    for seed in range(16):
        t = pyr(img, generator=torch.Generator().manual_seed(seed))[0]
        flipped.append(bool(t[:, :, :4].mean() > t[:, :, -4:].mean()))
    assert any(flipped) and not all(flipped)
    with pytest.raises(ValueError):
        ImagePyramid(base_size=0)
