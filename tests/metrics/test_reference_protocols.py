"""The metric protocol fixes of issue #18, each against a hand-computed or reference-library value.

Each test also pins the value t2i computed before the fix, so the change is visible (README "Metrics").
"""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from t2i.metrics.inception import FIDInceptionV3
from t2i.metrics.inception_score import inception_score
from t2i.metrics.profiles import get_profile, resize_bilinear
from t2i.metrics.r_precision import caption_hits, r_precision, shuffled_fold_means


def test_inception_logits_are_unbiased_pool3_times_weights():
    torch.manual_seed(0)
    model = FIDInceptionV3(num_classes=1008).eval()
    with torch.no_grad():
        model.fc.bias.normal_(0, 3.0)  # a large bias makes the difference visible
        pool, logits = model(torch.rand(4, 3, 75, 75) * 2 - 1)
        biased = model.fc(pool)
    torch.testing.assert_close(logits, pool @ model.fc.weight.T)  # improved-gan / torch-fidelity logits_unbiased
    assert not torch.allclose(logits, biased)
    # the score moves with the bias: IS of 20 feature vectors with and without it
    g = torch.Generator().manual_seed(0)
    feats = torch.rand(20, 2048, generator=g) * 0.05
    weight, bias = torch.randn(1008, 2048, generator=g), torch.randn(1008, generator=g) * 3
    before = inception_score(feats @ weight.T + bias, splits=2)[0]
    after = inception_score(feats @ weight.T, splits=2)[0]
    assert before != pytest.approx(after, rel=1e-3)


def test_stackgan_cub_inception_score_follows_the_published_protocol():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, size=(130, 51))  # StackGAN's classifier: background + 50 test classes
    got = inception_score(logits, splits=10, skip_first=True, batch_size=64, rng=7)
    # StackGAN-inception-model/inception_score.py: shuffle, floor(N / 64) batches of 64, softmax of logits[:, 1:]
    kept = logits[np.random.default_rng(7).permutation(130)][:128, 1:]
    preds = np.exp(kept - kept.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(10):
        part = preds[i * 128 // 10:(i + 1) * 128 // 10]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    assert got == pytest.approx((np.mean(scores), np.std(scores)), rel=1e-9)
    before = inception_score(logits, splits=10)  # all 51 logits, all 130 images, in order
    assert before[0] != pytest.approx(got[0], rel=1e-3)


def test_stackgan_cub_profile_is_pil_bilinear_on_uint8_then_scaled():
    torch.manual_seed(2)
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    out = get_profile("stackgan-cub")(images)
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    hwc = images[1].permute(1, 2, 0).numpy()
    resized = np.asarray(Image.fromarray(hwc, "RGB").resize((299, 299), Image.BILINEAR)).astype(np.float32)
    np.testing.assert_array_equal(out[1].permute(1, 2, 0).numpy(), resized / 127.5 - 1)  # [0, 255] -> [-1, 1]
    assert out.min() >= -1 and out.max() <= 1


def _tf1_pixel(image: np.ndarray, i: int, j: int, out: int = 299) -> np.float32:
    """One output pixel of TF1's ResizeBilinear (legacy coordinates) by hand, scalar float32 arithmetic."""
    f32 = np.float32

    def coords(k, size):
        src = f32(k) * (f32(size) / f32(out))
        lo = int(np.floor(src))
        return lo, min(int(np.ceil(src)), size - 1), f32(src - f32(lo))

    y0, y1, yl = coords(i, image.shape[0])
    x0, x1, xl = coords(j, image.shape[1])
    tl, tr, bl, br = (f32(image[a, b]) for a, b in ((y0, x0), (y0, x1), (y1, x0), (y1, x1)))
    top = f32(tl + f32(f32(tr - tl) * xl))
    bottom = f32(bl + f32(f32(br - bl) * xl))
    return f32(f32(top + f32(f32(bottom - top) * yl)) - f32(128)) / f32(128)


def test_tf1_profile_computes_in_float32_like_tf1():
    torch.manual_seed(3)
    images = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    out = get_profile("tf1")(images)
    channel = images[0, 1].numpy()
    for i, j in [(0, 0), (1, 298), (150, 77), (298, 298), (37, 211)]:
        assert out[0, 1, i, j].item() == _tf1_pixel(channel, i, j)  # bit-exact
    # before: the same coordinates in float64, rounded to float32 at the end
    before = ((resize_bilinear(images.double(), (299, 299), "tf1_legacy") - 128) / 128).float()
    diff = (before - out).abs()
    assert 0 < diff.max().item() < 1e-4 and (diff > 0).float().mean().item() > 0.01


def test_r_precision_folds_are_shuffled_by_default_with_the_seed():
    hits = np.array([True] * 10 + [False] * 10)  # in generation order the folds would be [1, 0]
    vec = torch.eye(2)
    image = vec[torch.from_numpy((~hits).astype(np.int64))]  # a hit: true caption == image
    true = vec[torch.zeros(20, dtype=torch.long)]
    mismatched = vec[torch.ones(20, 1, dtype=torch.long)] * 0.5 + vec[torch.zeros(20, 1, dtype=torch.long)] * 0.1
    mean, std, got_hits = r_precision(image, true, mismatched, folds=2)
    np.testing.assert_array_equal(got_hits, hits)
    perm = np.random.default_rng(0).permutation(20)  # the default shuffle_seed
    folds = [hits[perm[:10]].mean(), hits[perm[10:]].mean()]
    assert (mean, std) == pytest.approx((np.mean(folds), np.std(folds)))
    assert r_precision(image, true, mismatched, folds=2, shuffle_seed=None)[:2] == pytest.approx((0.5, 0.5))  # before
    np.testing.assert_array_equal(shuffled_fold_means(hits, 2, shuffle_seed=3), shuffled_fold_means(hits, 2, shuffle_seed=3))


def test_zero_image_vector_is_a_hit_with_a_warning(caplog):
    image = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    true = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mismatched = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    with caplog.at_level(logging.WARNING, logger="t2i.metrics.r_precision"):
        hits = caption_hits(image, true, mismatched)
    assert hits.tolist() == [True, False]  # all scores 0: argmax picks the true caption, as in DM-GAN
    assert "1 of 2 image vectors are all zero" in caplog.text
