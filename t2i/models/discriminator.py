"""One discriminator class for every resolution (STYLE.md 1): AttnGAN, StackGAN++ and StackGAN v1.

The image encoder is derived from the resolution: ``log2(R) - 2`` stride-2 4x4 convolutions double the
width from ``ndf`` (the first without BatchNorm) down to 4x4, then 3x3 conv-BN-LeakyReLU blocks halve it
back to ``8 ndf``. For R = 64/128/256 this is exactly AttnGAN's / StackGAN++'s ``D_NET64/128/256``
(``encode_image_by_16times`` + ``downBlock`` + ``Block3x3_leakRelu``) and StackGAN v1's ``STAGE1_D`` /
``STAGE2_D``. On the ``[B, 8ndf, 4, 4]`` code sit two heads (``D_GET_LOGITS``):

* conditional: the condition vector tiled at 4x4, joined by conv3x3-BN-LeakyReLU, then a 4x4 conv (with
  bias) to one logit;
* unconditional (optional): a 4x4 conv (with bias) to one logit.

Optionally (``minibatch_std=G``, not in the references) the code gets ProGAN's minibatch standard deviation
channel (Karras et al. 2018, Sec. 3): the feature spread over groups of G samples, so that D can see a batch
whose images are all alike. With BatchNorm, D normalises real and fake batches separately, which hides a
feature that is constant across the fake batch (the same background on every image). On the synthetic birds
it did not move FID at 2000 steps (README, "FID at 2000 steps").

The references end both heads with a Sigmoid and use ``BCELoss``; here they return logits, and the
losses in :mod:`t2i.losses.adversarial` use ``BCEWithLogits`` (or hinge), so autocast works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from t2i.errors import ConfigError
from t2i.models.factory import register_model
from t2i.models.layers import ConvBlock, DownBlock, cast_tuple, init_weights, log2_int, tile


@register_model
class StageDiscriminator(nn.Module):
    """Discriminator for ``resolution x resolution`` images with conditional and unconditional logits.

    Args:
        resolution: image size, a power of two >= 32 (64/128/256 in the papers).
        ndf: base width (``GAN.DF_DIM``).
        cond_dim: size of the condition vector: the sentence vector (AttnGAN, ``TEXT.EMBEDDING_DIM``)
            or the CA mean ``mu`` (StackGAN v1/++, ``GAN.CONDITION_DIM`` / ``GAN.EMBEDDING_DIM``).
        uncond: add the unconditional head (AttnGAN ``b_jcu``; StackGAN++; StackGAN v1 Stage-II; not
            StackGAN v1 Stage-I).
        init: weight initialisation (see :func:`t2i.models.layers.init_weights`).
        spectral_norm: wrap every convolution in spectral normalisation (Miyato et al. 2018; SAGAN,
            DF-GAN-style recipes); the references use none.
        batch_norm: keep the references' BatchNorm layers; False replaces them by identities (a
            per-sample gradient penalty such as MA-GP assumes that samples do not interact in D).
        minibatch_std: group size of the minibatch standard deviation channel appended to the 4x4 code
            (ProGAN / StyleGAN: 4); 0: none, as the references.
    """

    def __init__(self, resolution: int, ndf: int, cond_dim: int, uncond: bool = True, init: str = "orthogonal",
                 spectral_norm: bool = False, batch_norm: bool = True, minibatch_std: int = 0):
        super().__init__()
        try:
            num_down = log2_int(resolution, "resolution") - 2  # stride-2 convs down to 4x4
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if num_down < 3:
            raise ConfigError(f"StageDiscriminator needs resolution >= 32, got {resolution}")
        if isinstance(minibatch_std, bool) or not isinstance(minibatch_std, int) or minibatch_std < 0:
            raise ConfigError(f"minibatch_std must be a group size >= 0 (0: off), got {minibatch_std!r}")
        self.resolution, self.ndf, self.cond_dim = resolution, ndf, cond_dim
        self.minibatch_std = minibatch_std
        code = 8 * ndf
        layers: list[nn.Module] = [DownBlock(3, ndf, norm=False)]  # first layer: no BatchNorm
        channels = ndf
        for _ in range(num_down - 1):
            layers.append(DownBlock(channels, 2 * channels))
            channels *= 2
        while channels != code:  # 128 px: 16ndf -> 8ndf; 256 px: 32ndf -> 16ndf -> 8ndf (32 px: 4ndf -> 8ndf)
            target = max(channels // 2, code) if channels > code else code
            layers.append(ConvBlock(channels, target, "leaky_relu"))
            channels = target
        self.encoder = nn.Sequential(*layers)
        width = code + (1 if minibatch_std else 0)
        self.joint = ConvBlock(width + cond_dim, code, "leaky_relu")
        self.cond_head = nn.Conv2d(code, 1, kernel_size=4, stride=4)
        self.uncond_head = nn.Conv2d(width, 1, kernel_size=4, stride=4) if uncond else None
        init_weights(self, init)
        if not batch_norm:
            _replace_batch_norm(self)
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(module)

    @property
    def has_uncond(self) -> bool:
        return self.uncond_head is not None

    def encode(self, images: Tensor) -> Tensor:
        """``[B, 3, R, R]`` -> image code ``[B, 8ndf, 4, 4]`` (``8ndf + 1`` channels with ``minibatch_std``)."""
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            raise ValueError(f"StageDiscriminator({self.resolution}) got images of size "
                             f"{tuple(images.shape[-2:])}; pass the {self.resolution} px stage")
        code = self.encoder(images)
        return minibatch_std(code, self.minibatch_std) if self.minibatch_std else code

    def cond_logits(self, code: Tensor, cond: Tensor) -> Tensor:
        """Matching logits ``[B]`` of image codes ``[B, 8ndf, 4, 4]`` with conditions ``[B, cond_dim]``."""
        x = torch.cat([code, tile(cond, code.shape[-1])], dim=1)  # (B, 8ndf [+1] + cond_dim, 4, 4)
        return self.cond_head(self.joint(x)).flatten()  # (B,)

    def uncond_logits(self, code: Tensor) -> Tensor:
        """Real/fake logits ``[B]`` of image codes ``[B, 8ndf, 4, 4]``."""
        if self.uncond_head is None:
            raise RuntimeError("this StageDiscriminator was built with uncond=False")
        return self.uncond_head(code).flatten()  # (B,)

    def forward(self, images: Tensor, cond: Tensor) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            images: ``[B, 3, R, R]``.
            cond: ``[B, cond_dim]``.

        Returns:
            cond_logits ``[B]`` and uncond_logits ``[B]`` (None without the unconditional head).
        """
        code = self.encode(images)
        return self.cond_logits(code, cond), (self.uncond_logits(code) if self.has_uncond else None)


