"""Initial stage kinds: noise and conditioning code to the first feature map (``init``, AttnGAN/StackGAN++)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.layers import UpBlock
from t2i.models.stages.base import GeneratorStage, StageContext, StageOutput, StageSpec, num_upsamples, register_stage


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
        n = num_upsamples(spec.base_size)
        return cls(spec.z_dim + spec.c_dim, spec.ngf * 2 ** n, n, "glu", **spec.options)

    def forward(self, features: Tensor | None, ctx: StageContext) -> StageOutput:
        x = self.fc(torch.cat([ctx.c_code, ctx.z], dim=1))  # (B, channels * 16), AttnGAN cat((c, z))
        x = x.view(x.shape[0], self.channels, 4, 4)  # (B, C, 4, 4)
        return StageOutput(self.upsample(x))
