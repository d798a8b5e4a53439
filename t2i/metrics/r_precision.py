"""R-precision (Xu et al. 2018, AttnGAN §5), with DM-GAN's protocol as a pure function.

For every generated image, its true caption and 99 captions of other classes are scored by the cosine between
the DAMSM image vector and each sentence vector; the image is a hit when the true caption ranks first. DM-GAN
(``code/trainer.py``, ``sampling``) does exactly this per image: cosine with the norm product clamped at 1e-8,
hit when ``torch.argmax(scores) == 0``. ``argmax`` returns the *first* maximum and the true caption is index 0,
so a tie with a mismatched caption counts as a hit; we keep that rule (``true >= every other``). In particular an
all-zero image vector (a blank or diverged image through some encoders) scores 0 against every caption and is a
hit; it is kept as in the reference, with a warning naming how many there were.

Folds: DM-GAN shuffles the 30,000 hits, splits them into 10 folds of 3,000, and averages ``R[i*3000:(i+1)*3000-1]``,
so the last sample of every fold is dropped (2,999 per fold). By default every sample is counted (fold ``k`` is
``hits[k*N//F:(k+1)*N//F]``); ``drop_last_per_fold=True`` reproduces DM-GAN's bookkeeping. The hits are shuffled
before folding, as DM-GAN does, by default with a seeded generator (``shuffle_seed=0``, recorded by the evaluation
driver with the result); ``shuffle_seed=None`` folds in generation order. The std is over fold means with ddof 0.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping, Sequence

import numpy as np
import torch

from t2i.errors import DataError

log = logging.getLogger(__name__)


def true_first(scores: torch.Tensor) -> torch.Tensor:
    """``[N]`` bool: the true candidate (column 0 of ``scores [N, 1+M]``) ranks first; a tie counts as a hit.

    The ranking rule of every R-precision here, whatever the score: the sentence cosine
    (:func:`caption_hits`) or DAMSM's word-level R(Q, D) (the DAMSM trainer's ``r_precision_word``).
    """
    return scores[:, 0] >= scores[:, 1:].max(dim=1).values


def caption_hits(image_vecs: torch.Tensor, true_sent_vecs: torch.Tensor, mismatched_sent_vecs: torch.Tensor) -> torch.Tensor:
    """Whether each image's true caption ranks first among its candidates.

    Args:
        image_vecs: ``[N, D]`` DAMSM image (global) vectors.
        true_sent_vecs: ``[N, D]`` sentence vectors of each image's own caption.
        mismatched_sent_vecs: ``[N, M, D]`` sentence vectors of M (99) captions of other classes.

    Returns:
        ``[N]`` bool, True where cos(image, true) >= cos(image, every mismatched caption).
    """
    if image_vecs.shape != true_sent_vecs.shape or mismatched_sent_vecs.dim() != 3 or \
            mismatched_sent_vecs.shape[0::2] != image_vecs.shape:
        raise DataError(f"R-precision shapes disagree: images {tuple(image_vecs.shape)}, true captions "
                        f"{tuple(true_sent_vecs.shape)}, mismatched {tuple(mismatched_sent_vecs.shape)} (want [N, D], [N, D], [N, M, D])")
    image_vecs = image_vecs.double()
    candidates = torch.cat([true_sent_vecs.double()[:, None], mismatched_sent_vecs.double()], dim=1)  # [N, 1+M, D]
    dots = torch.einsum("nd,nmd->nm", image_vecs, candidates)  # [N, 1+M]
    norms = image_vecs.norm(dim=1, keepdim=True) * candidates.norm(dim=2)  # [N, 1+M]
    scores = dots / norms.clamp(min=1e-8)
    zero = int((image_vecs.abs().sum(dim=1) == 0).sum())
    if zero:
        log.warning("R-precision: %d of %d image vectors are all zero; each scores 0 against every caption and counts "
                    "as a hit, as in the reference (DM-GAN's argmax picks the true caption on ties)", zero, len(image_vecs))
    return true_first(scores)


def fold_means(hits: np.ndarray, folds: int = 10, drop_last_per_fold: bool = False) -> np.ndarray:
    """Mean of ``hits [N]`` in each of ``folds`` contiguous folds at ``k*N//folds`` boundaries."""
    n = len(hits)
    if n < folds * (2 if drop_last_per_fold else 1):
        raise DataError(f"R-precision with {folds} folds needs at least {folds * (2 if drop_last_per_fold else 1)} images, got {n}")
    bounds = [k * n // folds for k in range(folds + 1)]
    return np.array([hits[bounds[k]:bounds[k + 1] - int(drop_last_per_fold)].mean() for k in range(folds)])


def shuffled_fold_means(hits: np.ndarray, folds: int = 10, drop_last_per_fold: bool = False,
                        shuffle_seed: int | None = 0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Fold means of ``hits [N]`` after DM-GAN's shuffle: ``default_rng(shuffle_seed).permutation(N)`` (or ``rng``'s).

    ``shuffle_seed=None`` and no ``rng``: folds follow the input order.
    """
    if rng is None and shuffle_seed is not None:
        rng = np.random.default_rng(shuffle_seed)
    ordered = hits[rng.permutation(len(hits))] if rng is not None else hits
    return fold_means(np.asarray(ordered, dtype=np.float64), folds, drop_last_per_fold)


def r_precision(image_vecs: torch.Tensor, true_sent_vecs: torch.Tensor, mismatched_sent_vecs: torch.Tensor,
                folds: int = 10, drop_last_per_fold: bool = False, shuffle_seed: int | None = 0,
                rng: np.random.Generator | None = None) -> tuple[float, float, np.ndarray]:
    """R-precision (top-1 of 1 true + M mismatched captions), mean and std over folds.

    Args:
        image_vecs: ``[N, D]`` image vectors; true_sent_vecs ``[N, D]``; mismatched_sent_vecs ``[N, M, D]``.
        folds: number of folds (10).
        drop_last_per_fold: drop the last sample of each fold, as DM-GAN's code does.
        shuffle_seed: seed of the shuffle before folding (DM-GAN shuffles; the mean over all samples is unchanged
            when no sample is dropped); None: fold in input order.
        rng: a generator to shuffle with instead of ``shuffle_seed``.

    Returns:
        ``(mean, std, hits)``: mean and std (ddof 0) of the fold means, and the ``[N]`` bool hits in input order.
    """
    hits = caption_hits(image_vecs, true_sent_vecs, mismatched_sent_vecs).cpu().numpy()
    means = shuffled_fold_means(hits, folds, drop_last_per_fold, shuffle_seed, rng)
    return float(means.mean()), float(means.std()), hits


def sample_mismatched_captions(class_ids: Sequence[int] | np.ndarray, n: int = 99,
                               rng: np.random.Generator | int | None = None,
                               pool_class_ids: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """For each query, ``n`` indices of captions of other classes, drawn uniformly with replacement.

    DM-GAN's ``get_mis_caption`` draws random images (with replacement) until it has 99 of another class and
    takes a random caption of each; drawing uniformly among other-class indices is the same distribution.

    Args:
        class_ids: ``[N]`` class of each query (the image to score).
        n: captions per query (99).
        rng: numpy generator or seed.
        pool_class_ids: ``[P]`` class of each candidate caption; defaults to ``class_ids`` (the queries' own captions).

    Returns:
        ``[N, n]`` int64 indices into the pool.

    Raises:
        DataError: a query's class is the only class in the pool.
    """
    rng = np.random.default_rng(rng)
    queries = np.asarray(class_ids)
    pool = queries if pool_class_ids is None else np.asarray(pool_class_ids)
    out = np.empty((len(queries), n), dtype=np.int64)
    for cls in np.unique(queries):
        others = np.flatnonzero(pool != cls)
        if len(others) == 0:
            raise DataError(f"no captions of a class other than {cls} to use as mismatched captions; R-precision needs several classes")
        rows = np.flatnonzero(queries == cls)
        out[rows] = rng.choice(others, size=(len(rows), n), replace=True)
    return out


def r_precision_ceiling(image_attributes: Sequence[Mapping[str, str]], caption_claims: Sequence[Mapping[str, str]],
                        mismatched: np.ndarray, folds: int = 10) -> tuple[float, float, np.ndarray]:
    """R-precision of an oracle that knows each image's attributes and reads what each caption claims.

    Captions of other classes often describe an image as well as its own ("a bird with black wings" fits
    every black-winged species), so no model reaches 1.0. The oracle scores a caption for an image by the
    naive-Bayes likelihood ratio of its claims: minus infinity if a claim contradicts the image
    (``claims[part] != attributes[part]`` for a labelled part), otherwise the sum over its claims of
    ``-log f(part, value)``, with ``f`` the frequency of that value among the query images (a rare match such as
    "purple crown" says more than "black eye"). Among ``k`` mismatched captions that tie with the true caption,
    a random ranking puts it first with probability ``1 / (1 + k)``. The expected hit rate estimates the ceiling of
    :func:`r_precision` on the same images and mismatched captions (a model cannot know more than the labels).

    Args:
        image_attributes: ``[N]`` ``{part: value}`` of each query image.
        caption_claims: ``[P]`` ``{part: value}`` a caption names (e.g.
            :func:`t2i.metrics.attribute_accuracy.parse_caption_attributes`); the first ``N`` are the queries'
            true captions, the pool that ``mismatched`` indexes.
        mismatched: ``[N, M]`` indices into ``caption_claims`` (:func:`sample_mismatched_captions`).
        folds: number of folds.

    Returns:
        ``(mean, std, expected_hits [N])`` as :func:`r_precision`.
    """
    n = len(image_attributes)
    counts: dict[tuple[str, str], int] = {}
    for attributes in image_attributes:
        for item in attributes.items():
            counts[item] = counts.get(item, 0) + 1

    def score(claims: Mapping[str, str], attributes: Mapping[str, str]) -> float:
        total = 0.0
        for part, value in claims.items():
            if part not in attributes:
                continue
            if attributes[part] != value:
                return -math.inf
            total += math.log(n / counts[(part, value)])
        return total

    expected = np.empty(n, dtype=np.float64)
    for i, attributes in enumerate(image_attributes):
        own = score(caption_claims[i], attributes)
        others = np.array([score(caption_claims[j], attributes) for j in mismatched[i]])
        close = np.isclose(others, own, rtol=0.0, atol=1e-9) | (others == own)
        expected[i] = 0.0 if (others > own + 1e-9).any() else 1.0 / (1 + int(close.sum()))
    means = fold_means(expected, folds)
    return float(means.mean()), float(means.std()), expected
