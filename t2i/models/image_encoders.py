"""DAMSM image encoders: AttnGAN's Inception-v3 ``CNN_ENCODER`` and a light CPU encoder.

Both map images ``[B, 3, H, W]`` in [-1, 1] to ``(regions [B, D, h, w], global [B, D])``: region features
for the word-level matching (AttnGAN Eq. 7-10) and a global vector for the sentence-level one (Eq. 13).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from t2i.errors import CheckpointError, WeightsError
from t2i.io import fill_batchnorm_counters, load_state_dict_strict
from t2i.models.factory import register_model

log = logging.getLogger(__name__)

# Inception-v3 trunk modules, in order, as AttnGAN's CNN_ENCODER stores them at top level.
_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")
_STEM2 = ("Conv2d_3b_1x1", "Conv2d_4a_3x3")
_TO_REGIONS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")
_TO_GLOBAL = ("Mixed_7a", "Mixed_7b", "Mixed_7c")
TRUNK_MODULES = _STEM + _STEM2 + _TO_REGIONS + _TO_GLOBAL


@register_model
class InceptionImageEncoder(nn.Module):
    """AttnGAN's DAMSM image encoder (``CNN_ENCODER`` in taoxugit/AttnGAN ``code/model.py``).

    Images are resized to 299x299 (bilinear) and fed in [-1, 1] (the range Google's Inception weights
    expect) through the torchvision Inception-v3 trunk. Region features come from ``Mixed_6e``
    (768 x 17 x 17) through ``emb_features`` (1x1 conv, no bias); the global feature from ``Mixed_7c``
    (2048, 8x8 average pool) through ``emb_cnn_code`` (Linear). Module names match the reference so its
    ``image_encoder200.pth`` loads strictly (:meth:`load_reference_state_dict`).

    Args:
        embed_dim: D, the joint embedding size (AttnGAN: 256).
        pretrained: local torchvision-format ImageNet Inception-v3 state dict (``inception_v3_google-*.pth``),
            loaded strictly; None: the trunk starts from scratch (torchvision's init).
        freeze_trunk: None: freeze the trunk iff ``pretrained`` is given (AttnGAN trains only
            ``emb_features``/``emb_cnn_code``).
        trunk_bn_train: let the frozen trunk's BatchNorm layers use batch statistics in ``train()`` mode, as the
            reference does (it calls ``.train()`` on the whole encoder); default False keeps them in eval mode.
        align_corners: the 299 resize; the reference ran on PyTorch 0.3, whose bilinear upsampling used
            ``align_corners=True`` semantics.

    Raises:
        WeightsError: ``pretrained`` is missing or is not an Inception-v3 state dict.
    """

    def __init__(self, embed_dim: int = 256, pretrained: str | None = None, freeze_trunk: bool | None = None,
                 trunk_bn_train: bool = False, align_corners: bool = False):
        super().__init__()
        from torchvision.models.inception import Inception3

        self.embed_dim = embed_dim
        self.align_corners = align_corners
        self.trunk_bn_train = trunk_bn_train
        inception = Inception3(aux_logits=pretrained is not None and _has_aux(pretrained), init_weights=pretrained is None)
        if pretrained is not None:
            self._load_imagenet(inception, Path(pretrained))
        for name in TRUNK_MODULES:
            setattr(self, name, getattr(inception, name))
        self.emb_features = nn.Conv2d(768, embed_dim, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(2048, embed_dim)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)  # AttnGAN init_trainable_weights
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)
        self.frozen_trunk = pretrained is not None if freeze_trunk is None else freeze_trunk
        if self.frozen_trunk:
            for name in TRUNK_MODULES:
                getattr(self, name).requires_grad_(False)
        self.train()

    def export_kwargs(self) -> dict:
        """Constructor arguments to save: the trunk's weights travel in the state dict, so no ImageNet file."""
        return {**self.init_kwargs, "pretrained": None, "freeze_trunk": self.frozen_trunk}

    @staticmethod
    def _load_imagenet(inception: nn.Module, path: Path) -> None:
        if not path.is_file():
            raise WeightsError(f"Inception-v3 ImageNet weights {path} not found; supply the torchvision file "
                               "inception_v3_google-0cc3c7bd.pth (nothing is downloaded) or set pretrained=null")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(f"cannot read Inception-v3 weights {path}: {str(exc).splitlines()[0][:160]}") from None
        try:
            load_state_dict_strict(inception, fill_batchnorm_counters(inception, state), "Inception-v3 weights", path)
        except CheckpointError as exc:
            raise WeightsError(str(exc)) from None
        log.info("Inception-v3 trunk loaded from %s", path)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_trunk and not self.trunk_bn_train:
            for name in TRUNK_MODULES:
                getattr(self, name).eval()
        return self

    def trunk(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The Inception-v3 part: ``Mixed_6e`` maps ``[B, 768, 17, 17]`` and pooled ``Mixed_7c`` ``[B, 2048]``.

        With a frozen trunk these do not change during training, so they can be computed once per image
        (:class:`t2i.training.damsm.TrunkFeatureCache`) and fed to :meth:`project`.
        """
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=self.align_corners)
        for name in _STEM:
            x = getattr(self, name)(x)  # -> (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        for name in _STEM2:
            x = getattr(self, name)(x)  # -> (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for name in _TO_REGIONS:
            x = getattr(self, name)(x)  # -> (B, 768, 17, 17)
        regions = x
        for name in _TO_GLOBAL:
            x = getattr(self, name)(x)  # -> (B, 2048, 8, 8)
        return regions, F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, 2048)

    def project(self, mixed_6e: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """The trained heads: ``emb_features`` (1x1 conv) on the regions, ``emb_cnn_code`` on the pooled vector."""
        return self.emb_features(mixed_6e), self.emb_cnn_code(pooled)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            images: ``[B, 3, H, W]`` in [-1, 1], any size (resized to 299).

        Returns:
            regions: ``[B, D, 17, 17]`` region features.
            global_feat: ``[B, D]`` global image feature.
        """
        return self.project(*self.trunk(images))

    def load_trunk_state_dict(self, state: dict[str, Tensor], source: str | os.PathLike = "") -> None:
        """Load Inception-v3 trunk weights (torchvision names, e.g. the FID Inception's) strictly; heads untouched.

        Keys outside the trunk (``fc.*``, ``AuxLogits.*``) are ignored.

        Raises:
            WeightsError: a trunk key is missing or has another shape.
        """
        prefixes = tuple(f"{name}." for name in TRUNK_MODULES)
        trunk_state = {k: v for k, v in state.items() if k.startswith(prefixes)}
        own = {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}
        trunk_state = fill_batchnorm_counters(self, trunk_state)
        missing = sorted(set(own) - set(trunk_state))
        wrong = sorted(k for k in own if k in trunk_state and trunk_state[k].shape != own[k].shape)
        if missing or wrong:
            raise WeightsError(f"{source or 'the weights'} are not an Inception-v3 trunk: "
                               f"{len(missing)} trunk tensors missing (e.g. {(missing or wrong)[0]}), "
                               f"{len(wrong)} of another shape")
        self.load_state_dict(trunk_state, strict=False)
        log.info("Inception-v3 trunk loaded from %s", source or "a state dict")

    def load_reference_state_dict(self, state: dict[str, Tensor], path: str | os.PathLike = "") -> None:
        """Load an AttnGAN ``image_encoder*.pth`` state dict strictly (old files lack ``num_batches_tracked``).

        Raises:
            CheckpointError: keys or shapes differ (e.g. another embedding size), in one line.
        """
        code = state.get("emb_cnn_code.weight")
        if code is not None and code.shape[0] != self.embed_dim:
            raise CheckpointError(f"image encoder{' ' + str(path) if path else ''} has embedding size {code.shape[0]} "
                                  f"but this model has {self.embed_dim}; set embed_dim to match")
        load_state_dict_strict(self, fill_batchnorm_counters(self, state), "image encoder", path)


def _has_aux(path: str) -> bool:
    """Whether a torchvision Inception file carries the auxiliary classifier (the ImageNet one does)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(state, dict) and any(str(k).startswith("AuxLogits.") for k in state)


# ------------------------------------------------------------------------------ pool branches, same function
class _BoxPool3x3(torch.autograd.Function):
    """Inception's pool-branch average: 3x3 window, stride 1, zero padding counted in the mean (divisor 9).

    This map is a symmetric matrix (each output is 1/9 of its 3x3 neighbourhood, zeros outside), so it is its own
    adjoint: the gradient with respect to the input is the same pool of the output gradient. oneDNN's forward pool
    is several times faster than its backward (channels-last bf16 at ``[2, 768, 17, 17]``: 0.3 against 2.8 ms), so
    the backward runs the forward kernel. Same values up to the order of the nine additions.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return F.avg_pool2d(grad, kernel_size=3, stride=1, padding=1)


def _box_pool(x: Tensor) -> Tensor:
    return _BoxPool3x3.apply(x)


def _inception_a(self, x: Tensor) -> list[Tensor]:  # torchvision InceptionA._forward with the fast pool
    return [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))), self.branch_pool(_box_pool(x))]


