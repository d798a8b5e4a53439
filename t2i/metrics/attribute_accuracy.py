"""Attribute accuracy (ours): does a generated image show the attributes its caption names?

A small CNN with one softmax head per part (:class:`AttributeClassifier`) is trained on real images with
per-part labels (e.g. CUB's ``has_<part>_color::<value>`` attributes, or the synthetic birds' labels). A
generated image then scores the fraction of the attributes named in its caption (``"green crown"``,
``"black wings"``) that the classifier predicts; the metric is the mean over images that name at least one
attribute of the schema. Real test images scored against their own captions give the ceiling.

Data interface: images ``[N, 3, H, W]`` in [-1, 1]; labels ``[N, num_parts]`` long class indices in
schema order, ``-1`` where unknown.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.data.attributes import Schema
from t2i.errors import DataError
from t2i.io import load_checkpoint, load_state_dict_strict, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "attribute_classifier"


class AttributeClassifier(nn.Module):
    """Small CNN predicting one value per part (one softmax head each).

    Args:
        schema: ``{part: [value, ...]}``, e.g. ``{"crown": ["red", "green", ...], "wing": [...]}``.
        width: channels of the first block (doubling at each of the ``log2(image_size / 4)`` blocks).
        image_size: side the images are resized to (a power of two, at least 8).
    """

    def __init__(self, schema: Schema, width: int = 32, image_size: int = 64):
        super().__init__()
        if not schema or any(len(v) < 2 for v in schema.values()):
            raise ValueError(f"attribute schema needs at least one part with two or more values, got {dict(schema)}")
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        self.schema = {part: list(values) for part, values in schema.items()}
        self.width, self.image_size = width, image_size
        blocks, channels = [], 3
        for i in range(int(math.log2(image_size // 4))):  # image_size -> 4
            out = width * 2 ** i
            blocks += [nn.Conv2d(channels, out, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({part: nn.Linear(channels, len(values)) for part, values in self.schema.items()})

    @property
    def parts(self) -> list[str]:
        return list(self.schema)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Per-part logits.

        Args:
            images: ``[N, 3, H, W]`` in [-1, 1]; resized to ``image_size`` if needed.

        Returns:
            ``{part: [N, num_values]}`` logits.
        """
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        pooled = self.features(images).mean(dim=(2, 3))  # [N, C]
        return {part: head(pooled) for part, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
        """Predicted value index per part, ``{part: [N]}`` long (eval mode, batched)."""
        was_training = self.training
        self.eval()
        outs = [self(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        self.train(was_training)
        return {part: torch.cat([o[part] for o in outs]).argmax(dim=1) for part in self.schema}

    def loss(self, images: Tensor, labels: Tensor) -> Tensor:
        """Sum over parts of the cross-entropy on known labels (``labels [N, P]``, -1 ignored)."""
        logits = self(images)
        losses = [F.cross_entropy(logits[part], labels[:, i], ignore_index=-1, reduction="sum")
                  for i, part in enumerate(self.schema)]
        return torch.stack(losses).sum() / (labels >= 0).sum().clamp(min=1)


def train_attribute_classifier(classifier: AttributeClassifier, batches: Iterable[tuple[Tensor, Tensor]],
                               steps: int, lr: float = 2e-3, flip: bool = True,
                               device: str | torch.device = "cpu") -> list[float]:
    """Train ``classifier`` with Adam for ``steps`` steps on ``(images [B,3,H,W], labels [B,P])`` batches.

    ``batches`` is re-iterated when exhausted (a list of tensors or a DataLoader both work). Random
    horizontal flips (labels are colours, which flips keep) are used when ``flip``.

    Returns:
        the loss of every step.
    """
    classifier.to(device).train()
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, betas=(0.5, 0.999))
    losses: list[float] = []
    stream = itertools.chain.from_iterable(itertools.repeat(batches))
    for step, (images, labels) in zip(range(steps), stream):
        images, labels = images.to(device), labels.to(device).long()
        if flip:
            mask = torch.rand(images.shape[0], device=device) < 0.5
            images = torch.where(mask[:, None, None, None], images.flip(3), images)
        loss = classifier.loss(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0:
            log.info("attribute classifier step %d loss %.4f", step, losses[-1])
    return losses


def save_attribute_classifier(path: str | os.PathLike, classifier: AttributeClassifier) -> None:
    """Atomically save the classifier with its schema and sizes (kind ``attribute_classifier``)."""
    config = {"schema": classifier.schema, "width": classifier.width, "image_size": classifier.image_size}
    state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
    save_checkpoint(path, CHECKPOINT_KIND, {"config": config, "state_dict": state})


def load_attribute_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> AttributeClassifier:
    """Rebuild a saved classifier (eval mode, frozen).

    Raises:
        CheckpointError: missing file, another kind of checkpoint, or weights that do not fit.
    """
    data = load_checkpoint(path, kinds=CHECKPOINT_KIND)
    config = data["config"]
    classifier = AttributeClassifier(config["schema"], width=config["width"], image_size=config["image_size"])
    load_state_dict_strict(classifier, data["state_dict"], "attribute classifier", path)
    return classifier.requires_grad_(False).eval().to(device)


def _value_index(schema: Schema, part: str, value: str | int) -> int:
    values = list(schema[part])
    if isinstance(value, int) and 0 <= value < len(values):
        return value
    if isinstance(value, str) and value in values:
        return values.index(value)
    raise DataError(f"attribute value {value!r} of part {part!r} is not in the schema ({', '.join(values)})")


def named_to_labels(named: Sequence[Mapping[str, str | int]], schema: Schema) -> Tensor:
    """``[N, P]`` long labels (value index per schema part, -1 where not named) from ``{part: value}`` dicts."""
    parts = list(schema)
    labels = torch.full((len(named), len(parts)), -1, dtype=torch.long)
    for n, attrs in enumerate(named):
        for part, value in attrs.items():
            if part in schema:
                labels[n, parts.index(part)] = _value_index(schema, part, value)
    return labels


def attribute_accuracy(pred: Mapping[str, Tensor], named: Sequence[Mapping[str, str | int]], schema: Schema) -> float:
    """Mean over images of the fraction of caption-named attributes the classifier predicts.

    Args:
        pred: ``{part: [N]}`` predicted value indices (:meth:`AttributeClassifier.predict`).
        named: per image, the ``{part: value}`` its caption names (value as a string of ``schema[part]`` or an index).
        schema: ``{part: [value, ...]}`` of the classifier.

    Returns:
        the accuracy in [0, 1]; images naming no schema attribute are left out.

    Raises:
        DataError: sizes disagree, or no image names any attribute.
    """
    n = len(named)
    if any(len(p) != n for p in pred.values()):
        raise DataError(f"attribute accuracy: {n} captions but predictions of sizes {[len(p) for p in pred.values()]}")
    scores = []
    for i, attrs in enumerate(named):
        checks = [int(pred[part][i]) == _value_index(schema, part, value)
                  for part, value in attrs.items() if part in schema and part in pred]
        if checks:
            scores.append(sum(checks) / len(checks))
    if not scores:
        raise DataError("attribute accuracy: no caption names an attribute of the classifier's schema")
    return sum(scores) / len(scores)
