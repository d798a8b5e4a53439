"""Multi-stage text-to-image generators: StackGAN v1, StackGAN++ and AttnGAN from one stage list.

A generator is a conditioning-augmentation network followed by stages built in a loop from a list of
stage kinds (DESIGN.md §2, STYLE.md 1), e.g. AttnGAN ``[init, attention, attention]``, StackGAN++
``[init, joint, joint]``, StackGAN v1 ``[stackgan_stage1, stackgan_stage2]``. Every stage is followed by
its own image head (conv3x3 -> tanh, the references' ``GET_IMAGE_G``), unless the stage draws its image
itself (``makes_image``, e.g. a DRAW writer).

Stage kinds live in a registry (:mod:`t2i.models.stages`): a new kind is a :class:`GeneratorStage`
subclass decorated with ``@register_stage("name")`` in a module of that package, built from a
:class:`StageSpec` by its ``from_spec`` classmethod.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.conditioning import ConditioningAugmentation
from t2i.models.factory import register_model
from t2i.models.layers import cast_tuple, conv3x3, init_weights
from t2i.models.stages import STAGE_KINDS, StageContext, StageSpec
from t2i.structures import GeneratorOutput, TextEmbedding

log = logging.getLogger(__name__)


class ImageHead(nn.Sequential):
    """conv3x3 (no bias) -> tanh: features to an RGB image in [-1, 1] (the references' ``GET_IMAGE_G``)."""

    def __init__(self, channels: int):
        super().__init__(conv3x3(channels, 3), nn.Tanh())


@register_model
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
