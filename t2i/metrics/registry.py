"""Metrics by name (STYLE.md 7): each name maps to a pure function of features, logits or vectors.

The evaluation tool picks metrics by these names (``metrics.names: [is, fid, ...]``); the functions
take already computed inputs, so they are testable without images or networks:

=====================  =====================================================================================
``is``                 :func:`~t2i.metrics.inception_score.inception_score` ``(logits [N, K]) -> (mean, std)``
``fid``                :func:`~t2i.metrics.fid.fid_from_features` ``(features1 [N1, D], features2 [N2, D]) -> float``
``kid``                :func:`~t2i.metrics.kid.kernel_inception_distance` ``(features1, features2) -> (mean, std)``
``r_precision``        :func:`~t2i.metrics.r_precision.r_precision` ``(image_vecs, true_sent_vecs, mismatched_sent_vecs) -> (mean, std, hits)``
``attribute_accuracy`` :func:`~t2i.metrics.attribute_accuracy.attribute_accuracy` ``(pred, named, schema) -> float``
=====================  =====================================================================================
"""

from __future__ import annotations

from typing import Callable

from t2i.errors import ConfigError
from t2i.metrics.attribute_accuracy import attribute_accuracy
from t2i.metrics.fid import fid_from_features
from t2i.metrics.inception_score import inception_score
from t2i.metrics.kid import kernel_inception_distance
from t2i.metrics.r_precision import r_precision

METRICS: dict[str, Callable] = {
    "fid": fid_from_features,
    "is": inception_score,
    "kid": kernel_inception_distance,
    "r_precision": r_precision,
    "attribute_accuracy": attribute_accuracy,
}


def get_metric(name: str) -> Callable:
    """The metric function called ``name``.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(sorted(METRICS))}") from None
