"""Fréchet Inception Distance (Heusel et al. 2017) and cached feature statistics.

``FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr sqrtm(S1 S2)`` on 2048-d pool features, in float64, as in
pytorch-fid's ``calculate_frechet_distance`` and clean-fid's ``frechet_distance``: ``scipy.linalg.sqrtm`` of
the product; if it is not finite, retry with ``eps`` added to both diagonals; a complex result is accepted
(its real part kept) only when the imaginary parts of its diagonal, which is all the trace uses, are within
1e-3 of zero, otherwise the computation is refused. Statistics are cached as ``.npz`` together with the name of
the profile that prepared the images, and a cache made with another profile is refused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import linalg

from t2i.errors import DataError
from t2i.io import atomic_write

log = logging.getLogger(__name__)


def feature_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (``np.cov``, ddof 1) of ``features [N, D]``, in float64.

    Raises:
        DataError: fewer than two feature vectors, or not 2-D.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"FID statistics need features [N, D] with N >= 2; got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: ``[D]`` means.
        sigma1, sigma2: ``[D, D]`` covariances.
        eps: added to both diagonals when ``sqrtm(sigma1 @ sigma2)`` is not finite.

    Raises:
        DataError: shapes disagree, or the matrix square root has a significant imaginary part.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise DataError(f"FID statistics disagree: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs "
                        f"{sigma2.shape}; compute both with the same feature layer")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        log.warning("FID: sqrtm(sigma1 sigma2) is not finite (singular product); adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise DataError(f"FID: sqrtm(sigma1 sigma2) has imaginary parts up to {np.abs(covmean.imag).max():.3g}; "
                            "use more images (at least the feature dimension) for the statistics")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray) -> float:
    """FID between two sets of features ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


@dataclass
class FeatureStatistics:
    """Cached feature statistics and how they were made.

    Attributes:
        mu: ``[D]`` float64 mean.
        sigma: ``[D, D]`` float64 covariance.
        profile: name of the image profile (:mod:`t2i.metrics.profiles`).
        count: number of images.
        extra: free-form plain metadata (data set, split, weights file...).
    """

    mu: np.ndarray
    sigma: np.ndarray
    profile: str
    count: int
    extra: dict[str, Any] = field(default_factory=dict)


def save_statistics(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, profile: str, count: int,
                    extra: dict[str, Any] | None = None) -> Path:
    """Atomically write statistics with their profile name to ``path`` (``.npz``, no pickles)."""
    arrays = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64),
              "profile": np.asarray(profile), "count": np.asarray(int(count)),
              "extra": np.asarray(json.dumps(extra or {}, sort_keys=True))}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temporary name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def load_statistics(path: str | os.PathLike, profile: str, allow_untagged: bool = False) -> FeatureStatistics:
    """Read statistics written by :func:`save_statistics`, checking they were made with ``profile``.

    Args:
        path: the ``.npz`` file.
        profile: the profile the caller uses now.
        allow_untagged: accept a file with only ``mu`` and ``sigma`` (e.g. pytorch-fid's precomputed
            statistics) and assume it was made with ``profile``.

    Raises:
        DataError: missing or unreadable file, or statistics of another profile.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FID statistics {path} do not exist; compute them first (tools/evaluate.py)")
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except Exception as exc:
        raise DataError(f"cannot read FID statistics {path} ({type(exc).__name__}); delete it and recompute") from None
    if "mu" not in stored or "sigma" not in stored:
        raise DataError(f"{path} holds no 'mu'/'sigma' arrays; it is not an FID statistics file")
    if "profile" not in stored:
        if not allow_untagged:
            raise DataError(f"{path} records no image profile; recompute it, or accept it explicitly as {profile!r} statistics")
        log.warning("FID statistics %s record no profile; assuming %r", path, profile)
        return FeatureStatistics(stored["mu"], stored["sigma"], profile, -1, {})
    cached = str(stored["profile"])
    if cached != profile:
        raise DataError(f"FID statistics {path} were computed with profile {cached!r}, not {profile!r}; "
                        f"recompute them with {profile!r} or evaluate with {cached!r}")
    return FeatureStatistics(stored["mu"], stored["sigma"], cached, int(stored["count"]), json.loads(str(stored["extra"])))