def _inception_c(self, x: Tensor) -> list[Tensor]:  # torchvision InceptionC._forward with the fast pool
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d7 = x
    for name in ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"):
        d7 = getattr(self, name)(d7)
    return [self.branch1x1(x), b7, d7, self.branch_pool(_box_pool(x))]


def _inception_e(self, x: Tensor) -> list[Tensor]:  # torchvision InceptionE._forward with the fast pool
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d3 = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1)
    return [self.branch1x1(x), b3, d3, self.branch_pool(_box_pool(x))]


@functools.cache
def _fast_blocks() -> dict[type, type]:
    """torchvision's Inception A/C/E block -> its subclass with the self-adjoint pool branch."""
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    return {kind: type(f"Fast{kind.__name__}", (kind,), {"_forward": forward, "__module__": __name__})
            for kind, forward in ((InceptionA, _inception_a), (InceptionC, _inception_c), (InceptionE, _inception_e))}


def fast_pool_branches(module: nn.Module) -> int:
    """Give every torchvision Inception A/C/E block in ``module`` the self-adjoint pool (:class:`_BoxPool3x3`).

    For the frozen DAMSM image encoder that the generator's loss backpropagates through
    (:meth:`t2i.losses.gan.GANLoss.fast_image_encoder`): each block becomes a subclass whose ``_forward`` is
    torchvision's with the pool swapped, so outputs, input gradients, parameters and state dicts stay the same.
    Returns how many blocks were changed (9 for Inception-v3).
    """
    fast = _fast_blocks()
    changed = 0
    for block in module.modules():
        if type(block) in fast:
            block.__class__ = fast[type(block)]
            changed += 1
    return changed


