"""DiffAugment: translation and cutout move/zero exactly what they should, stay differentiable, reproduce a draw."""

import pytest
import torch

from t2i.augment import cutout, diff_augment, parse_policy, translate


def test_translation_shifts_by_whole_pixels_with_zero_padding():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) + 1  # no zeros in the input
    out = translate(x, ratio=0.25, generator=torch.Generator().manual_seed(3))
    for i in range(2):
        # find the shift: every non-padded output pixel equals the input pixel (dy, dx) away
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = torch.zeros_like(x[i])
                src = x[i][:, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
                shifted[:, max(0, dy):8 - max(0, -dy), max(0, dx):8 - max(0, -dx)] = src
                found |= torch.equal(out[i], shifted)
        assert found


def test_cutout_zeroes_one_square_of_the_ratio_and_keeps_the_rest():
    x = torch.ones(16, 3, 8, 8)
    out = cutout(x, ratio=0.5, generator=torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1)  # (B, H, W): channels cut together
    for mask in zeros:
        assert 0 < mask.sum() <= 16  # a 4x4 square, clipped at the border
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # one rectangle
    assert ((out == 0) | (out == 1)).all()


def test_diff_augment_is_differentiable_and_reproducible():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(x, "translation,cutout,color", generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, "translation,cutout,color", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, None) is not None and torch.equal(diff_augment(x, ""), x)


def test_policy_names_are_checked():
    assert parse_policy("translation, cutout") == ("translation", "cutout")
    assert parse_policy(None) == ()
    with pytest.raises(ValueError, match="unknown augmentation 'flip'"):
        parse_policy("translation,flip")
