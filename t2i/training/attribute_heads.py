"""Attribute supervision of the DAMSM's shared space (ours; ``model.attribute_weight``, default 0: AttnGAN).

The DAMSM trained on 60 bird species learns to tell those species apart rather than to compose part colours:
its retrieval accuracy on training batches climbs to 0.75 while its R-precision on unseen species stays near
0.15 (README "Measured figures"). CUB and the synthetic birds label every image's part colours
(``has_<part>_color::<colour>``), so the space can be told what to encode: one linear classifier per part,
**shared by both modalities**, reads the part's colour from the image's global vector (every labelled part)
and from the caption's sentence vector (the parts the caption names, parsed by
:func:`t2i.data.attributes.parse_caption_attributes`). Sharing the heads puts "green crown" at the same place
for pixels and words; the matching losses of AttnGAN are kept unchanged beside it. The heads are used in
training only: the exported encoders are the same modules as without them.

Both vectors are L2-normalised before the heads (the DAMSM compares them by cosine), and each head's
cross-entropy ignores the unlabelled entries (``-1``); the loss is the mean over parts that have a label
in the batch, summed over the two modalities.

With palette swaps (``data.recolour``) an image's labels are its species' part colours passed through the swap
drawn for it (``Batch.recolourings``), so the heads see colour schemes that no species fixes.

Measured on the synthetic birds (README, "Part-colour heads"): the sentence heads read unseen species' captions
(0.91), the image heads do not (0.41 on unseen species, 0.999 on the training ones), and an AttnGAN trained on such
a DAMSM scores lower attribute accuracy (0.577 against 0.641); the option stays off.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.data.attributes import colour_attributes, colour_schema, parse_caption_attributes
from t2i.errors import ConfigError


def dataset_colour_schema(records: Sequence[Any]) -> dict[str, list[str]]:
    """``{part: sorted colours}`` of the colour parts labelled in ``records`` (empty when none are)."""
    values: dict[str, set[str]] = {}
    for record in records:
        for part, value in (record.attributes or {}).items():
            values.setdefault(part, set()).add(value)
    return colour_schema({part: sorted(v) for part, v in values.items()})


class AttributeHeads(nn.Module):
    """One linear classifier per part over unit-normalised ``[B, dim]`` vectors.

    Args:
        schema: ``{part: [colour, ...]}`` in label order.
        dim: the embedding size (the DAMSM's ``out_dim``).
        scale: the normalised vectors are multiplied by this before the heads (a fixed temperature, as the
            DAMSM's gamma3 for its cosines).
    """

    def __init__(self, schema: Mapping[str, Sequence[str]], dim: int, scale: float = 10.0):
        super().__init__()
        if not schema:
            raise ValueError("attribute heads need a schema with at least one part")
        self.schema = {part: list(values) for part, values in schema.items()}
        self.scale = float(scale)
        self.heads = nn.ModuleDict({part: nn.Linear(dim, len(values)) for part, values in self.schema.items()})

    def logits(self, vectors: Tensor) -> dict[str, Tensor]:
        """``{part: [B, n_values]}`` logits."""
        x = F.normalize(vectors.float(), dim=1) * self.scale
        return {part: head(x) for part, head in self.heads.items()}

    def loss(self, vectors: Tensor, labels: Tensor) -> Tensor:
        """Mean cross-entropy over the parts labelled in the batch; ``labels`` ``[B, P]`` (``-1``: unknown).

        Zero (with a graph) when nothing is labelled."""
        terms = []
        for p, logits in enumerate(self.logits(vectors).values()):
            target = labels[:, p].to(logits.device)
            if bool((target >= 0).any()):
                terms.append(F.cross_entropy(logits, target, ignore_index=-1))
        return torch.stack(terms).mean() if terms else vectors.sum() * 0.0

    def accuracy(self, vectors: Tensor, labels: Tensor) -> float | None:
        """Fraction of the labelled entries predicted right (None when nothing is labelled)."""
        hits = total = 0
        for p, logits in enumerate(self.logits(vectors).values()):
            target = labels[:, p].to(logits.device)
            known = target >= 0
            hits += int((logits.argmax(1)[known] == target[known]).sum())
            total += int(known.sum())
        return hits / total if total else None


class AttributeLabels:
    """Label rows of the images (by record key) and of caption strings, in an :class:`AttributeHeads` schema.

    Args:
        records: every record whose image may appear in a batch (train and test).
        schema: ``{part: [colour, ...]}``.
    """

    def __init__(self, records: Sequence[Any], schema: Mapping[str, Sequence[str]]):
        self.schema = {part: list(values) for part, values in schema.items()}
        self.parts = list(self.schema)
        self.named = {r.key: colour_attributes(r.attributes, self.schema) for r in records}
        self.by_key = {key: self._row(named) for key, named in self.named.items()}

    def _row(self, named: Mapping[str, str]) -> list[int]:
        """Label indices of ``{part: colour}`` (``-1`` for a part not named, or named with a colour outside the
        schema)."""
        values = self.schema
        return [values[p].index(named[p]) if named.get(p) in values[p] else -1 for p in self.parts]

    def images(self, keys: Sequence[str], recolourings: Sequence[Mapping[str, str] | None] = ()) -> Tensor:
        """``[B, P]`` labels of the images ``keys`` (all ``-1`` for a key without attributes); with
        ``recolourings`` (one palette swap or None per key, :attr:`t2i.structures.Batch.recolourings`), of the
        swapped images."""
        if recolourings and len(recolourings) != len(keys):
            raise ValueError(f"{len(recolourings)} recolourings for {len(keys)} images")
        blank = [-1] * len(self.parts)
        rows = []
        for i, key in enumerate(keys):
            swap = recolourings[i] if recolourings else None
            if swap is None or key not in self.named:
                rows.append(self.by_key.get(key, blank))
            else:
                rows.append(self._row({p: swap.get(c, c) for p, c in self.named[key].items()}))
        return torch.tensor(rows, dtype=torch.long).reshape(len(keys), len(self.parts))

    def captions(self, texts: Sequence[str]) -> Tensor:
        """``[B, P]`` labels of the colours each caption names (``-1`` for the parts it does not name)."""
        rows = [self._row(parse_caption_attributes(t, self.schema)) for t in texts]
        return torch.tensor(rows, dtype=torch.long).reshape(len(texts), len(self.parts))


def build_attribute_supervision(records: Sequence[Any], dim: int, weight: float,
                                colours: Sequence[str] = ()) -> tuple[AttributeHeads, AttributeLabels]:
    """Heads and label lookup for ``model.attribute_weight=weight`` over a data set's records.

    Args:
        colours: colours every part may take besides those labelled in ``records`` (the palette that
            ``data.recolour`` permutes: a swapped crown may wear any of them).

    Raises:
        ConfigError: the records carry no colour attributes.
    """
    schema = dataset_colour_schema(records)
    if colours:
        schema = {part: sorted(set(values) | set(colours)) for part, values in schema.items()}
    if not schema:
        raise ConfigError(f"model.attribute_weight={weight} needs images with part-colour attributes (CUB's "
                          "attributes/image_attribute_labels.txt, or the synthetic birds); this data set has none: "
                          "set model.attribute_weight=0")
    return AttributeHeads(schema, dim), AttributeLabels(records, schema)
