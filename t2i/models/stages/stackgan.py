"""StackGAN stage kinds: v1's ``stackgan_stage1`` / ``stackgan_stage2`` and StackGAN++'s ``joint``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.conditioning import ConditioningAugmentation
from t2i.models.layers import ConvBlock, DownBlock, ResBlock, UpBlock, conv3x3, tile
from t2i.models.stages.base import GeneratorStage, StageContext, StageOutput, StageSpec, num_upsamples, register_stage
from t2i.models.stages.init import InitialStage


@register_stage("stackgan_stage1")
class StackGANStage1(InitialStage):
    """StackGAN v1 Stage-I generator body (ReLU, width ``8 ngf`` at 4x4, ``ngf/2`` at 64 px)."""

    @classmethod
    def from_spec(cls, spec: StageSpec) -> StackGANStage1:
        n = num_upsamples(spec.base_size)
        return cls(spec.z_dim + spec.c_dim, spec.ngf * 2 ** (n - 1), n, "relu", **spec.options)


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
