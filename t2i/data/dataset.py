"""Text-image dataset, caption sampling and collation into :class:`t2i.structures.Batch`.

Follows AttnGAN ``code/datasets.py`` (``TextDataset.__getitem__``, ``get_caption``, ``prepare_data``):
one random caption per image per access in training, captions longer than ``words_num`` shortened
to a random order-preserving subset of their words, batches sorted by decreasing caption length and
padded with 0 (``<end>``). Randomness uses torch's RNG, which ``DataLoader`` seeds in every worker
(numpy's global RNG, which AttnGAN uses, is not reseeded per worker and repeats across workers).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from t2i.data.images import ImagePyramid, load_image
from t2i.data.text import UNKNOWN_POLICIES, Vocabulary, pad_ids, tokenize
from t2i.errors import DataError
from t2i.structures import Batch, Record

__all__ = ["TextImageDataset", "collate", "make_loader", "shorten_caption"]

log = logging.getLogger(__name__)


def shorten_caption(ids: Sequence[int], words_num: int, train: bool,
                    generator: torch.Generator | None = None) -> list[int]:
    """Cut a caption to at most ``words_num`` ids, as AttnGAN's ``get_caption``.

    Training keeps a random subset of ``words_num`` words in their original order
    (``np.random.shuffle(ix); ix = ix[:words_num]; ix = np.sort(ix)``); evaluation keeps the first
    ``words_num`` words, so it is deterministic.
    """
    ids = list(ids)
    if len(ids) <= words_num:
        return ids
    if not train:
        return ids[:words_num]
    keep = torch.randperm(len(ids), generator=generator)[:words_num].sort().values
    return [ids[int(k)] for k in keep]


class TextImageDataset(Dataset):
    """Images with their captions, for DAMSM, GAN and DRAW training and evaluation.

    Args:
        records: the split's records (from a source's ``records(split)``).
        vocab: the vocabulary used to encode captions.
        base_size: side of the first pyramid stage (64).
        num_stages: pyramid stages (3 -> 64, 128, 256).
        words_num: maximum caption length (AttnGAN ``TEXT.WORDS_NUM``: 18 birds, 12 COCO).
        train: random caption, random word subset, random crop and flip; otherwise deterministic.
        skip_bad: replace an unreadable image by the next readable index (counted in ``bad_count``
            of the process that met it, logged once per file) instead of raising.
        unknown: ``drop`` (AttnGAN) or ``unk`` for words missing from ``vocab``.
        caption_index: evaluation only: always use this caption of each image (default
            ``index % captions_per_image``).
        wrong_captions: sample, for each item, a caption of an image of another class (for the
            matching-aware discriminator loss).
        seed: evaluation only: seed of the per-index mismatched-caption choice.
        load_images: False: items carry no images (``images == []``), for training on cached image features.
        recolour: training only: an object with ``sample(generator) -> mapping | None``,
            ``image(key, mapping) -> PIL image`` (cropped) and ``text(caption, mapping) -> str`` that
            changes image and captions of an example together (the synthetic birds'
            :class:`t2i.data.synthbirds.recolour.PaletteSwap`); None: images and captions as stored.

    Raises:
        DataError: a caption with no known word (named by key), or an empty record list.
    """

    def __init__(self, records: Sequence[Record], vocab: Vocabulary, base_size: int = 64, num_stages: int = 3,
                 words_num: int = 18, train: bool = True, skip_bad: bool = False, unknown: str = "drop",
                 caption_index: int | None = None, wrong_captions: bool = True, seed: int = 0,
                 load_images: bool = True, recolour: Any = None):
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown-word policy {unknown!r}; choose one of {UNKNOWN_POLICIES}")
        if words_num < 1:
            raise ValueError(f"words_num must be >= 1, not {words_num}")
        if not records:
            raise DataError("the data split has no records; check the data root and its filenames.pickle")
        self.records = list(records)
        self.vocab = vocab
        self.words_num = words_num
        self.train = train
        self.skip_bad = skip_bad
        self.unknown = unknown
        self.caption_index = caption_index
        self.seed = seed
        self.load_images = load_images
        self.recolour = recolour if train else None
        self.pyramid = ImagePyramid(base_size, num_stages, train=train)
        self.bad_count = 0
        self._bad_logged: set[str] = set()
        self.unknown_counts: dict[str, int] = {}
        self.caption_ids = [[self._encode(r, c, text) for c, text in enumerate(r.captions)] for r in self.records]
        if self.unknown_counts:
            log.info("%d distinct unknown words %s (e.g. %s)", len(self.unknown_counts),
                     "dropped" if unknown == "drop" else "mapped to <unk>", sorted(self.unknown_counts)[:5])
        self.class_ids = torch.tensor([r.class_id for r in self.records], dtype=torch.long)
        self.wrong_captions = wrong_captions and int(self.class_ids.unique().numel()) > 1
        if wrong_captions and not self.wrong_captions:
            log.warning("all %d records share one class id: no mismatched captions", len(self.records))

    def _encode(self, record: Record, index: int, text: str) -> list[int]:
        unknown_words: list[str] = []
        ids = self.vocab.encode(tokenize(text), unknown=self.unknown, unknown_words=unknown_words)
        for w in unknown_words:
            self.unknown_counts[w] = self.unknown_counts.get(w, 0) + 1
        if not ids:
            raise DataError(f"caption {index} of {record.key} ({text!r}) has no word in the vocabulary; "
                            "fix the caption file or rebuild the vocabulary (delete vocab.json)")
        return ids

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions_per_image(self) -> int:
        return min(len(r.captions) for r in self.records)

    def _generator(self, index: int) -> torch.Generator | None:
        # training draws from torch's global RNG (seeded per worker by DataLoader); evaluation is a
        # function of the index only.
        if self.train:
            return None
        return torch.Generator().manual_seed(self.seed * 1_000_003 + index)

    def _caption(self, index: int, caption_index: int, gen: torch.Generator | None,
                 mapping: Any = None) -> tuple[list[int], str]:
        """Ids (shortened) and text of one caption; with a recolouring ``mapping``, of the recoloured caption."""
        text = self.records[index].captions[caption_index]
        if mapping is None:
            ids = self.caption_ids[index][caption_index]
        else:
            text = self.recolour.text(text, mapping)
            ids = self._encode(self.records[index], caption_index, text)
        return shorten_caption(ids, self.words_num, self.train, gen), text

    def _wrong_index(self, index: int, gen: torch.Generator | None) -> int:
        own = self.class_ids[index]
        for _ in range(32):  # rejection sampling; almost always succeeds at once
            j = int(torch.randint(len(self.records), (1,), generator=gen))
            if self.class_ids[j] != own:
                return j
        others = (self.class_ids != own).nonzero().flatten()
        return int(others[torch.randint(len(others), (1,), generator=gen)])

    def _images(self, index: int, gen: torch.Generator | None, mapping: Any = None) -> tuple[int, list[Tensor]]:
        tries = len(self.records) if self.skip_bad else 1
        for step in range(tries):
            i = (index + step) % len(self.records)
            record = self.records[i]
            try:
                if mapping is not None:
                    return i, self.pyramid(self.recolour.image(record.key, mapping), generator=gen)
                return i, self.pyramid(load_image(record.image_path, record.bbox), generator=gen)
            except DataError as exc:
                if not self.skip_bad:
                    raise
                self.bad_count += 1
                if record.key not in self._bad_logged:
                    self._bad_logged.add(record.key)
                    log.warning("skipping unreadable image: %s", exc)
        raise DataError("no readable image in the whole data set; check the image files")

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One example.

        Returns:
            dict with ``images`` (list of ``[3, S_i, S_i]`` in [-1, 1]), ``caption`` (``[L]`` long,
            no padding), ``length``, ``class_id``, ``key``, ``caption_text``, ``caption_index``,
            ``index`` (the record actually used; differs from ``index`` after a skipped bad image),
            ``recolouring`` (the palette swap drawn, or None), and, with mismatched captions, ``wrong_caption`` / ``wrong_length`` / ``wrong_key``.
        """
        gen = self._generator(index)
        mapping = self.recolour.sample(gen) if self.recolour is not None else None
        index, images = self._images(index, gen, mapping) if self.load_images else (index, [])
        record = self.records[index]
        n_caps = len(record.captions)
        if self.train:
            cap_ix = int(torch.randint(n_caps, (1,)))  # AttnGAN: sent_ix = random.randint(0, embeddings_num)
        else:
            cap_ix = (self.caption_index if self.caption_index is not None else index) % n_caps
        ids, text = self._caption(index, cap_ix, gen, mapping)
        item = {"images": images, "caption": torch.tensor(ids, dtype=torch.long), "length": len(ids),
                "class_id": int(record.class_id), "key": record.key, "caption_text": text,
                "caption_index": cap_ix, "index": index, "recolouring": mapping}
        if self.wrong_captions:
            j = self._wrong_index(index, gen)
            wrong_ix = int(torch.randint(len(self.records[j].captions), (1,), generator=gen))
            wrong_ids, _ = self._caption(j, wrong_ix, gen, mapping)
            item.update(wrong_caption=torch.tensor(wrong_ids, dtype=torch.long), wrong_length=len(wrong_ids),
                        wrong_key=self.records[j].key)
        return item


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    # numpy's single-threaded copy: torch.stack's thread pool is slower for this on a busy CPU
    return torch.from_numpy(np.stack([t.numpy() for t in tensors]))


