"""The stage protocol and registry of :class:`~t2i.models.generator.MultiStageGenerator`.

A stage kind is a :class:`GeneratorStage` subclass decorated with ``@register_stage("name")`` and built
from a :class:`StageSpec` by its ``from_spec`` classmethod; it reads the previous features and a
:class:`StageContext` and returns a :class:`StageOutput`. The kinds shipped with t2i live beside this
module in ``t2i/models/stages/`` and are registered when the package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.layers import log2_int
from t2i.structures import TextEmbedding


@dataclass
class StageSpec:
    """Everything a stage kind needs to build itself (plain values; see :func:`register_stage`).

    Attributes:
        index: position of the stage in the list.
        kind: the registered kind name.
        in_channels: channels of the previous stage's features (None for an initial stage).
        in_size: spatial size of the previous stage's output (None for an initial stage).
        ngf: the generator's base width (``GAN.GF_DIM``).
        z_dim / c_dim / sent_dim / word_dim: noise, conditioning code, sentence and word feature sizes.
        res_blocks: residual blocks of this stage (``GAN.R_NUM``).
        base_size: output size of the initial stage (``TREE.BASE_SIZE``, 64).
        options: extra keyword arguments for this kind (from ``stage_options[kind]``).
    """

    index: int
    kind: str
    in_channels: int | None
    in_size: int | None
    ngf: int
    z_dim: int
    c_dim: int
    sent_dim: int
    word_dim: int | None
    res_blocks: int
    base_size: int
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageContext:
    """What every stage may read besides the previous features.

    Attributes:
        z: ``[B, z_dim]`` noise.
        c_code: ``[B, c_dim]`` conditioning code from the shared conditioning augmentation.
        text: word features ``[B, T, word_dim]``, sentence ``[B, sent_dim]``, ``pad_mask [B, T]``.
        images: images of the earlier stages, ``[B, 3, H_s, W_s]``.
        sample: whether conditioning augmentation samples (False: use ``mu``).
    """

    z: Tensor
    c_code: Tensor
    text: TextEmbedding
    images: list[Tensor]
    sample: bool = True


@dataclass
class StageOutput:
    """What a stage returns.

    Attributes:
        features: ``[B, out_channels, out_size, out_size]`` features for the next stage and the image head.
        attn: ``[B, T, h, w]`` word attention of this stage, or None.
        image: ``[B, 3, H, W]`` when the stage draws its own image (``makes_image``), else None.
        canvases: ``[B, steps, 3, H, W]`` for DRAW-like stages, else None.
        mu / logvar: ``[B, c_dim]`` when the stage has its own conditioning augmentation (StackGAN Stage-II).
    """

    features: Tensor
    attn: Tensor | None = None
    image: Tensor | None = None
    canvases: Tensor | None = None
    mu: Tensor | None = None
    logvar: Tensor | None = None


class GeneratorStage(nn.Module):
    """Base class of the stage kinds.

    Class attributes:
        initial: the stage starts from noise (must be first; only the first may be initial).
        uses_shared_ca: the stage reads the generator's conditioning code ``ctx.c_code``.
        makes_image: the stage returns its own image, so no image head is built for it.

    Instance attributes set by subclasses: ``out_channels`` and ``out_size``.
    """

    initial: ClassVar[bool] = False
    uses_shared_ca: ClassVar[bool] = True
    makes_image: ClassVar[bool] = False
    out_channels: int
    out_size: int

    @classmethod
    def from_spec(cls, spec: StageSpec) -> GeneratorStage:
        raise NotImplementedError

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        raise NotImplementedError


STAGE_KINDS: dict[str, type[GeneratorStage]] = {}


def register_stage(kind: str) -> Callable[[type[GeneratorStage]], type[GeneratorStage]]:
    """Class decorator adding a :class:`GeneratorStage` subclass to the registry under ``kind``."""

    def wrap(cls: type[GeneratorStage]) -> type[GeneratorStage]:
        if kind in STAGE_KINDS and STAGE_KINDS[kind] is not cls:
            raise ValueError(f"stage kind {kind!r} is already registered by {STAGE_KINDS[kind].__name__}")
        STAGE_KINDS[kind] = cls
        return cls

    return wrap


def num_upsamples(base_size: int) -> int:
    try:
        n = log2_int(base_size, "base_size") - 2  # from 4x4
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if n < 1:
        raise ConfigError(f"base_size must be at least 8, got {base_size}")
    return n


