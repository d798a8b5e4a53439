"""The AttnGAN refinement stage kind (``attention``): word attention, residual blocks, x2 up-block."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.attention import WordAttention
from t2i.models.layers import ResBlock, UpBlock
from t2i.models.stages.base import GeneratorStage, StageContext, StageOutput, StageSpec, register_stage


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
        reference_mask: mask the word attention as the released AttnGAN code (see :class:`WordAttention`);
            ``stage_options: {attention: {reference_mask: true}}``.
    """

    def __init__(self, channels: int, word_dim: int, res_blocks: int, in_size: int, reference_mask: bool = False):
        super().__init__()
        self.attention = WordAttention(channels, word_dim, reference_mask)
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
