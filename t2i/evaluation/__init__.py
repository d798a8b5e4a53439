"""Evaluation: images in, metrics out (STYLE.md 7: pure metric functions plus a thin driver).

The metrics themselves live in :mod:`t2i.metrics` and are chosen through its registry; this package feeds
them, one module per concept (:mod:`.streams`, :mod:`.features`, :mod:`.driver`, :mod:`.report`):

* **image streams** -- :func:`real_images` (a data split, each image once) and :func:`generated_images`
  (an exported model generating from the split's captions). Both yield :class:`ImageBatch` es with the
  images ``[B, 3, H, W]`` in [-1, 1], the caption each image goes with, its class id and its record's
  attributes, so one pass over the stream serves every metric.
* **caption plan** (:func:`caption_plan`): sample ``i`` of ``n`` uses record ``r = order[i % R]`` (a fixed
  seeded permutation, so a prefix samples every class) and caption ``(r + i // R) % C`` (``R`` records, ``C``
  captions each). The first pass over the records uses caption ``r % C`` -- what
  :class:`t2i.data.dataset.TextImageDataset` shows in evaluation -- and ``n = R * C`` samples use every
  (record, caption) pair exactly once, as DM-GAN's "generate from every test caption".
  Real images are each used once (``n <= R``), in the same order.
* **networks** -- the FID Inception (:mod:`t2i.metrics.inception`) with a named profile, an optional CUB-protocol
  Inception Score classifier (:func:`load_is_classifier`), the scoring DAMSM (:class:`~t2i.models.damsm.DAMSMScorer`) and the
  attribute classifier (:func:`ensure_attribute_classifier`, trained once on real train images and cached).
* **reference statistics** -- :func:`reference_statistics`: real-image FID statistics cached per data set,
  split and profile as ``runs/<data>/stats/<split>_<profile>.npz``.
* :func:`evaluate` computes the requested metrics from one image stream (each registered metric declares the
  features it needs, each computed once per batch), :func:`evaluate_pipeline` does it for a
  :class:`~t2i.pipeline.Text2ImagePipeline` (usable by a trainer for periodic evaluation), :func:`write_results`
  writes ``metrics.json`` and ``metrics.md`` atomically.
"""

from t2i.evaluation.driver import (RESOURCES, EvaluationSuite, attribute_ceiling, build_suite, evaluate,
                                   evaluate_pipeline)
from t2i.evaluation.features import (IS_CLASSIFIER_HINT, ensure_attribute_classifier, inception_features,
                                     inception_weights_file, load_is_classifier, reference_statistics, sha256_file,
                                     stats_path)
from t2i.evaluation.report import format_table, write_results
from t2i.evaluation.streams import ImageBatch, caption_plan, generated_images, real_images, record_order
from t2i.models.damsm import DAMSMScorer

__all__ = [
    "ImageBatch", "record_order", "caption_plan", "real_images", "generated_images", "inception_features",
    "reference_statistics", "DAMSMScorer", "load_is_classifier", "ensure_attribute_classifier", "EvaluationSuite",
    "evaluate", "evaluate_pipeline", "write_results", "format_table", "sha256_file", "stats_path", "build_suite",
    "attribute_ceiling", "inception_weights_file", "IS_CLASSIFIER_HINT", "RESOURCES",
]
