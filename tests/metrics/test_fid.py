"""FID against closed forms and an independent computation; statistics cache; KID."""

import numpy as np
import pytest
import torch

from t2i.errors import DataError
from t2i.metrics.fid import (feature_statistics, fid_from_features, frechet_distance, load_statistics,
                             save_statistics)
from t2i.metrics.kid import kernel_inception_distance, polynomial_mmd2


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d) * 0.1


def _psd_sqrt(m):
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_identity_covariances_give_squared_mean_distance():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    assert frechet_distance(mu1, np.eye(3), mu2, np.eye(3)) == pytest.approx(1 + 4 + 0.25, abs=1e-10)


def test_scaled_identities():
    d, a, b = 5, 4.0, 0.25
    expected = d * (np.sqrt(a) - np.sqrt(b)) ** 2
    assert frechet_distance(np.zeros(d), a * np.eye(d), np.zeros(d), b * np.eye(d)) == pytest.approx(expected, rel=1e-10)


def test_non_commuting_case_matches_symmetric_square_root():
    s1 = np.array([[2.0, 0.9], [0.9, 1.0]])
    s2 = np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([0.5, -1.0]), np.array([0.0, 0.3])
    root1 = _psd_sqrt(s1)
    tr_covmean = np.trace(_psd_sqrt(root1 @ s2 @ root1))  # tr sqrt(S1^1/2 S2 S1^1/2) = tr sqrt(S1 S2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)


def test_fid_zero_symmetric_and_translation_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6))
    y = rng.normal(size=(150, 6)) * 1.5 + 0.3
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(y, x), rel=1e-8)
    shift = rng.normal(size=6)
    assert fid_from_features(x + shift, y + shift) == pytest.approx(fid_from_features(x, y), rel=1e-8)
    assert fid_from_features(torch.from_numpy(x).float(), y) == pytest.approx(fid_from_features(x, y), rel=1e-5)


def test_feature_statistics_float64_and_np_cov():
    x = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    mu, sigma = feature_statistics(torch.from_numpy(x))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    with pytest.raises(DataError):
        feature_statistics(np.zeros((1, 3)))


def test_non_finite_square_root_retries_with_eps_on_the_diagonal(monkeypatch):
    import t2i.metrics.fid as fid_module

    real_sqrtm, seen = fid_module.linalg.sqrtm, []

    def flaky_sqrtm(m):
        seen.append(m.copy())
        return np.full_like(m, np.nan) if len(seen) == 1 else real_sqrtm(m)

    monkeypatch.setattr(fid_module.linalg, "sqrtm", flaky_sqrtm)
    s1, s2 = np.diag([1.0, 4.0, 0.0]), np.diag([1.0, 1.0, 0.0])
    value = frechet_distance(np.zeros(3), s1, np.zeros(3), s2, eps=1e-6)
    np.testing.assert_allclose(seen[1], (s1 + 1e-6 * np.eye(3)) @ (s2 + 1e-6 * np.eye(3)))
    assert value == pytest.approx(1.0, abs=1e-5)  # (2 - 1)^2 from the second axis


def test_significant_imaginary_part_is_refused(monkeypatch):
    import t2i.metrics.fid as fid_module

    monkeypatch.setattr(fid_module.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 0.5j))
    with pytest.raises(DataError, match="imaginary"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2))
    monkeypatch.setattr(fid_module.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 1e-9j))
    assert frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2)) == pytest.approx(0.0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(DataError, match="disagree"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_statistics_roundtrip_and_profile_guard(tmp_path):
    rng = np.random.default_rng(2)
    mu, sigma = rng.normal(size=3), _spd(rng, 3)
    path = save_statistics(tmp_path / "real.npz", mu, sigma, profile="pytorch-fid", count=10, extra={"split": "test"})
    stats = load_statistics(path, "pytorch-fid")
    np.testing.assert_array_equal(stats.mu, mu)
    np.testing.assert_array_equal(stats.sigma, sigma)
    assert (stats.profile, stats.count, stats.extra) == ("pytorch-fid", 10, {"split": "test"})
    with pytest.raises(DataError, match="'pytorch-fid', not 'clean-fid'"):
        load_statistics(path, "clean-fid")
    with pytest.raises(DataError, match="do not exist"):
        load_statistics(tmp_path / "missing.npz", "pytorch-fid")
    untagged = tmp_path / "untagged.npz"
    np.savez(untagged, mu=mu, sigma=sigma)
    with pytest.raises(DataError, match="records no image profile"):
        load_statistics(untagged, "tf1")
    assert load_statistics(untagged, "tf1", allow_untagged=True).profile == "tf1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.npz", "untagged.npz"]  # no temporary left


def _mmd2_loops(x, y):
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_unbiased_mmd_matches_loops_and_detects_shift():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(7, 4)) + 0.5
    assert polynomial_mmd2(x, y) == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same, _ = kernel_inception_distance(a, b, num_subsets=20, max_subset_size=100, rng=0)
    shifted, std = kernel_inception_distance(a, b + 1.0, num_subsets=20, max_subset_size=100, rng=0)
    assert abs(same) < 0.05 < shifted and std >= 0
    # the subset is the whole set when both sets are small: every subset gives the same value
    mean, std = kernel_inception_distance(x, y, num_subsets=3, rng=0)
    assert mean == pytest.approx(_mmd2_loops(x, y), rel=1e-10) and std == pytest.approx(0, abs=1e-12)
