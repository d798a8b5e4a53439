"""Metrics by name (STYLE.md 7, 20): the registry *is* the dispatch of the evaluation driver.

Each metric is a pure function (in its own module, testable without images or networks) plus one registered
*driver* that says what it needs and turns what the one pass over the images collected into numbers
(stylegan3's ``metric_main.py``)::

    @register_metric("fid", needs=("inception_pool",), uses=("reference",), label="FID", better="lower")
    def _fid(inputs: MetricInputs) -> MetricResult: ...

``needs`` names per-image features, computed once per batch for every metric that asks
(``inception_pool`` [N, 2048], ``inception_logits`` [N, K], ``damsm_image`` [N, D], ``attributes``
``{part: [N, V]}``); ``uses`` names what the evaluation suite must hold (``inception``, ``reference``,
``reference_features``, ``damsm``, ``caption_pool``, ``attribute_classifier``). The driver
(:mod:`t2i.evaluation.driver`) loads those, runs one pass, and calls every requested metric.

Adding a metric is one file, ``t2i/metrics/<name>.py``, with its function and a ``@register_metric``
driver, and its entry in ``conf/metrics/default.yaml``: every module of :mod:`t2i.metrics` is imported
before a name is looked up, and the metric's YAML node arrives as ``inputs.options``.

=====================  ==================================================================================
``is``                 :func:`~t2i.metrics.inception_score.inception_score` ``(logits [N, K]) -> (mean, std)``
``fid``                :func:`~t2i.metrics.fid.fid_from_features` ``(features1 [N1, D], features2 [N2, D])``
``kid``                :func:`~t2i.metrics.kid.kernel_inception_distance` ``(features1, features2) -> (mean, std)``
``r_precision``        :func:`~t2i.metrics.r_precision.r_precision` ``(image_vecs, true, mismatched) -> (mean, std, hits)``
``attribute_accuracy`` :func:`~t2i.metrics.attribute_accuracy.attribute_accuracy` ``(pred, named, schema) -> float``
=====================  ==================================================================================
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from t2i.data.attributes import parse_caption_attributes
from t2i.errors import ConfigError
from t2i.metrics.attribute_accuracy import attribute_accuracy
from t2i.metrics.fid import feature_statistics, fid_from_features, frechet_distance
from t2i.metrics.inception_score import CUB_PROFILE, inception_score
from t2i.metrics.kid import kernel_inception_distance
from t2i.metrics.r_precision import caption_hits, r_precision, sample_mismatched_captions, shuffled_fold_means

log = logging.getLogger(__name__)

FEATURES = ("inception_pool", "inception_logits", "damsm_image", "attributes")


@dataclass
class MetricInputs:
    """What a metric driver computes from (everything collected by the one pass, plus the suite).

    Attributes:
        features: the requested features over all images (see the module docstring).
        captions: the caption of each image; class_ids: ``[N]`` their classes.
        count: number of images.
        suite: the evaluation suite (networks and reference data named by ``uses``).
        options: the metric's own settings (its ``conf/metrics`` node, e.g. ``splits`` for ``is``).
        seed: seed of any random draw (KID subsets, mismatched captions).
    """

    features: dict[str, Any]
    captions: list[str]
    class_ids: np.ndarray
    count: int
    suite: Any
    options: Mapping[str, Any]
    seed: int = 0


@dataclass
class MetricResult:
    """``metrics``: name -> value (``<name>_std`` beside it); ``counts``: image counts to report; ``protocol``: the
    settings that make the number reproducible (recorded as ``protocol.<metric>`` in ``metrics.json``)."""

    metrics: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # how it was computed (seeds, profile), for metrics.json


@dataclass(frozen=True)
class MetricDriver:
    """A registered metric: what it needs and how its numbers are made (see :func:`register_metric`)."""

    name: str
    compute: Callable[[MetricInputs], MetricResult]
    needs: tuple[str, ...]
    uses: tuple[str, ...] = ()
    label: str = ""
    better: str = "higher"
    min_images: Callable[[Mapping[str, Any]], int] = lambda options: 1
    function: Callable | None = None


METRIC_DRIVERS: dict[str, MetricDriver] = {}
_discovered = False


def register_metric(name: str, *, needs: tuple[str, ...], uses: tuple[str, ...] = (), label: str | None = None,
                    better: str = "higher", min_images: Callable[[Mapping[str, Any]], int] | None = None,
                    function: Callable | None = None) -> Callable:
    """Decorator registering ``compute(inputs) -> MetricResult`` as the metric ``name``.

    Args:
        needs: per-image features from :data:`FEATURES`.
        uses: what the evaluation suite must hold.
        label / better: the name and direction shown in ``metrics.md``.
        min_images: fewest images the metric can be computed from, given its options.
        function: the pure metric function (listed in :data:`METRICS`).
    """
    unknown = [f for f in needs if f not in FEATURES]
    if unknown:
        raise ValueError(f"metric {name!r} needs unknown features {unknown}; known: {', '.join(FEATURES)}")

    def wrap(compute: Callable[[MetricInputs], MetricResult]) -> Callable[[MetricInputs], MetricResult]:
        METRIC_DRIVERS[name] = MetricDriver(name, compute, tuple(needs), tuple(uses), label or name, better,
                                            min_images or (lambda options: 1), function)
        return compute

    return wrap


def _discover() -> None:
    """Import every module of :mod:`t2i.metrics` once, so that a metric file registers itself."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import t2i.metrics

    for info in pkgutil.iter_modules(t2i.metrics.__path__):
        importlib.import_module(f"t2i.metrics.{info.name}")


