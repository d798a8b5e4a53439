"""Multi-stage text-to-image generators: StackGAN v1, StackGAN++ and AttnGAN from one stage list.

A generator is a conditioning-augmentation network followed by stages built in a loop from a list of
stage kinds (DESIGN.md §2, STYLE.md 1), e.g. AttnGAN ``[init, attention, attention]``, StackGAN++
``[init, joint, joint]``, StackGAN v1 ``[stackgan_stage1, stackgan_stage2]``. Every stage is followed by
its own image head (conv3x3 -> tanh, the references' ``GET_IMAGE_G``), unless the stage draws its image
itself (``makes_image``, e.g. a DRAW writer).

Stage kinds live in a registry: a new kind is a :class:`GeneratorStage` subclass decorated with
``@register_stage("name")`` and built from a :class:`StageSpec` by its ``from_spec`` classmethod.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.attention import WordAttention
from t2i.models.conditioning import ConditioningAugmentation
from t2i.models.layers import (ConvBlock, DownBlock, ResBlock, UpBlock, cast_tuple, conv3x3, init_weights,
                               log2_int, tile)
from t2i.structures import GeneratorOutput, TextEmbedding

log = logging.getLogger(__name__)


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


def _num_upsamples(base_size: int) -> int:
    try:
        n = log2_int(base_size, "base_size") - 2  # from 4x4
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if n < 1:
        raise ConfigError(f"base_size must be at least 8, got {base_size}")
    return n


@register_stage("init")
class InitialStage(GeneratorStage):
    """Noise and conditioning code to the first feature map.

    ``init`` (AttnGAN / StackGAN++ ``INIT_STAGE_G``): ``fc: z+c -> 2 * 16ngf * 4 * 4`` (no bias), BN1d, GLU,
    then GLU up-blocks halving the width: ``16ngf x 4 x 4 -> ngf x 64 x 64``.
    ``stackgan_stage1`` (StackGAN v1 ``STAGE1_G`` without its head): ``fc: z+c -> 8ngf * 4 * 4``, BN1d,
    ReLU, then ReLU up-blocks ``8ngf x 4 x 4 -> ngf/2 x 64 x 64``.

    Args:
        in_dim: ``z_dim + c_dim``.
        channels: width at 4x4.
        num_upsamples: number of x2 up-blocks (4 for 64 px).
        activation: ``glu`` or ``relu``.
    """

    initial = True

    def __init__(self, in_dim: int, channels: int, num_upsamples: int, activation: str = "glu"):
        super().__init__()
        if channels % 2 ** num_upsamples:
            raise ConfigError(f"initial stage width {channels} cannot be halved {num_upsamples} times; "
                              f"use a larger ngf")
        width = channels * 16 * (2 if activation == "glu" else 1)
        act = nn.GLU(dim=1) if activation == "glu" else nn.ReLU(inplace=True)
        self.fc = nn.Sequential(nn.Linear(in_dim, width, bias=False), nn.BatchNorm1d(width), act)
        self.channels = channels
        self.upsample = nn.Sequential(*[UpBlock(channels >> i, channels >> (i + 1), activation)
                                        for i in range(num_upsamples)])
        self.out_channels = channels >> num_upsamples
        self.out_size = 4 * 2 ** num_upsamples

    @classmethod
    def from_spec(cls, spec: StageSpec) -> InitialStage:
        n = _num_upsamples(spec.base_size)
        return cls(spec.z_dim + spec.c_dim, spec.ngf * 2 ** n, n, "glu", **spec.options)

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        x = self.fc(torch.cat([ctx.c_code, ctx.z], dim=1))  # (B, channels * 16), AttnGAN cat((c, z))
        x = x.view(x.shape[0], self.channels, 4, 4)  # (B, C, 4, 4)
        return StageOutput(self.upsample(x))


@register_stage("stackgan_stage1")
class StackGANStage1(InitialStage):
    """StackGAN v1 Stage-I generator body (ReLU, width ``8 ngf`` at 4x4, ``ngf/2`` at 64 px)."""

    @classmethod
    def from_spec(cls, spec: StageSpec) -> StackGANStage1:
        n = _num_upsamples(spec.base_size)
        return cls(spec.z_dim + spec.c_dim, spec.ngf * 2 ** (n - 1), n, "relu", **spec.options)


@register_stage("attention")
class AttentionStage(GeneratorStage):
    """AttnGAN ``NEXT_STAGE_G``: word attention, residual blocks, x2 up-block.

    ``h_{i} = F_i(h_{i-1}, F^attn(e, h_{i-1}))`` (AttnGAN Eq. (1)): the word-context features (Eq. (2)) are
    concatenated with ``h``, passed through ``res_blocks`` GLU residual blocks at ``2C`` and a GLU up-block
    back to ``C``.

    Args:
        channels: ``C``, the width of the incoming (and outgoing) features (``ngf``).
        word_dim: size of the word features.
        res_blocks: number of residual blocks (``GAN.R_NUM``).
        in_size: incoming spatial size.
    """

    def __init__(self, channels: int, word_dim: int, res_blocks: int, in_size: int):
        super().__init__()
        self.attention = WordAttention(channels, word_dim)
        self.residual = nn.Sequential(*[ResBlock(2 * channels, "glu") for _ in range(res_blocks)])
        self.upsample = UpBlock(2 * channels, channels, "glu")
        self.out_channels = channels
        self.out_size = 2 * in_size

    @classmethod
    def from_spec(cls, spec: StageSpec) -> AttentionStage:
        if spec.word_dim is None:
            raise ConfigError(f"stage {spec.index} is an attention stage but word_dim was not given; "
                              f"pass word_dim from the text encoder")
        return cls(spec.in_channels, spec.word_dim, spec.res_blocks, spec.in_size, **spec.options)

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        context, attn = self.attention(features, ctx.text.words, ctx.text.pad_mask)  # Eq. (2)-(3)
        x = torch.cat([features, context], dim=1)  # (B, 2C, H, W)
        x = self.upsample(self.residual(x))  # (B, C, 2H, 2W)
        return StageOutput(x, attn=attn)


@register_stage("joint")
class JointStage(GeneratorStage):
    """StackGAN++ ``NEXT_STAGE_G``: joint conv with the tiled code, residual blocks, x2 up-block.

    ``[h, c]`` -> GLU conv3x3 to ``C`` -> ``res_blocks`` GLU residual blocks -> GLU up-block to ``C/2``.
    """

    def __init__(self, channels: int, c_dim: int, res_blocks: int, in_size: int):
        super().__init__()
        if channels % 2:
            raise ConfigError(f"joint stage width {channels} is odd and cannot be halved; use a larger ngf")
        self.joint = ConvBlock(channels + c_dim, channels, "glu")
        self.residual = nn.Sequential(*[ResBlock(channels, "glu") for _ in range(res_blocks)])
        self.upsample = UpBlock(channels, channels // 2, "glu")
        self.out_channels = channels // 2
        self.out_size = 2 * in_size

    @classmethod
    def from_spec(cls, spec: StageSpec) -> JointStage:
        return cls(spec.in_channels, spec.c_dim, spec.res_blocks, spec.in_size, **spec.options)

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        x = torch.cat([features, tile(ctx.c_code, features.shape[-1])], dim=1)  # (B, C + c_dim, H, W)
        x = self.upsample(self.residual(self.joint(x)))  # (B, C/2, 2H, 2W)
        return StageOutput(x)


@register_stage("stackgan_stage2")
class StackGANStage2(GeneratorStage):
    """StackGAN v1 ``STAGE2_G`` (without Stage-I and the head): refine the previous image x4.

    The (detached) previous image is encoded by conv3x3 + ReLU and two stride-2 ReLU down-blocks to
    ``4ngf x in/4``, joined with its *own* conditioning code (Stage-II has its own ``CA_NET``, ReLU form)
    by a conv3x3-BN-ReLU, passed through ``res_blocks`` ReLU residual blocks and four ReLU up-blocks:
    ``64 -> 16 -> 32 -> 64 -> 128 -> 256``, ``4ngf -> ngf/4``.
    """

    uses_shared_ca = False

    def __init__(self, ngf: int, c_dim: int, sent_dim: int, res_blocks: int, in_size: int,
                 ca_activation: str = "relu"):
        super().__init__()
        if ngf % 4:
            raise ConfigError(f"stackgan_stage2 needs ngf divisible by 4, got {ngf}")
        self.ca = ConditioningAugmentation(sent_dim, c_dim, ca_activation)
        self.encoder = nn.Sequential(conv3x3(3, ngf), nn.ReLU(inplace=True),
                                     DownBlock(ngf, 2 * ngf, activation="relu"),
                                     DownBlock(2 * ngf, 4 * ngf, activation="relu"))
        self.joint = ConvBlock(c_dim + 4 * ngf, 4 * ngf, "relu")
        self.residual = nn.Sequential(*[ResBlock(4 * ngf, "relu") for _ in range(res_blocks)])
        widths = [4 * ngf, 2 * ngf, ngf, ngf // 2, ngf // 4]
        self.upsample = nn.Sequential(*[UpBlock(a, b, "relu") for a, b in zip(widths[:-1], widths[1:])])
        self.out_channels = ngf // 4
        self.out_size = 4 * in_size

    @classmethod
    def from_spec(cls, spec: StageSpec) -> StackGANStage2:
        return cls(spec.ngf, spec.c_dim, spec.sent_dim, spec.res_blocks, spec.in_size, **spec.options)

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        encoded = self.encoder(ctx.images[-1].detach())  # (B, 4ngf, H/4, W/4); Stage-I is not trained here
        c_code, mu, logvar = self.ca(ctx.text.sentence, ctx.sample)
        x = torch.cat([encoded, tile(c_code, encoded.shape[-1])], dim=1)  # (B, 4ngf + c_dim, H/4, W/4)
        x = self.upsample(self.residual(self.joint(x)))  # (B, ngf/4, 4H, 4W)
        return StageOutput(x, mu=mu, logvar=logvar)


class ImageHead(nn.Sequential):
    """conv3x3 (no bias) -> tanh: features to an RGB image in [-1, 1] (the references' ``GET_IMAGE_G``)."""

    def __init__(self, channels: int):
        super().__init__(conv3x3(channels, 3), nn.Tanh())


class MultiStageGenerator(nn.Module):
    """Conditioning augmentation + a list of stages, each with an image head.

    Args:
        stages: stage kinds, e.g. ``["init", "attention", "attention"]`` (AttnGAN), ``["init", "joint",
            "joint"]`` (StackGAN++), ``["stackgan_stage1", "stackgan_stage2"]`` (StackGAN v1). The first must
            be an initial kind; see ``STAGE_KINDS`` for all.
        ngf: base width (``GAN.GF_DIM``): AttnGAN keeps ``ngf`` in every stage; StackGAN++ halves it per
            stage; StackGAN v1 uses ``8ngf .. ngf/2`` in Stage-I and ``4ngf .. ngf/4`` in Stage-II.
        z_dim: noise size (``GAN.Z_DIM``).
        c_dim: conditioning code size (``GAN.CONDITION_DIM`` / ``GAN.EMBEDDING_DIM``).
        sent_dim: sentence vector size (from the text encoder).
        word_dim: word feature size (from the text encoder; needed by attention stages).
        res_blocks: residual blocks per stage, a scalar or one value per stage (ignored by initial stages).
        base_size: output size of the initial stage.
        resolutions: expected output size of every stage; checked against the stage list when given.
        ca_activation: ``glu`` (AttnGAN, StackGAN++) or ``relu`` (StackGAN v1).
        freeze_stages: indices of stages whose weights stay fixed (StackGAN v1 trains Stage-II on a
            frozen Stage-I: ``freeze_stages=[0]``).
        init: weight initialisation, ``orthogonal`` (AttnGAN, StackGAN++), ``normal`` (StackGAN v1), ``default``.
        stage_options: extra keyword arguments per stage kind, ``{kind: {...}}``.

    Raises:
        ConfigError: an empty or malformed stage list, an unknown kind, or ``resolutions`` that disagree.
    """

    def __init__(self, stages: Sequence[str], ngf: int, z_dim: int, c_dim: int, sent_dim: int,
                 word_dim: int | None = None, res_blocks: int | Sequence[int] = 2, base_size: int = 64,
                 resolutions: Sequence[int] | None = None, ca_activation: str = "glu",
                 freeze_stages: Sequence[int] = (), init: str = "orthogonal",
                 stage_options: dict[str, dict[str, Any]] | None = None):
        super().__init__()
        stages = list(stages)
        self._check_stage_list(stages)
        try:
            res_per_stage = cast_tuple(res_blocks, len(stages), "res_blocks")
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.stage_kinds = stages
        self.z_dim, self.c_dim = z_dim, c_dim
        self.ca = ConditioningAugmentation(sent_dim, c_dim, ca_activation)
        self.stages = nn.ModuleList()
        self.heads = nn.ModuleList()
        channels: int | None = None
        size: int | None = None
        for index, kind in enumerate(stages):
            spec = StageSpec(index=index, kind=kind, in_channels=channels, in_size=size, ngf=ngf, z_dim=z_dim,
                             c_dim=c_dim, sent_dim=sent_dim, word_dim=word_dim, res_blocks=res_per_stage[index],
                             base_size=base_size, options=dict((stage_options or {}).get(kind, {})))
            stage = STAGE_KINDS[kind].from_spec(spec)
            self.stages.append(stage)
            # A stage that draws its own image gets no head; Identity keeps indices aligned, no weights.
            self.heads.append(nn.Identity() if stage.makes_image else ImageHead(stage.out_channels))
            channels, size = stage.out_channels, stage.out_size
        self.resolutions = [stage.out_size for stage in self.stages]
        if resolutions is not None and list(resolutions) != self.resolutions:
            raise ConfigError(f"stages {stages} produce resolutions {self.resolutions} but resolutions="
                              f"{list(resolutions)} was asked; change one of them")
        init_weights(self, init)
        self.frozen: set[int] = set()
        for index in freeze_stages:
            self.freeze_stage(index)

    @staticmethod
    def _check_stage_list(stages: list[str]) -> None:
        if not stages:
            raise ConfigError("the generator's stage list is empty; give at least one initial stage, e.g. [init]")
        unknown = [kind for kind in stages if kind not in STAGE_KINDS]
        if unknown:
            raise ConfigError(f"unknown stage kind(s) {unknown}; known kinds: {', '.join(sorted(STAGE_KINDS))}")
        initial = sorted(k for k, cls in STAGE_KINDS.items() if cls.initial)
        if not STAGE_KINDS[stages[0]].initial:
            raise ConfigError(f"the first stage must be an initial kind ({', '.join(initial)}), got {stages[0]!r}")
        later = [kind for kind in stages[1:] if STAGE_KINDS[kind].initial]
        if later:
            raise ConfigError(f"only the first stage may be an initial kind; {later} appear later in {stages}")

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_modules(self) -> list[nn.Module]:
        """One module group per stage (the stage and its image head), for training schedules that switch
        stages on and off (``requires_grad_``). The shared conditioning augmentation belongs to the first
        stage's group when that stage reads it: StackGAN v1's ``CA_NET`` is part of ``STAGE1_G``.
        """
        groups: list[nn.Module] = []
        for index, (stage, head) in enumerate(zip(self.stages, self.heads)):
            members = [stage, head] + ([self.ca] if index == 0 and stage.uses_shared_ca else [])
            groups.append(nn.ModuleList(members))
        return groups

    def freeze_stage(self, index: int) -> None:
        """Fix the weights of stage ``index`` and its head (kept in eval mode, so BatchNorm statistics
        stay fixed too). The shared conditioning augmentation is frozen once every stage that reads it is.
        """
        if not 0 <= index < len(self.stages):
            raise ConfigError(f"cannot freeze stage {index}: the generator has {len(self.stages)} stages "
                              f"{self.stage_kinds}")
        self.frozen.add(index)
        for module in (self.stages[index], self.heads[index]):
            module.requires_grad_(False).eval()
        readers = [i for i, stage in enumerate(self.stages) if stage.uses_shared_ca]
        if all(i in self.frozen for i in readers):
            self.ca.requires_grad_(False).eval()
        log.info("froze generator stage %d (%s)", index, self.stage_kinds[index])

    def train(self, mode: bool = True) -> MultiStageGenerator:
        super().train(mode)
        for index in self.frozen:
            self.stages[index].eval()
            self.heads[index].eval()
        if not any(p.requires_grad for p in self.ca.parameters()):
            self.ca.eval()
        return self

    def forward(self, z: Tensor, text: TextEmbedding, sample: bool = True) -> GeneratorOutput:
        """Generate one image per stage.

        Args:
            z: ``[B, z_dim]`` noise.
            text: word features ``[B, T, word_dim]``, sentence ``[B, sent_dim]``, ``pad_mask [B, T]``.
            sample: conditioning augmentation samples ``c`` (True, as in training) or uses ``mu``.

        Returns:
            ``GeneratorOutput`` with ``images`` (one ``[B, 3, R_s, R_s]`` per stage), ``attn_maps`` (one
            ``[B, T, R_{s-1}, R_{s-1}]`` per attention stage), and ``mu``/``logvar`` ``[B, c_dim]`` of the
            last conditioning augmentation used (Stage-II's own for StackGAN v1).
        """
        c_code, mu, logvar = self.ca(text.sentence, sample)
        ctx = StageContext(z=z, c_code=c_code, text=text, images=[], sample=sample)
        features: Tensor | None = None
        attn_maps: list[Tensor] = []
        canvases: Tensor | None = None
        for stage, head in zip(self.stages, self.heads):
            out = stage(features, ctx)
            image = out.image if stage.makes_image else head(out.features)
            ctx.images.append(image)
            if out.attn is not None:
                attn_maps.append(out.attn)
            if out.mu is not None:
                mu, logvar = out.mu, out.logvar
            if out.canvases is not None:
                canvases = out.canvases
            features = out.features
        return GeneratorOutput(images=ctx.images, attn_maps=attn_maps, mu=mu, logvar=logvar, canvases=canvases)


from t2i.models import draw_stage  # noqa: E402,F401  registers the "draw" stage kind
