"""Image streams to evaluate: real images of a split and images generated from its captions, in one
caption plan (see :mod:`t2i.evaluation`)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from t2i.data.dataset import TextImageDataset
from t2i.errors import ConfigError, DataError
from t2i.pipeline import Text2ImagePipeline
from t2i.structures import Record

log = logging.getLogger(__name__)


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
