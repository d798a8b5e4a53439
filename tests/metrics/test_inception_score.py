"""Inception Score against closed forms and the reference numpy formula."""

import math

import numpy as np
import pytest
import torch

from t2i.errors import DataError
from t2i.metrics.inception_score import inception_score


def _reference_is(probs, splits=10):  # improved-gan's formula on probabilities
    scores = []
    n = probs.shape[0]
    for k in range(splits):
        part = probs[k * n // splits:(k + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return np.mean(scores), np.std(scores)


def test_uniform_logits_give_one():
    mean, std = inception_score(torch.zeros(50, 1008))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("scale", [50.0, 1e4])
def test_balanced_one_hots_give_number_of_classes(scale):
    k = 7
    logits = torch.zeros(10 * k * 3, 20)
    logits[torch.arange(len(logits)), torch.arange(len(logits)) % k] = scale  # each split holds k classes equally
    mean, std = inception_score(logits)
    assert mean == pytest.approx(k, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_matches_reference_formula_and_stable_for_large_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(103, 12)) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = _reference_is(probs)
    assert inception_score(logits) == pytest.approx(expected, rel=1e-10)
    shifted = inception_score(torch.from_numpy(logits) + 1e4)  # softmax is shift invariant; float64 keeps it exact
    assert shifted == pytest.approx(expected, rel=1e-6)
    assert inception_score(torch.from_numpy(logits * 1e4)) == pytest.approx(inception_score(logits * 1e4), rel=1e-12)
    assert all(math.isfinite(v) for v in inception_score(logits * 1e4))


def test_num_classes_restricts_to_first_logits():
    logits = torch.zeros(20, 1008)
    logits[:, 1000:] = 100.0  # mass only in the 8 extra classes
    assert inception_score(logits, num_classes=1000)[0] == pytest.approx(1.0)


def test_errors_are_clear():
    with pytest.raises(DataError, match="at least 10 images"):
        inception_score(torch.zeros(9, 5))
    bad = torch.zeros(20, 5)
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        inception_score(bad)
