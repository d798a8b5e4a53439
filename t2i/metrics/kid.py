"""Kernel Inception Distance (Bińkowski et al. 2018), as in clean-fid and torch-fidelity.

The unbiased estimate of MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / D + 1)^3`` over
``num_subsets`` random subsets (without replacement) of ``m = min(N1, N2, max_subset_size)`` features of each
set:

``MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2``

clean-fid reports the mean over subsets; torch-fidelity reports mean and std; both are returned.
"""

from __future__ import annotations

import numpy as np
import torch

from t2i.errors import DataError


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> float:
    """Unbiased MMD^2 between ``x [m, D]`` and ``y [m, D]`` with ``k = (x.y / D + coef0)^degree``."""
    m, dim = x.shape
    k_xx = (x @ x.T / dim + coef0) ** degree
    k_yy = (y @ y.T / dim + coef0) ** degree
    k_xy = (x @ y.T / dim + coef0) ** degree
    off_diag = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(off_diag - 2 * k_xy.sum() / (m * m))


def kernel_inception_distance(features1: torch.Tensor | np.ndarray, features2: torch.Tensor | np.ndarray,
                              num_subsets: int = 100, max_subset_size: int = 1000,
                              rng: np.random.Generator | int | None = 0) -> tuple[float, float]:
    """KID between features ``[N1, D]`` and ``[N2, D]``: ``(mean, std)`` of MMD^2 over subsets.

    Raises:
        DataError: fewer than two features in a set, or different feature sizes.
    """
    sets = [f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, np.float64)
            for f in (features1, features2)]
    if any(s.ndim != 2 or s.shape[0] < 2 for s in sets) or sets[0].shape[1] != sets[1].shape[1]:
        raise DataError(f"KID needs two feature sets [N, D] with N >= 2 and equal D; got {sets[0].shape}, {sets[1].shape}")
    rng = np.random.default_rng(rng)
    m = min(sets[0].shape[0], sets[1].shape[0], max_subset_size)
    values = [polynomial_mmd2(sets[0][rng.choice(sets[0].shape[0], m, replace=False)],
                              sets[1][rng.choice(sets[1].shape[0], m, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))
