"""DAMSM pre-training (AttnGAN ``code/pretrain_DAMSM.py``) and the self-describing encoder exports.

The trainer owns the optimisation; the maths is in :mod:`t2i.losses.damsm`. Reference settings: Adam with
betas (0.5, 0.999), lr 0.002 multiplied by 0.98 after every epoch while above lr/10, gradient-norm clipping
at 0.25 on the text encoder, loss ``w_loss0 + w_loss1 + s_loss0 + s_loss1``. Unlike the reference, which
builds a new Adam at each epoch (dropping its moments), one optimizer lives through the run and only its
learning rate changes; that is what makes exact resumption possible.

At the end, the text and image encoders are written into ``run_dir`` by :mod:`t2i.models.damsm`
(``text_encoder.safetensors/.json``, ``image_encoder.safetensors/.json``), which also loads them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.errors import CheckpointError, ConfigError, TrainingError
from t2i.losses.damsm import CaptionNegatives, DAMSMLoss, DAMSMLossOutput, same_class_mask, word_region_scores
from t2i.metrics.r_precision import fold_means, sample_mismatched_captions, true_first
from t2i.models.damsm import save_image_encoder, save_text_encoder, vocab_dict
from t2i.runtime import Precision, resolve_device, rng_state, set_rng_state
from t2i.structures import Batch
from t2i.training.negatives import colour_swapped_captions, colour_token_ids
from t2i.io import load_checkpoint, load_state_dict_strict, save_checkpoint, start_over

log = logging.getLogger(__name__)

TRAIN_KIND = "damsm_train"


def damsm_lr(base_lr: float, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): AttnGAN multiplies by 0.98 after each epoch while ``lr > base_lr/10``."""
    lr = base_lr
    for _ in range(epoch):
        if lr > base_lr / 10.0:
            lr *= 0.98
        else:
            break
    return lr


# ----------------------------------------------------------------------------------------- R-precision
def _r_precision(image_vecs: Tensor, true_sent: Tensor, mismatched_idx: np.ndarray, folds: int):
    """R-precision with 99 mismatched captions of other classes (t2i.metrics.r_precision)."""
    from t2i.metrics.r_precision import r_precision

    mismatched = true_sent[torch.from_numpy(mismatched_idx)]  # (N, 99, D)
    return r_precision(image_vecs, true_sent, mismatched, folds=folds)


def _r_precision_ceiling(dataset: Any, keys: list[str], captions: list[str], mismatched_idx: np.ndarray,
                         folds: int) -> tuple[float, float] | None:
    """The attribute oracle's R-precision on the same captions (None when the records have no attributes)."""
    from t2i.data.attributes import colour_attributes, colour_schema, parse_caption_attributes
    from t2i.metrics.r_precision import r_precision_ceiling

    records = getattr(dataset, "records", None)
    if not records or len(captions) != len(keys) or any(r.attributes is None for r in records):
        return None
    values: dict[str, set[str]] = {}
    for record in records:
        for part, value in record.attributes.items():
            values.setdefault(part, set()).add(value)
    schema = colour_schema({part: sorted(v) for part, v in values.items()})
    if not schema:
        return None
    by_key = {r.key: r.attributes for r in records}
    attributes = [colour_attributes(by_key[k], schema) for k in keys]
    claims = [parse_caption_attributes(c, schema) for c in captions]
    mean, std, _ = r_precision_ceiling(attributes, claims, mismatched_idx, folds)
    return mean, std