def collate(items: Sequence[dict[str, Any]], wrong_captions: bool = True) -> Batch:
    """Stack items into a :class:`Batch`, sorted by decreasing caption length (AttnGAN ``prepare_data``).

    Captions are padded with 0 to the longest caption of the batch. Mismatched captions stay aligned
    with their items (row ``b`` of ``wrong_captions`` belongs to row ``b`` of ``captions``), so they
    are *not* length-sorted: encode them with ``enforce_sorted=False``.

    Args:
        items: dicts from :meth:`TextImageDataset.__getitem__`.
        wrong_captions: collate the mismatched captions too (they must be in every item).
    """
    if not items:
        raise ValueError("cannot collate an empty list of items")
    lengths = torch.tensor([it["length"] for it in items], dtype=torch.long)
    order = torch.sort(lengths, descending=True, stable=True).indices.tolist()
    items = [items[i] for i in order]
    num_stages = len(items[0]["images"])
    batch = Batch(
        images=[_stack([it["images"][s] for it in items]) for s in range(num_stages)],
        captions=pad_ids([it["caption"] for it in items])[0],
        lengths=lengths[order],
        class_ids=torch.tensor([it["class_id"] for it in items], dtype=torch.long),
        keys=[it["key"] for it in items],
        caption_texts=[it["caption_text"] for it in items],
        caption_ids=torch.tensor([it["caption_index"] for it in items], dtype=torch.long),
    )
    if any(it.get("recolouring") is not None for it in items):
        batch.recolourings = [it.get("recolouring") for it in items]
    if wrong_captions:
        if any("wrong_caption" not in it for it in items):
            raise ValueError("items have no mismatched captions (one class only, or wrong_captions=False "
                             "in the dataset); collate with wrong_captions=False")
        batch.wrong_captions = pad_ids([it["wrong_caption"] for it in items])[0]
        batch.wrong_lengths = torch.tensor([it["wrong_length"] for it in items], dtype=torch.long)
    return batch


def make_loader(dataset: TextImageDataset, batch_size: int, shuffle: bool = True, num_workers: int = 0,
                drop_last: bool = False, sampler: Sampler | None = None, seed: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` with :func:`collate` and a seeded generator (reproducible shuffling and
    per-worker seeds). With a ``sampler`` (e.g. ``DistributedSampler``) ``shuffle`` is ignored.
    """
    if batch_size < 1:
        raise DataError(f"batch size {batch_size}: give a batch size of at least 1 (train.batch_size=)")
    size = len(sampler) if sampler is not None else len(dataset)
    if drop_last and size < batch_size:  # no full batch at all: a training loop would wait for one forever
        raise DataError(f"batch size {batch_size} is larger than the training set ({size} images), so there is no "
                        f"batch to train on; use train.batch_size={max(1, size)} or less, or more data")
    wrong = bool(getattr(dataset, "wrong_captions", False))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, collate_fn=partial(collate, wrong_captions=wrong),
        generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