def metric_drivers() -> dict[str, MetricDriver]:
    """Every registered metric (after discovery)."""
    _discover()
    return METRIC_DRIVERS


def get_driver(name: str) -> MetricDriver:
    """The registered metric ``name``.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    drivers = metric_drivers()
    if name not in drivers:
        raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(sorted(drivers))}")
    return drivers[name]


def get_metric(name: str) -> Callable:
    """The pure function of metric ``name``.

    Raises:
        ConfigError: unknown name.
    """
    return get_driver(name).function


# ----------------------------------------------------------------------------------------------- drivers


@register_metric("fid", needs=("inception_pool",), uses=("inception", "reference"), label="FID", better="lower",
                 min_images=lambda options: 2, function=fid_from_features)
def _fid(inputs: MetricInputs) -> MetricResult:
    features, reference = inputs.features["inception_pool"], inputs.suite.reference
    if inputs.count < features.shape[1]:
        log.warning("FID from %d images, fewer than the %d feature dimensions: the covariance is singular and FID is "
                    "biased upwards; papers use 30,000 (compare numbers at equal counts only)",
                    inputs.count, features.shape[1])
    fid = frechet_distance(*feature_statistics(features), reference.mu, reference.sigma)
    return MetricResult({"fid": fid}, {"fid_reference_images": int(reference.count)})


@register_metric("kid", needs=("inception_pool",), uses=("inception", "reference_features"), label="KID",
                 better="lower", min_images=lambda options: 2, function=kernel_inception_distance)
def _kid(inputs: MetricInputs) -> MetricResult:
    reference = inputs.suite.reference_features
    mean, std = kernel_inception_distance(inputs.features["inception_pool"], reference,
                                          num_subsets=int(inputs.options.get("num_subsets", 100)),
                                          max_subset_size=int(inputs.options.get("max_subset_size", 1000)),
                                          rng=inputs.seed)
    return MetricResult({"kid": mean, "kid_std": std}, {"kid_reference_images": int(len(reference))})


@register_metric("is", needs=("inception_logits",), label="Inception Score",
                 min_images=lambda options: int(options.get("splits", 10)), function=inception_score)
def _inception_score(inputs: MetricInputs) -> MetricResult:
    """COCO protocol (FID Inception, unbiased logits, every image in order) or, with a user-supplied classifier,
    StackGAN's CUB protocol (logit 0 left out when it is the background class of a 51-way classifier or
    ``skip_first_logit``, images shuffled with the evaluation seed, full batches of ``batch_size`` 64)."""
    logits, options = inputs.features["inception_logits"], inputs.options
    splits, num_classes = int(options.get("splits", 10)), options.get("num_classes")
    if getattr(inputs.suite, "is_classifier", None) is None:
        kwargs: dict[str, Any] = {"skip_first": False, "batch_size": None, "rng": None}
        protocol = {"protocol": "improved-gan (FID Inception, unbiased logits pool3 @ W^T)",
                    "profile": getattr(inputs.suite, "profile", None)}
    else:
        skip = options.get("skip_first_logit")
        skip = logits.shape[1] == 51 if skip is None else bool(skip)
        kwargs = {"skip_first": skip, "batch_size": int(options.get("batch_size") or 64), "rng": inputs.seed}
        protocol = {"protocol": "StackGAN CUB (fine-tuned classifier)", "profile": CUB_PROFILE,
                    "skip_first_logit": skip, "batch_size": kwargs["batch_size"], "shuffle_seed": inputs.seed}
    mean, std = inception_score(logits, splits=splits, num_classes=num_classes, **kwargs)
    classes = logits.shape[1] - int(kwargs["skip_first"])
    classes = classes if num_classes is None else min(classes, int(num_classes))
    images = len(logits) // kwargs["batch_size"] * kwargs["batch_size"] if kwargs["batch_size"] else len(logits)
    protocol.update(classes=classes, splits=splits, images=images)
    return MetricResult({"is": mean, "is_std": std}, {"is_classes": classes, "is_images": images}, protocol)


def _r_precision_min(options: Mapping[str, Any]) -> int:
    return int(options.get("folds", 10)) * (2 if options.get("drop_last_per_fold") else 1)


@register_metric("r_precision", needs=("damsm_image",), uses=("damsm", "caption_pool"), label="R-precision",
                 min_images=_r_precision_min, function=r_precision)
def _r_precision(inputs: MetricInputs) -> MetricResult:
    """DM-GAN R-precision: true caption vs ``mismatched`` (99) captions of other classes, chunked over images."""
    suite, options = inputs.suite, inputs.options
    rng = np.random.default_rng(inputs.seed)
    image_vecs = inputs.features["damsm_image"]
    true_sent = suite.damsm.sentence_vectors(inputs.captions)  # [N, D]
    pool_sent = suite.damsm.sentence_vectors(suite.caption_pool)  # [P, D]
    idx = sample_mismatched_captions(inputs.class_ids, int(options.get("mismatched", 99)), rng=rng,
                                     pool_class_ids=suite.pool_class_ids)  # [N, M]
    hits = []
    for start in range(0, len(idx), 1024):  # [chunk, M, D] at a time: 30,000 x 99 x 256 floats would be 3 GB
        rows = slice(start, start + 1024)
        hits.append(caption_hits(image_vecs[rows], true_sent[rows], pool_sent[torch.from_numpy(idx[rows])]))
    hits_np = torch.cat(hits).numpy()
    drop_last = bool(options.get("drop_last_per_fold", False))
    shuffle_seed = options.get("shuffle_seed")
    shuffle_seed = inputs.seed if shuffle_seed is None else int(shuffle_seed)
    folds = int(options.get("folds", 10))
    means = shuffled_fold_means(hits_np, folds, drop_last, shuffle_seed)  # DM-GAN shuffles before folding
    return MetricResult({"r_precision": float(means.mean()), "r_precision_std": float(means.std())},
                        {"r_precision_hits": int(hits_np.sum())},
                        {"folds": folds, "shuffle_seed": shuffle_seed, "mismatched": int(options.get("mismatched", 99)),
                         "drop_last_per_fold": drop_last})


@register_metric("attribute_accuracy", needs=("attributes",), uses=("attribute_classifier",),
                 label="attribute accuracy", function=attribute_accuracy)
def _attribute_accuracy(inputs: MetricInputs) -> MetricResult:
    schema = inputs.suite.attribute_classifier.schema
    named = [parse_caption_attributes(c, schema) for c in inputs.captions]
    value = attribute_accuracy(inputs.features["attributes"], named, schema)
    return MetricResult({"attribute_accuracy": value}, {"attribute_accuracy_images": sum(bool(n) for n in named)})


class _Functions(Mapping[str, Callable]):
    """``METRICS``: name -> pure function, a live view of the registry."""

    def __getitem__(self, name: str) -> Callable:
        return metric_drivers()[name].function

    def __iter__(self):
        return iter(metric_drivers())

    def __len__(self) -> int:
        return len(metric_drivers())


METRICS: Mapping[str, Callable] = _Functions()