def _pad_words(words: list[Tensor], pad_masks: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Concatenate per-batch ``[B, T_b, D]`` word features (and masks) padded to the longest ``T_b``."""
    longest = max(w.shape[1] for w in words)
    out = torch.cat([F.pad(w, (0, 0, 0, longest - w.shape[1])) for w in words])
    mask = torch.cat([F.pad(m, (0, longest - m.shape[1]), value=True) for m in pad_masks])
    return out, mask


# ----------------------------------------------------------------------------------------- trunk cache
class TrunkFeatureCache:
    """Frozen-trunk image features of every image, computed once, looked up by record key.

    AttnGAN trains only the projections of its DAMSM image encoder on top of a frozen ImageNet
    Inception-v3. The trunk's outputs (``Mixed_6e`` 768 x 17 x 17 and pooled ``Mixed_7c``) are then the same at
    every step, so computing them once per image turns a 5.7 GFLOP forward per image and step into a table
    lookup: what makes the paper's encoder trainable on a CPU. The price is the random crop and flip
    augmentation: each image is seen at its evaluation transform only. Features are kept in bfloat16.

    Args:
        encoder: an encoder with ``trunk(images) -> (regions, pooled)`` (:class:`InceptionImageEncoder`).
        batches: an iterable of :class:`Batch` (an evaluation-mode loader over every image to cache).
        precision: autocast used for the trunk.
        device: where the trunk runs; the cache lives on the CPU.
        progress: show a progress bar.
    """

    def __init__(self, encoder: nn.Module, batches: Iterable[Batch], precision: Precision, device: torch.device,
                 progress: bool = True):
        from tqdm.auto import tqdm

        self.index: dict[str, int] = {}
        regions, pooled = [], []
        was_training = encoder.training
        encoder.eval()
        start = time.perf_counter()
        total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
        with torch.no_grad():
            for batch in tqdm(batches, total=total, desc="trunk features", disable=not progress, leave=False):
                with precision.autocast():
                    r, g = encoder.trunk(batch.images[-1].to(device))
                regions.append(r.to("cpu", torch.bfloat16))
                pooled.append(g.to("cpu", torch.bfloat16))
                for key in batch.keys:
                    self.index.setdefault(key, len(self.index))
        encoder.train(was_training)
        if not regions:
            raise ValueError("no images to compute trunk features of")
        self.regions, self.pooled = torch.cat(regions), torch.cat(pooled)
        if len(self.regions) != len(self.index):
            raise ValueError("duplicate record keys: trunk features need one image per key")
        self.seconds = time.perf_counter() - start
        log.info("trunk features of %d images in %.0f s (%.0f MiB)", len(self.index), self.seconds,
                 (self.regions.numel() + self.pooled.numel()) * 2 / 2**20)

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, keys: list[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """``(regions [B, 768, 17, 17], pooled [B, 2048])`` float32 of the images ``keys``.

        Raises:
            KeyError: a key that was not cached (one line naming it).
        """
        try:
            rows = torch.tensor([self.index[k] for k in keys], dtype=torch.long)
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} has no cached trunk features; build the cache over every split") from None
        return self.regions[rows].to(device).float(), self.pooled[rows].to(device).float()


# ----------------------------------------------------------------------------------------- trainer
class DAMSMTrainer:
    """Jointly trains a DAMSM text encoder and image encoder (AttnGAN ``pretrain_DAMSM.py``).

    Args:
        text_encoder: an encoder with ``encode(batch) -> TextEmbedding`` (BiLSTM or BERT).
        image_encoder: ``images -> (regions [B, D, h, w], global [B, D])``.
        train_loader / test_loader: loaders of :class:`t2i.structures.Batch` (the last image stage is used).
        run_dir: output directory (checkpoint.pt, tb/, the encoders' .safetensors + .json).
        lr: initial learning rate (AttnGAN ENCODER_LR 0.002), decayed per epoch by :func:`damsm_lr`.
        epochs: epochs to train (AttnGAN: 600); ``max_steps`` caps the total steps when given.
        grad_clip: max gradient norm of the text encoder (AttnGAN RNN_GRAD_CLIP 0.25).
        gamma1, gamma2, gamma3, released_eq10: loss settings (see :mod:`t2i.losses.damsm`).
        precision: ``fp32 | bf16 | fp16`` (autocast; the loss itself runs in float32).
        device: ``auto``, ``cpu``, ``cuda``...
        ckpt_every: write ``checkpoint.pt`` every this many steps (and at the end).
        log_every: TensorBoard scalars every this many steps.
        eval_every: R-precision/test loss every this many steps (None: only at the end).
        resume: ``auto`` continues from ``run_dir/checkpoint.pt`` when it exists; ``never`` starts over.
        vocab: the data vocabulary, stored in the exports.
        config: resolved plain config, stored in the checkpoints.
        folds: R-precision folds.
        seed: seed of the per-epoch shuffling and of the mismatched captions.
        progress: show a tqdm progress bar.
        feature_cache: a :class:`TrunkFeatureCache` of the frozen image trunk; the loaders' batches then need
            no images (only keys), and the image encoder's ``project`` runs on the cached features.
        word_r_precision: also rank the R-precision candidates by the word-level score R(Q, D) (Eq. 10) and
            report it as ``test/r_precision_word`` (a second pass over the test images).
        hard_negatives: colour-swapped copies of each training caption added to its image's image -> caption
            losses (:func:`colour_swapped_captions`, :class:`t2i.losses.damsm.CaptionNegatives`); 0: AttnGAN.
            Needs a vocabulary with colour words.
        attributes: ``(heads, labels)`` of :mod:`t2i.training.attribute_heads`: part-colour classifiers shared by
            the image and sentence vectors, trained beside the DAMSM loss; None: AttnGAN.
        attribute_weight: weight of that loss (``model.attribute_weight``).
        seen_loader: training images at the evaluation transform, scored as ``seen/r_precision``: far above
            ``test/r_precision`` (unseen species) = the encoders recognise species, not part colours.
    """

    def __init__(self, text_encoder: nn.Module, image_encoder: nn.Module, train_loader: Iterable[Batch],
                 test_loader: Iterable[Batch] | None, run_dir: str | os.PathLike, *, lr: float = 0.002,
                 epochs: int = 600, max_steps: int | None = None, grad_clip: float = 0.25, gamma1: float = 4.0,
                 gamma2: float = 5.0, gamma3: float = 10.0, released_eq10: bool = False, precision: str = "fp32",
                 device: str = "auto", ckpt_every: int = 200, log_every: int = 20, eval_every: int | None = None,
                 resume: str = "auto", vocab: Any = None, config: dict | None = None, folds: int = 10,
                 seed: int = 0, progress: bool = True, feature_cache: TrunkFeatureCache | None = None,
                 word_r_precision: bool = True, hard_negatives: int = 0, attributes: tuple | None = None,
                 attribute_weight: float = 0.0, seen_loader: Iterable[Batch] | None = None):
        if resume not in ("auto", "never"):
            raise ValueError(f"resume must be 'auto' or 'never', got {resume!r}")
        self.device = resolve_device(device)
        self.precision = Precision(precision, self.device)
        self.text_encoder = text_encoder.to(self.device)
        self.image_encoder = image_encoder.to(self.device)
        self.train_loader, self.test_loader, self.seen_loader = train_loader, test_loader, seen_loader
        self.run_dir = Path(run_dir)
        self.base_lr, self.grad_clip = lr, grad_clip
        self.steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
        if self.steps_per_epoch == 0:
            raise ValueError("the training loader is empty (fewer images than one batch with drop_last?)")
        self.total_steps = epochs * self.steps_per_epoch if max_steps is None else int(max_steps)
        self.loss_fn = DAMSMLoss(gamma1, gamma2, gamma3, released_eq10)
        self.ckpt_every, self.log_every, self.eval_every = ckpt_every, log_every, eval_every
        self.resume, self.vocab, self.config = resume, vocab, config or {}
        self.folds, self.seed, self.progress = folds, seed, progress
        self.attribute_heads, self.attribute_labels = (None, None) if attributes is None else attributes
        self.attribute_weight = float(attribute_weight)
        if self.attribute_heads is not None:
            self.attribute_heads.to(self.device)
        modules = [m for m in (self.text_encoder, self.image_encoder, self.attribute_heads) if m is not None]
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))  # AttnGAN pretrain_DAMSM
        self.scaler = self.precision.grad_scaler()
        self.step = 0
        self.last_attribute_loss: Tensor | None = None
        self._logger = None
        self.feature_cache = feature_cache
        self.word_r_precision = word_r_precision
        self.hard_negatives = int(hard_negatives)
        self.colour_ids = colour_token_ids(vocab) if self.hard_negatives else {}
        if self.hard_negatives < 0:
            raise ValueError(f"hard_negatives must be >= 0, got {hard_negatives}")
        if self.hard_negatives and len(set(self.colour_ids.values())) < 2:
            raise ConfigError(f"model.hard_negatives={self.hard_negatives} needs a vocabulary with at least two colour "
                              "words (red, green, ...); this one has fewer: set model.hard_negatives=0")

    # ------------------------------------------------------------------ paths and logging
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def logger(self):
        if self._logger is None:
            from t2i.training.logging import RunLogger
            self._logger = RunLogger(self.run_dir)
        return self._logger

    # ------------------------------------------------------------------ one step
    def encode_images(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(regions, global)`` of a batch's images, from the feature cache when there is one."""
        if self.feature_cache is not None:
            return self.image_encoder.project(*self.feature_cache.lookup(batch.keys, self.device))
        return self.image_encoder(batch.images[-1])

    def compute_loss(self, batch: Batch, negatives: bool = False) -> DAMSMLossOutput:
        """Encode a batch and score it (no optimisation); ``negatives``: with the colour-swapped captions."""
        with self.precision.autocast():
            text = self.text_encoder.encode(batch)
            regions, global_feat = self.encode_images(batch)
            extra = self.encode_negatives(batch) if negatives and self.hard_negatives else None
        out = self.loss_fn(regions, global_feat, text.words, text.sentence, text.pad_mask, batch.class_ids, extra)
        self.last_attribute_loss = None
        if negatives and self.attribute_heads is not None and self.attribute_weight > 0:
            heads, labels = self.attribute_heads, self.attribute_labels
            self.last_attribute_loss = (heads.loss(global_feat, labels.images(batch.keys, batch.recolourings))
                                        + heads.loss(text.sentence, labels.captions(batch.caption_texts)))
            out.loss = out.loss + self.attribute_weight * self.last_attribute_loss
        return out

    def encode_negatives(self, batch: Batch) -> CaptionNegatives:
        """The colour-swapped copies of the batch's captions, encoded (drawn from a per-step seed: resumable)."""
        k, b = self.hard_negatives, len(batch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        captions, valid = colour_swapped_captions(batch.caption_batch(), self.colour_ids, k, generator)
        text = self.text_encoder.encode_captions(captions)
        t, d = text.words.shape[1], text.words.shape[2]
        return CaptionNegatives(words=text.words.reshape(b, k, t, d), sentence=text.sentence.reshape(b, k, d),
                                pad_mask=text.pad_mask.reshape(b, k, t), valid=valid)

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step; returns the logged values.

        Raises:
            TrainingError: the loss is NaN or infinite (nothing is updated or saved).
        """
        self.text_encoder.train()
        self.image_encoder.train()
        batch = batch.to(self.device)
        # (1) encode text and images (and the colour-swapped negatives), (2) DAMSM loss (Eq. 14)
        out = self.compute_loss(batch, negatives=True)
        if not torch.isfinite(out.loss):
            raise TrainingError(f"DAMSM loss is {out.loss.item()} at step {self.step}; training stopped, the last good "
                                f"checkpoint {self.checkpoint_path} is kept (lower the lr or use precision=fp32)")
        # (3) backward, clip the text encoder's gradient norm (AttnGAN RNN_GRAD_CLIP), update
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out.loss).backward()
        self.scaler.unscale_(self.optimizer)
        nn.utils.clip_grad_norm_(self.text_encoder.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        values = {"loss/total": out.loss.item(), "loss/word": (out.word_i2t + out.word_t2i).item(),
                  "loss/sent": (out.sent_i2t + out.sent_t2i).item(), **_batch_accuracy(out, batch.class_ids)}
        if self.last_attribute_loss is not None:
            values["loss/attributes"] = self.last_attribute_loss.item()
        return values

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        """Train to ``total_steps``, evaluate, export the encoders; returns the final evaluation."""
        from tqdm.auto import tqdm

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume == "auto" and self.checkpoint_path.is_file():
            self.load_training_checkpoint(self.checkpoint_path)
        elif self.resume == "never":
            start_over(self.checkpoint_path)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, desc="damsm",
                   dynamic_ncols=True)
        t0, seen = time.perf_counter(), 0
        while self.step < self.total_steps:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            lr = damsm_lr(self.base_lr, epoch)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            generator = getattr(self.train_loader, "generator", None)
            if generator is not None:  # the same shuffle for an epoch, resumed or not
                generator.manual_seed(self.seed + epoch)
            for i, batch in enumerate(self.train_loader):
                if i < skip:
                    continue
                values = self.train_step(batch)
                seen += len(batch)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss/total']:.3f}", w=f"{values['loss/word']:.3f}",
                                s=f"{values['loss/sent']:.3f}", img_s=f"{rate:.1f}")
                if self.step % self.log_every == 0:
                    self.logger.scalars({**values, "lr": lr, "images_per_s": rate}, self.step)
                if self.step % self.ckpt_every == 0:
                    self.save_training_checkpoint()
                if self.eval_every and self.step % self.eval_every == 0:
                    self.evaluate()
                if self.step >= self.total_steps:
                    break
        bar.close()
        self.save_training_checkpoint()
        metrics = self.evaluate()
        self.export()
        self.logger.close()
        return metrics

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Test loss and R-precision (each test image: its caption vs 99 captions of other classes)."""
        if self.test_loader is None:
            return {}
        self.text_encoder.eval()
        self.image_encoder.eval()
        image_vecs, sent_vecs, class_ids, losses = [], [], [], []
        words, pad_masks = [], []
        keys: list[str] = []
        captions: list[str] = []
        for batch in self.test_loader:
            batch = batch.to(self.device)
            with self.precision.autocast():
                text = self.text_encoder.encode(batch)
                regions, global_feat = self.encode_images(batch)
            if len(batch) > 1:
                out = self.loss_fn(regions, global_feat, text.words, text.sentence, text.pad_mask, batch.class_ids)
                losses.append([(out.word_i2t + out.word_t2i).item(), (out.sent_i2t + out.sent_t2i).item()])
            image_vecs.append(global_feat.float().cpu())
            sent_vecs.append(text.sentence.float().cpu())
            words.append(text.words.float().cpu())
            pad_masks.append(text.pad_mask.cpu())
            class_ids.append(batch.class_ids.cpu())
            keys += batch.keys
            captions += batch.caption_texts
        metrics: dict[str, float] = {}
        if losses:
            metrics["test/loss_word"], metrics["test/loss_sent"] = np.mean(losses, axis=0).tolist()
        image_all, sent_all = torch.cat(image_vecs), torch.cat(sent_vecs)
        classes = torch.cat(class_ids).numpy()
        if len(image_all) >= self.folds and len(np.unique(classes)) > 1:
            idx = sample_mismatched_captions(classes, 99, rng=self.seed)  # (N, 99) indices into the test captions
            mean, std, _ = _r_precision(image_all, sent_all, idx, self.folds)
            metrics["test/r_precision"], metrics["test/r_precision_std"] = mean, std
            if self.word_r_precision:
                hits = self._word_level_hits(idx, _pad_words(words, pad_masks), keys)
                means = fold_means(hits.astype(np.float64), self.folds)
                metrics["test/r_precision_word"] = float(means.mean())
                metrics["test/r_precision_word_std"] = float(means.std())
            ceiling = _r_precision_ceiling(getattr(self.test_loader, "dataset", None), keys, captions, idx, self.folds)
            if ceiling is not None:
                metrics["test/r_precision_ceiling"], metrics["test/r_precision_ceiling_std"] = ceiling
        else:
            log.warning("R-precision skipped: %d test images of %d classes (need >= %d images, >= 2 classes)",
                        len(image_all), len(np.unique(classes)), self.folds)
        metrics.update(self._seen_r_precision() if self.seen_loader is not None else {})
        if self.attribute_heads is not None:  # how well the shared heads read unseen species
            for name, vecs, labels in (("image", image_all, self.attribute_labels.images(keys)),
                                       ("sentence", sent_all, self.attribute_labels.captions(captions))):
                acc = self.attribute_heads.accuracy(vecs.to(self.device), labels)
                if acc is not None:
                    metrics[f"test/attribute_acc_{name}"] = acc
        self.logger.scalars(metrics, self.step)
        log.info("step %d: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics

    @torch.no_grad()
    def _seen_r_precision(self) -> dict[str, float]:
        """R-precision on ``seen_loader``'s training images, as ``test/r_precision`` is computed on the test images."""
        columns: list[list[Tensor]] = [[], [], []]  # image vectors, sentence vectors, classes
        for batch in self.seen_loader:
            batch = batch.to(self.device)
            with self.precision.autocast():
                row = (self.encode_images(batch)[1], self.text_encoder.encode(batch).sentence, batch.class_ids)
            for column, value in zip(columns, row):
                column.append(value.float().cpu())
        image_all, sent_all, classes = (torch.cat(c) for c in columns)
        if len(image_all) < self.folds or len(classes.unique()) < 2:
            return {}
        idx = sample_mismatched_captions(classes.long().numpy(), 99, rng=self.seed)
        mean, std, _ = _r_precision(image_all, sent_all, idx, self.folds)
        return {"seen/r_precision": mean, "seen/r_precision_std": std}

    @torch.no_grad()
    def _word_level_hits(self, mismatched_idx: np.ndarray, text: tuple[Tensor, Tensor], keys: list[str]) -> np.ndarray:
        """R-precision hits ranked by the word-level score R(Q, D) (Eq. 10) instead of the sentence cosine.

        A second pass over the test images (their region maps are not kept): image ``i`` is scored against its
        own caption and its ``mismatched_idx[i]`` captions, whose word features come from the first pass.
        """
        words, pad_mask = text
        scores, offset = [], 0
        for batch in self.test_loader:
            if batch.keys != keys[offset:offset + len(batch)]:
                raise RuntimeError("the test loader changed its order between two passes; use shuffle=False")
            batch = batch.to(self.device)
            with self.precision.autocast():
                regions, _ = self.encode_images(batch)
            for k in range(len(batch)):
                rows = torch.from_numpy(np.concatenate([[offset + k], mismatched_idx[offset + k]]))
                row, _ = word_region_scores(regions[k:k + 1], words[rows].to(self.device),
                                            pad_mask[rows].to(self.device), self.loss_fn.gamma1,
                                            self.loss_fn.gamma2, self.loss_fn.released_eq10)
                scores.append(row.float().cpu())  # [1, 1+M]: own caption first
            offset += len(batch)
        return true_first(torch.cat(scores)).numpy()

    # ------------------------------------------------------------------ checkpoints
    def save_training_checkpoint(self) -> Path:
        """Everything needed to resume (atomic write)."""
        return save_checkpoint(self.checkpoint_path, TRAIN_KIND, {
            "text_encoder": self.text_encoder.state_dict(), "image_encoder": self.image_encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "rng": rng_state(), "config": self.config, "vocab": vocab_dict(self.vocab),
            "attribute_heads": None if self.attribute_heads is None else self.attribute_heads.state_dict()})

    def load_training_checkpoint(self, path: str | os.PathLike) -> None:
        data = load_checkpoint(path, TRAIN_KIND, self.device)
        load_state_dict_strict(self.text_encoder, data["text_encoder"], "text encoder", path)
        load_state_dict_strict(self.image_encoder, data["image_encoder"], "image encoder", path)
        if self.attribute_heads is not None:
            if data.get("attribute_heads") is None:
                raise CheckpointError(f"{path} was trained without model.attribute_weight; resume with "
                                      "model.attribute_weight=0 or start a new run_dir")
            load_state_dict_strict(self.attribute_heads, data["attribute_heads"], "attribute heads", path)
        elif data.get("attribute_heads") is not None:
            raise CheckpointError(f"{path} was trained with model.attribute_weight > 0; resume with the same "
                                  "model.attribute_weight or start a new run_dir")
        self.optimizer.load_state_dict(data["optimizer"])
        self.scaler.load_state_dict(data["scaler"])
        self.step = int(data["step"])
        set_rng_state(data["rng"])
        log.info("resumed DAMSM training from %s at step %d", path, self.step)

    def export(self) -> tuple[Path, Path]:
        """Write the text and image encoders into ``run_dir`` (:mod:`t2i.models.damsm`)."""
        text = save_text_encoder(self.run_dir, self.text_encoder, self.vocab, self.config)
        image = save_image_encoder(self.run_dir, self.image_encoder, self.config)
        log.info("DAMSM encoders written to %s and %s", text, image)
        return text, image


def _batch_accuracy(out: DAMSMLossOutput, class_ids: Tensor | None) -> dict[str, float]:
    """Within-batch top-1 retrieval accuracy, other samples of the same class excluded (as in the loss)."""
    b = out.sent_scores.shape[0]
    mask = same_class_mask(class_ids, b, out.sent_scores.device)
    labels = torch.arange(b, device=out.sent_scores.device)
    values = {}
    for name, scores in (("sent", out.sent_scores), ("word", out.word_scores)):
        s = scores.detach() if mask is None else scores.detach().masked_fill(mask, -math.inf)
        values[f"acc/{name}_img2text"] = (s.argmax(1) == labels).float().mean().item()
        values[f"acc/{name}_text2img"] = (s.argmax(0) == labels).float().mean().item()
    return values
