"""R-precision on constructed vectors: hits, ties, fold bookkeeping, mismatched-caption sampling."""

import numpy as np
import pytest
import torch

from t2i.errors import DataError
from t2i.metrics.r_precision import (caption_hits, fold_means, r_precision, r_precision_ceiling,
                                     sample_mismatched_captions)


def _loop_hits(img, true, mis):
    out = []
    for i in range(len(img)):
        cands = torch.cat([true[i:i + 1], mis[i]]).double()
        cos = [float(img[i].double() @ c / max(float(img[i].double().norm() * c.norm()), 1e-8)) for c in cands]
        out.append(int(np.argmax(cos)) == 0)  # np.argmax returns the first maximum, as torch.argmax in DM-GAN
    return np.array(out)


def test_hits_match_a_loop_with_argmax():
    gen = torch.Generator().manual_seed(0)
    img, true, mis = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen), torch.randn(40, 9, 8, generator=gen)
    true[:20] = img[:20] * 3 + 0.01 * torch.randn(20, 8, generator=gen)  # half of them aligned
    hits = caption_hits(img, true, mis).numpy()
    np.testing.assert_array_equal(hits, _loop_hits(img, true, mis))
    assert hits[:20].all() and hits.mean() < 1


def test_ties_count_as_hits_and_scale_does_not_matter():
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    true = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    mis = torch.tensor([[[5.0, 0.0], [0.0, 1.0]],      # tie at cosine 1 -> hit (argmax picks index 0)
                        [[1.0, 0.0], [0.0, 1.0]],      # a mismatched caption wins -> miss
                        [[1.0, 1.0], [-1.0, 0.0]]])    # exact tie below 1 -> hit
    np.testing.assert_array_equal(caption_hits(img, true, mis).numpy(), [True, False, True])


def test_fold_bookkeeping_with_and_without_dropping():
    hits = np.zeros(30)
    hits[[2, 9, 12, 29]] = 1  # folds of 3 (k*N//10): indices 2 and 29 are last in their folds
    np.testing.assert_allclose(fold_means(hits, 10), [1 / 3, 0, 0, 1 / 3, 1 / 3, 0, 0, 0, 0, 1 / 3])
    np.testing.assert_allclose(fold_means(hits, 10, drop_last_per_fold=True), [0, 0, 0, 1 / 2, 1 / 2, 0, 0, 0, 0, 0])
    uneven = np.arange(23) % 2  # boundaries 0,2,4,6,9,11,13,16,18,20,23: every sample is counted
    bounds = [k * 23 // 10 for k in range(11)]
    expected = [uneven[bounds[k]:bounds[k + 1]].mean() for k in range(10)]
    np.testing.assert_allclose(fold_means(uneven, 10), expected)
    assert sum(bounds[k + 1] - bounds[k] for k in range(10)) == 23


def test_r_precision_mean_std_and_dmgan_dropping():
    n, d = 50, 4
    img = torch.eye(d)[torch.arange(n) % d]
    true = img.clone()
    mis = -img[:, None].expand(n, 99, d).clone()
    true[torch.arange(n) % 5 == 4] *= -1  # every 5th image: true caption opposite -> miss (a tie with mis: hit)
    true[torch.arange(n) % 5 == 4] += 0.5 * torch.ones(d)
    mean, std, hits = r_precision(img, true, mis)
    assert hits.dtype == bool and hits.shape == (n,)
    assert mean == pytest.approx(hits.mean()) and std == pytest.approx(0.0)  # each fold of 5 has one miss
    mean_d, std_d, _ = r_precision(img, true, mis, drop_last_per_fold=True)  # the miss is always last: dropped
    assert mean_d == pytest.approx(1.0) and std_d == pytest.approx(0.0)
    shuffled = r_precision(img, true, mis, rng=np.random.default_rng(0))
    assert shuffled[0] == pytest.approx(mean)  # shuffling keeps the overall mean when folds are equal


def test_r_precision_errors():
    with pytest.raises(DataError, match="shapes disagree"):
        caption_hits(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 99, 5))
    with pytest.raises(DataError, match="at least 10"):
        r_precision(torch.ones(9, 2), torch.ones(9, 2), torch.ones(9, 3, 2))


