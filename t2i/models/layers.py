"""Building blocks shared by the GAN generators and discriminators.

The blocks follow the helper functions of the reference implementations (AttnGAN ``code/model.py``,
StackGAN++ ``code/model.py``, StackGAN-Pytorch ``code/model.py``) layer for layer, so parameter counts
match: 3x3 and 4x4 convolutions have no bias, every block has BatchNorm, and GLU halves the channels
(a block producing ``out`` channels with GLU convolves to ``2 * out`` first).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

T = TypeVar("T")

ACTIVATIONS = ("glu", "relu", "leaky_relu")


def cast_tuple(value: T | Sequence[T], length: int, name: str = "value") -> tuple[T, ...]:
    """A per-stage setting given as a scalar or a sequence, as a tuple of ``length`` (STYLE.md 2).

    Raises:
        ValueError: a sequence of the wrong length (the message names the setting and both lengths).
    """
    if isinstance(value, (list, tuple)):
        if len(value) != length:
            raise ValueError(f"{name} has {len(value)} entries but there are {length} stages; "
                             f"give one value or one per stage")
        return tuple(value)
    return (value,) * length


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, no bias (the references' ``conv3x3``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)


def make_activation(kind: str) -> nn.Module:
    """``glu`` (halves channels, ``a * sigmoid(b)`` as the references' GLU), ``relu`` or ``leaky_relu`` (0.2)."""
    if kind == "glu":
        return nn.GLU(dim=1)  # x[:, :C/2] * sigmoid(x[:, C/2:]), exactly the references' GLU module
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    raise ValueError(f"unknown activation {kind!r}; choose one of {', '.join(ACTIVATIONS)}")


def _width(channels: int, activation: str) -> int:
    return 2 * channels if activation == "glu" else channels


class ConvBlock(nn.Sequential):
    """conv3x3 -> BatchNorm -> activation, keeping the size.

    AttnGAN/StackGAN++ ``Block3x3_relu`` (GLU) and ``Block3x3_leakRelu``; StackGAN ``hr_joint`` (ReLU).
    """

    def __init__(self, in_channels: int, out_channels: int, activation: str = "glu"):
        width = _width(out_channels, activation)
        super().__init__(conv3x3(in_channels, width), nn.BatchNorm2d(width), make_activation(activation))


# Row r of the 3x3 kernel lands on tap k of the 4-tap kernel of a stride-2 transposed convolution (padding 1)
# that computes nearest x2 upsampling followed by the 3x3 convolution: output row 2i reads input rows i-1 (w0) and
# i (w1 + w2), output row 2i+1 reads rows i (w0 + w1) and i+1 (w2).
_UPSAMPLE_TAPS = ((0.0, 0.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.0, 0.0))


def upsample_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``conv3x3(nearest_upsample_x2(x))`` (padding 1) as one stride-2 transposed convolution with a 4x4 kernel.

    Each output pixel of the upsampled convolution sees a 2x2 block of input pixels, so the 3x3 weights fold
    into four 2x2 kernels, one per output phase: the same function in 16 instead of 36 products per input pixel
    and channel pair, without the upsampled tensor. Equal to the two-step form within float32 rounding (the
    folded taps add two weights before they multiply); ``weight`` keeps its ``[out, in, 3, 3]`` shape, so
    parameters, gradients and state dicts are those of the 3x3 convolution.

    Args:
        x: ``[B, C, H, W]``.
        weight: ``[N, C, 3, 3]``; bias ``[N]`` or None.

    Returns:
        ``[B, N, 2H, 2W]``.
    """
    with torch.autocast(x.device.type, enabled=False):  # fold in fp32; the convolution itself runs under autocast
        taps = weight.new_tensor(_UPSAMPLE_TAPS)  # (4, 3)
        kernel = torch.einsum("kr,ls,ncrs->cnkl", taps, taps, weight)  # (C, N, 4, 4): conv_transpose2d's layout
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=1)


class UpBlock(nn.Sequential):
    """Nearest x2 upsampling -> conv3x3 -> BatchNorm -> activation (the references' ``upBlock``).

    Args:
        in_channels / out_channels: channels before and after (GLU convolves to ``2 * out_channels``).
        activation: ``glu`` (AttnGAN, StackGAN++) or ``relu`` (StackGAN v1).

    With ``transposed = True`` (set by :func:`use_transposed_upsampling`) the upsampling and the convolution run
    as one transposed convolution (:func:`upsample_conv3x3`): the same modules, parameters and function.
    """

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, activation: str = "glu"):
        width = _width(out_channels, activation)
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_channels, width),
                         nn.BatchNorm2d(width), make_activation(activation))

    def forward(self, x: Tensor) -> Tensor:
        if not self.transposed:
            return super().forward(x)
        conv = self[1]
        x = upsample_conv3x3(x, conv.weight, conv.bias)
        for layer in list(self)[2:]:
            x = layer(x)
        return x


def use_transposed_upsampling(module: nn.Module, enabled: bool = True) -> int:
    """Run every :class:`UpBlock` below ``module`` as one transposed convolution (or back); returns how many.

    The fold needs the block as built: nearest x2 upsampling, then a plain 3x3 convolution (padding 1, stride 1,
    groups 1, no parametrization such as spectral norm); other blocks are left as they are.
    """
    count = 0
    for block in module.modules():
        if isinstance(block, UpBlock):
            up, conv = block[0], block[1]
            plain = (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.scale_factor in (2, 2.0)
                     and type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
                     and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
                     and conv.padding_mode == "zeros" and not nn.utils.parametrize.is_parametrized(conv)
                     and not hasattr(conv, "weight_orig"))  # nor the hook form of spectral norm
            if plain:
                block.transposed = enabled
                count += 1
    return count


class DownBlock(nn.Sequential):
    """4x4 stride-2 convolution (no bias) -> [BatchNorm] -> activation: halves the size (``downBlock``)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True,
                 activation: str = "leaky_relu"):
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=False)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(make_activation(activation))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block at constant width.

    ``glu`` (AttnGAN, StackGAN++): ``x + BN(conv(GLU(BN(conv(x)))))`` with the first conv to ``2C``.
    ``relu`` (StackGAN v1): ``ReLU(x + BN(conv(ReLU(BN(conv(x))))))``.
    """

    def __init__(self, channels: int, activation: str = "glu"):
        super().__init__()
        if activation not in ("glu", "relu"):
            raise ValueError(f"ResBlock activation must be glu or relu, got {activation!r}")
        width = _width(channels, activation)
        self.block = nn.Sequential(conv3x3(channels, width), nn.BatchNorm2d(width), make_activation(activation),
                                   conv3x3(channels, channels), nn.BatchNorm2d(channels))
        self.out_act = nn.ReLU(inplace=True) if activation == "relu" else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``."""
        return self.out_act(x + self.block(x))


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a conv or linear layer into that layer, in place.

    For inference and for frozen networks: ``conv -> BN`` becomes one conv whose weights and bias absorb the
    BN's running statistics and affine parameters (``torch.nn.utils.fusion``), and the BN becomes
    ``nn.Identity``. The outputs (and the gradients with respect to the inputs) are unchanged up to rounding,
    and a generator at 256 px or the frozen DAMSM Inception skips a memory-bound pass over every feature map
    (and its backward). Pairs are found inside ``nn.Sequential`` containers (every block of this package uses
    them) and in torchvision's Inception ``BasicConv2d`` (``conv`` then ``bn``).

    Returns:
        How many BatchNorm layers were folded.

    Raises:
        ValueError: the module is in training mode (batch statistics cannot be folded).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
    from torchvision.models.inception import BasicConv2d

    if module.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (call .eval() first)")
    folded = 0
    for block in [m for m in module.modules() if isinstance(m, BasicConv2d)]:
        if isinstance(block.bn, nn.BatchNorm2d):  # BasicConv2d.forward: relu(bn(conv(x)))
            block.conv, block.bn = fuse_conv_bn_eval(block.conv, block.bn), nn.Identity()
            folded += 1
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for first, second in zip(names, names[1:]):
            layer, norm = seq._modules[first], seq._modules[second]
            if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) and norm.running_mean is None:
                raise ValueError(f"BatchNorm {second} keeps no running statistics, so it cannot be folded")
            if isinstance(norm, nn.BatchNorm2d) and isinstance(layer, nn.Conv2d) and not layer.transposed:
                seq._modules[first] = fuse_conv_bn_eval(layer, norm)
            elif isinstance(norm, nn.BatchNorm1d) and isinstance(layer, nn.Linear):
                seq._modules[first] = fuse_linear_bn_eval(layer, norm)
            else:
                continue
            seq._modules[second] = nn.Identity()
            folded += 1
    return folded


