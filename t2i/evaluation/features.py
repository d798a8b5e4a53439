"""What the metrics are computed from: Inception features (with the real-image statistics cache), the IS
classifier, the attribute classifier (trained once, cached), and the SHA-256 of every weights file used
(stylegan3's ``metric_utils.py``)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from t2i.data.attributes import colour_attributes
from t2i.errors import CheckpointError, ConfigError, DataError, WeightsError
from t2i.evaluation.streams import ImageBatch
from t2i.io import atomic_write, sha256_file
from t2i.metrics.attribute_accuracy import (AttributeClassifier, load_attribute_classifier, named_to_labels,
                                            save_attribute_classifier, train_attribute_classifier)
from t2i.metrics.fid import FeatureStatistics, feature_statistics, load_statistics, save_statistics
from t2i.metrics.inception import FID_WEIGHTS_FILE, FIDInceptionV3, packaged_network_path
from t2i.metrics.profiles import Profile, get_profile
from t2i.runtime import Precision

log = logging.getLogger(__name__)


INCEPTION_METRICS = ("fid", "kid", "is")
IS_CLASSIFIER_HINT = (f"pass metrics.inception_weights=/path/{FID_WEIGHTS_FILE} (the FID Inception with its 1008 "
                      "logits) or metrics.is.classifier=PATH (a CUB-fine-tuned Inception-v3)")


def autocast_dtype(precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    if precision == "auto":
        precision = Precision("auto", torch.device(device)).name
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"metrics.precision={precision!r}; choose fp32, bf16 or auto")
    return torch.bfloat16 if precision == "bf16" else None


def check_finite(features: Tensor, what: str) -> None:
    bad = (~torch.isfinite(features)).any(dim=1)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} of {len(bad)} images give NaN/inf features; the images contain "
                        "NaN/inf (a diverged generator?) -- check them with tools/generate.py")


@torch.no_grad()
def inception_batch(images: Tensor, model: nn.Module, profile: Profile, device: torch.device,
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
    dtype = autocast_dtype(precision, device)
    pools, logits = [], []
    for batch in images_iter:
        images = batch.images if isinstance(batch, ImageBatch) else batch
        pool, out = inception_batch(images, model, profile, device, dtype)
        pools.append(pool)
        if out is not None:
            logits.append(out)
    if not pools:
        raise DataError("no images to compute Inception features of")
    features = torch.cat(pools)
    check_finite(features, "Inception features")
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


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``<name>/code/`` (a ``torch.save`` zip has ``data.pkl`` only)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def load_is_classifier(path: str | os.PathLike, device: str | torch.device = "cpu",
                       trust_torchscript: bool = False) -> nn.Module:
    """The CUB protocol's Inception Score classifier, supplied by the user.

    Accepted files (nothing downloads):

    * a **state dict** (``torch.load(weights_only=True)``; optionally under ``"state_dict"`` or ``"model"``, keys
      optionally prefixed ``module.``) of a torchvision ``Inception3`` fine-tuned on CUB; ``K`` (200 for CUB)
      is read from ``fc.weight``. It is built with ``transform_input=False`` and fed the profile's [-1, 1] images,
      the input range of StackGAN's fine-tuned TensorFlow Inception;
    * a **TorchScript** module mapping profile-prepared images ``[N, 3, 299, 299]`` (about [-1, 1]) to logits
      ``[N, K]`` (or a tuple whose first element is the logits), only with ``trust_torchscript=True``
      (``metrics.is.trust_torchscript=true``): TorchScript is code, and loading it runs it.

    Either is fed the ``stackgan-cub`` profile's images (StackGAN's ``preprocess``: PIL bilinear to 299 on the
    8-bit image, ``x / 127.5 - 1``), whatever ``metrics.profile`` says, and scored by StackGAN's CUB protocol
    (:mod:`t2i.metrics.inception_score`).

    Returns:
        a frozen module whose forward gives ``(None, logits [N, K])``.

    Raises:
        WeightsError: missing or unusable file, or TorchScript without ``trust_torchscript``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Inception Score classifier {path} does not exist; supply a CUB-fine-tuned Inception-v3 "
                           "(torchvision state dict, or TorchScript with metrics.is.trust_torchscript=true) or drop "
                           "metrics.is.classifier")
    classifier: nn.Module | None = None
    if _is_torchscript(path):
        if not trust_torchscript:
            raise WeightsError(f"{path} is TorchScript, which is code that runs when loaded; pass "
                               "metrics.is.trust_torchscript=true if you trust its source, or supply a state dict")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated; TorchScript files remain common
            try:
                classifier = torch.jit.load(str(path), map_location="cpu")
            except Exception as exc:
                raise WeightsError(f"cannot read {path} as TorchScript ({type(exc).__name__})") from None
    if classifier is None:
        from torchvision.models.inception import Inception3

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read {path} as a state dict ({type(exc).__name__})") from None
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


def inception_weights_file(path: str | os.PathLike | None) -> Path | None:
    """The file the FID Inception was loaded from (``path``, or the packaged network), for hashing."""
    if path is not None:
        return Path(path)
    try:
        return packaged_network_path()
    except WeightsError:
        return None


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