def test_sample_mismatched_captions_other_classes_only():
    class_ids = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    idx = sample_mismatched_captions(class_ids, n=99, rng=0)
    assert idx.shape == (8, 99) and idx.dtype == np.int64
    for i, row in enumerate(idx):
        assert (class_ids[row] != class_ids[i]).all()
    assert set(idx[0]) == {2, 3, 4, 5, 6, 7}  # with replacement, 99 draws cover all 6 candidates
    pool = np.array([5, 5, 0])
    assert (sample_mismatched_captions([5, 0], n=4, rng=1, pool_class_ids=pool)[0] == 2).all()
    np.testing.assert_array_equal(sample_mismatched_captions(class_ids, rng=3), sample_mismatched_captions(class_ids, rng=3))
    with pytest.raises(DataError, match="other than"):
        sample_mismatched_captions([1, 1, 1], n=2)


def test_ceiling_by_hand():
    # 4 images; part frequencies: crown red 2/4, crown blue 2/4, wing black 3/4, wing white 1/4
    images = [{"crown": "red", "wing": "black"}, {"crown": "red", "wing": "white"},
              {"crown": "blue", "wing": "black"}, {"crown": "blue", "wing": "black"}]
    claims = [{"crown": "red"},                      # 0: true caption of image 0
              {"wing": "white"},                     # 1: true caption of image 1 (rare: log 4)
              {"crown": "blue", "wing": "black"},    # 2
              {"wing": "black"},                     # 3
              {"crown": "red", "wing": "black"}]     # 4: extra pool caption, more specific than caption 0
    mismatched = np.array([[2, 3],    # image 0: 2 contradicts, 3 fits with log(4/3) < log 2 -> outright hit
                           [2, 3],    # image 1: both contradict -> hit
                           [3, 3],    # image 2: true (log 2 + log 4/3) beats 3 (log 4/3) twice -> hit
                           [4, 0]])   # image 3: both contradict ... -> hit
    _, _, hits = r_precision_ceiling(images, claims, mismatched, folds=1)
    np.testing.assert_allclose(hits, [1.0, 1.0, 1.0, 1.0])
    mismatched = np.array([[4, 3],    # 4 fits image 0 and scores log 2 + log 4/3 > log 2 -> miss
                           [1, 1],    # the same caption twice ties twice -> 1/3
                           [2, 2],    # ties twice -> 1/3
                           [1, 0]])   # 1 (white wing) and 0 (red crown) contradict image 3 -> hit
    mean, std, hits = r_precision_ceiling(images, claims, mismatched, folds=2)
    np.testing.assert_allclose(hits, [0.0, 1 / 3, 1 / 3, 1.0])
    assert mean == pytest.approx(np.mean(hits)) and std == pytest.approx(0.25)
    _, _, hits = r_precision_ceiling(images, claims, np.array([[1, 2], [0, 0], [0, 0], [2, 2]]), folds=1)
    np.testing.assert_allclose(hits[3], 0.0)  # caption 2 (blue crown, black wing) says more about image 3 than its own


def test_ceiling_is_one_when_every_other_caption_contradicts():
    images = [{"crown": c} for c in ("red", "blue", "green", "black")]
    claims = [dict(im) for im in images]
    mismatched = sample_mismatched_captions(np.arange(4), 5, rng=0)
    mean, std, _ = r_precision_ceiling(images, claims, mismatched, folds=2)
    assert (mean, std) == (1.0, 0.0)


def test_true_first_is_the_one_ranking_rule_ties_included():
    import torch

    from t2i.metrics.r_precision import true_first

    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.1], [0.4, 0.4, 0.0]])
    assert true_first(scores).tolist() == [True, False, True]
