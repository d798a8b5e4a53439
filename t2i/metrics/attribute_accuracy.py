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
import re
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.data.synthbirds import ATTRIBUTE_PART_NAMES, COLOUR_WORDS, PART_WORDS
from t2i.data.synthbirds import PARTS as SYNTH_PARTS
from t2i.errors import DataError
from t2i.io import load_checkpoint, load_state_dict_strict, save_checkpoint

log = logging.getLogger(__name__)

Schema = Mapping[str, Sequence[str]]
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


def _colour_part(part: str) -> str | None:
    if not part.endswith("_color"):
        return None
    name = part.removesuffix("_color")
    by_cub = {v: k for k, v in ATTRIBUTE_PART_NAMES.items()}
    return by_cub.get(name, name)


def colour_schema(schema: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The colour parts of a data set's attribute schema, under the caption parser's part names.

    CUB names ``has_<part>_color::<colour>`` (``primary_color``, ``bill_color``, ``upper_tail_color``...); captions
    name ``body``, ``beak``, ``tail`` (:data:`t2i.data.synthbirds.ATTRIBUTE_PART_NAMES` maps them; other CUB parts
    keep their name without ``_color``). Non-colour attributes (bill length, size, shapes, patterns) are left out;
    parts already in caption terms (``crown``) pass unchanged.
    """
    out: dict[str, list[str]] = {}
    for part, values in schema.items():
        name = _colour_part(part) if part.endswith("_color") else (part if part in SYNTH_PARTS else None)
        if name is not None and len(values) >= 2:
            out[name] = list(values)
    return out


def colour_attributes(attributes: Mapping[str, str] | None, schema: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """A record's attributes renamed as :func:`colour_schema` and restricted to it."""
    out = {}
    for part, value in (attributes or {}).items():
        name = _colour_part(part) if part.endswith("_color") else part
        if name in schema and value in schema[name]:
            out[name] = value
    return out


def parse_caption_attributes(caption: str, schema: Schema, part_words: Mapping[str, str] | None = None,
                             value_words: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ``{part: value}`` a caption names, from ``"<value> <part word>"`` mentions.

    ``"this bird has a green crown, black wings and a white belly"`` -> ``{"crown": "green", "wing": "black",
    "belly": "white"}``. Part words are the part names, their synonyms and ``-ed`` adjectives (``wings``,
    ``chest``, ``bill``, ``crowned``...; default: the synthetic birds' ``PART_WORDS``); value words map to values
    (default: ``COLOUR_WORDS``, so ``gray`` is ``grey``). A value right before ``bird``, or after ``is`` /
    ``mostly``, names the ``body``. The first mention of a part wins; pairs outside ``schema`` are ignored.
    """
    part_words = {**{p: p for p in schema}, **(PART_WORDS if part_words is None else part_words)}
    value_words = {**{v: v for values in schema.values() for v in values},
                   **(COLOUR_WORDS if value_words is None else value_words)}
    tokens = re.findall(r"[a-z]+", caption.lower())
    named: dict[str, str] = {}
    for i, token in enumerate(tokens):
        value = value_words.get(token)
        if value is None:
            continue
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        preceding = tokens[i - 1] if i > 0 else ""
        part = part_words.get(following)
        if part is None and (following == "bird" or preceding in ("is", "mostly")):
            part = "body"
        if part in schema and value in schema[part] and part not in named:
            named[part] = value
    return named


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