def _conv_block(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1,
                                   bias=False),
                         nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


@register_model
class LightImageEncoder(nn.Module):
    """A small convolutional DAMSM image encoder for CPU training on small images.

    Layout for ``image_size=64``, width ``w``: 3x3 conv (w) at 64 -> stride-2 4x4 conv (2w) at 32 ->
    stride-2 (4w) at 16 and a 3x3 conv (4w): **regions** ``[B, D, 16, 16]`` via ``emb_features`` (1x1);
    then stride-2 convs (8w) to 8 and 4, average pool: **global** ``[B, D]`` via ``emb_cnn_code``.
    Regions are always at ``image_size / 4``.

    Trade-off against :class:`InceptionImageEncoder`: about 50x fewer FLOPs and no ImageNet weights
    needed, so it trains from scratch in minutes on a CPU, but it has no pretrained features: region
    features only know what the captions of the training set teach, it generalises worse to unseen
    classes and real photographs, and its scores are not comparable with DAMSM-based numbers of papers.
    Use it for the synthetic birds and smoke tests; use the Inception encoder for the paper configs.

    Args:
        embed_dim: D, the joint embedding size.
        width: channels of the first conv (w above).
        image_size: input side the encoder works at (inputs of another size are resized bilinearly);
            a multiple of 16.
    """

    def __init__(self, embed_dim: int = 256, width: int = 64, image_size: int = 64):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"LightImageEncoder image_size must be a multiple of 16, got {image_size}")
        self.embed_dim = embed_dim
        self.image_size = image_size
        w = width
        self.to_regions = nn.Sequential(
            _conv_block(3, w, 3, 1),  # (B, w, S, S)
            _conv_block(w, 2 * w, 4, 2),  # (B, 2w, S/2, S/2)
            _conv_block(2 * w, 4 * w, 4, 2),  # (B, 4w, S/4, S/4)
            _conv_block(4 * w, 4 * w, 3, 1),
        )
        self.to_global = nn.Sequential(
            _conv_block(4 * w, 8 * w, 4, 2),  # (B, 8w, S/8, S/8)
            _conv_block(8 * w, 8 * w, 4, 2),  # (B, 8w, S/16, S/16)
        )
        self.emb_features = nn.Conv2d(4 * w, embed_dim, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(8 * w, embed_dim)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            images: ``[B, 3, H, W]`` in [-1, 1].

        Returns:
            regions: ``[B, D, image_size/4, image_size/4]``.
            global_feat: ``[B, D]``.
        """
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        x = self.to_regions(images)  # (B, 4w, S/4, S/4)
        regions = self.emb_features(x)  # (B, D, S/4, S/4)
        g = self.to_global(x).mean(dim=(2, 3))  # (B, 8w)
        return regions, self.emb_cnn_code(g)