def minibatch_std(x: Tensor, group_size: int, eps: float = 1e-8) -> Tensor:
    """ProGAN's minibatch standard deviation layer: ``[B, C, H, W]`` -> ``[B, C + 1, H, W]``.

    Sample ``i`` belongs to group ``i % (B // G)`` (ProGAN's ``reshape(G, -1, C, H, W)``); the extra channel holds,
    at every position, the group's standard deviation (biased, over its ``G`` samples) averaged over channels and
    positions. ``G`` is ``group_size``, or the largest divisor of ``B`` below it when ``B`` is not a multiple.
    """
    b, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, b) + 1) if b % d == 0)
    y = x.float().reshape(g, b // g, c, h, w)
    std = (y.var(dim=0, unbiased=False) + eps).sqrt().mean(dim=(1, 2, 3))  # (B // G,)
    channel = std.to(x.dtype).repeat(g).reshape(b, 1, 1, 1).expand(b, 1, h, w)
    return torch.cat([x, channel], dim=1)


def build_discriminators(resolutions: Sequence[int], ndf: int | Sequence[int], cond_dim: int,
                         uncond: bool | Sequence[bool] = True, init: str = "orthogonal") -> nn.ModuleList:
    """One :class:`StageDiscriminator` per generator stage, e.g. ``build_discriminators(generator.resolutions, ...)``.

    ``ndf`` and ``uncond`` may be given per stage (StackGAN v1: ``uncond=[False, True]``).
    """
    try:
        ndfs = cast_tuple(ndf, len(resolutions), "ndf")
        unconds = cast_tuple(uncond, len(resolutions), "uncond")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return nn.ModuleList(StageDiscriminator(r, n, cond_dim, u, init) for r, n, u in zip(resolutions, ndfs, unconds))


def _replace_batch_norm(module: nn.Module) -> None:
    """Swap every ``BatchNorm2d`` below ``module`` for an identity, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            _replace_batch_norm(child)