def gemm_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation) -> Tensor:
    """A convolution (groups 1, zero padding) as one matrix product over the unfolded patches (im2col + GEMM).

    The same sums as ``F.conv2d`` in another order. With few output positions and many channels (a
    discriminator's 4x4 codes: ``[B, 1024, 8, 8] -> [B, 2048, 4, 4]``) one ``[B*L, C*k*k] x [C*k*k, N]`` product
    runs near the CPU's GEMM peak, where oneDNN's direct kernels reach a third to a half of it.

    Args:
        x: ``[B, C, H, W]``.
        weight: ``[N, C, kh, kw]``; bias ``[N]`` or None.

    Returns:
        ``[B, N, Ho, Wo]``, contiguous (NCHW).
    """
    b = x.shape[0]
    n, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (B, C*kh*kw, L)
    h_out = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    patches = cols.transpose(1, 2).reshape(b * h_out * w_out, -1)  # (B*L, C*kh*kw)
    weight_2d = weight.reshape(n, -1).t()  # (C*kh*kw, N)
    out = torch.addmm(bias, patches, weight_2d) if bias is not None else patches @ weight_2d  # (B*L, N)
    return out.view(b, h_out * w_out, n).transpose(1, 2).contiguous().view(b, n, h_out, w_out)


class GemmConv2d(nn.Conv2d):
    """``nn.Conv2d`` computed by :func:`gemm_conv2d`: same parameters, state-dict keys and function.

    Built from an existing convolution with :meth:`from_conv`, sharing its weight and bias tensors, so an
    optimiser or checkpoint that holds them sees no difference.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GemmConv2d:
        if not gemm_convertible(conv):
            raise ValueError(f"{conv} cannot run as a GEMM (groups, padding mode or a parametrization)")
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "transposed",
                     "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(new, name, getattr(conv, name))
        new.register_parameter("weight", conv.weight)  # the same Parameter objects
        new.register_parameter("bias", conv.bias)
        new.train(conv.training)
        return new

    _casts: dict[torch.dtype, Tensor] | None = None  # set only inside :func:`shared_weight_casts`

    def forward(self, x: Tensor) -> Tensor:
        return gemm_conv2d(x, self._weight(), self.bias, self.stride, self.padding, self.dilation)

    def _weight(self) -> Tensor:
        """The weight, or inside :func:`shared_weight_casts` under autocast its one cast to the autocast dtype."""
        w, casts = self.weight, self._casts
        if casts is None or w.dtype != torch.float32 or not w.requires_grad or not torch.is_grad_enabled():
            return w
        device = w.device.type
        if not torch.is_autocast_enabled(device):
            return w
        dtype = torch.get_autocast_dtype(device)
        if dtype not in casts:
            casts[dtype] = w.to(dtype)
        return casts[dtype]


@contextlib.contextmanager
def shared_weight_casts(module: nn.Module) -> Iterator[None]:
    """Inside, every :class:`GemmConv2d` below ``module`` casts its weight to the autocast dtype once for all its calls.

    Autocast casts ``F.conv2d``'s weight (a leaf) once per autocast region and reuses the cast for every call in
    it; the GEMM gets a view of the weight, which autocast's cache skips, so it would cast the weight at every call
    and convert each call's weight gradient back to fp32 and add them. A discriminator update calls D on the real
    and the fake images: with this, a GEMM convolution does what an oneDNN one does under autocast, one cast
    forward and the two gradients summed before one cast back (AttnGAN's 256-px D: 97 M weights). The weights
    must not change inside (no optimiser step); outside, nothing is cached.
    """
    convs = [m for m in module.modules() if isinstance(m, GemmConv2d)]
    for conv in convs:
        conv._casts = {}
    try:
        yield
    finally:
        for conv in convs:
            conv._casts = None


def gemm_convertible(conv: nn.Module) -> bool:
    """A plain 2-d convolution :class:`GemmConv2d` can compute (groups 1, numeric zero padding, no parametrization)."""
    return (type(conv) in (nn.Conv2d, GemmConv2d) and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and not nn.utils.parametrize.is_parametrized(conv))


def tile(vector: Tensor, size: int) -> Tensor:
    """``[B, D] -> [B, D, size, size]`` (the references' ``view(-1, D, 1, 1).repeat(1, 1, s, s)``)."""
    return vector[:, :, None, None].expand(-1, -1, size, size)


def log2_int(value: int, name: str) -> int:
    """``log2(value)`` for a power of two; ValueError otherwise."""
    n = int(round(math.log2(value))) if value > 0 else -1
    if n < 0 or 2 ** n != value:
        raise ValueError(f"{name} must be a power of two, got {value}")
    return n


INIT_SCHEMES = ("orthogonal", "normal", "default")


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str = "orthogonal") -> None:
    """Initialise as the references' ``weights_init``.

    ``orthogonal`` (AttnGAN, StackGAN++): conv and linear weights orthogonal (gain 1), biases 0.
    ``normal`` (StackGAN v1): conv and linear weights N(0, 0.02), biases 0. In both, BatchNorm weights
    N(1, 0.02) and biases 0. ``default`` keeps PyTorch's initialisation.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    if scheme == "default":
        return
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "orthogonal":
                nn.init.orthogonal_(m.weight, 1.0)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
