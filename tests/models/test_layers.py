"""t2i.models.layers: the GEMM convolution computes F.conv2d's function and shares the parameters it was built from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import contextlib
import copy

from t2i.models import layers
from t2i.models.layers import GemmConv2d, gemm_conv2d, gemm_convertible, shared_weight_casts


@pytest.mark.parametrize("kernel,stride,padding,dilation,bias,size", [
    (4, 2, 1, 1, False, 8),   # a DownBlock to 4x4
    (3, 1, 1, 1, True, 4),    # a 3x3 block at 4x4, with bias
    (4, 4, 0, 1, True, 4),    # a logit head: 4x4 stride 4 to 1x1
    (3, 2, 2, 2, False, 9),   # odd size, dilation
])
def test_gemm_conv2d_matches_conv2d_and_its_gradients(kernel, stride, padding, dilation, bias, size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, size, size, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, kernel, kernel, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    args = ((stride, stride), (padding, padding), (dilation, dilation))
    upstream = None
    grads = []
    for fn in (F.conv2d, gemm_conv2d):
        y = fn(x, w, b, *args)
        upstream = torch.randn(y.shape, generator=g, dtype=y.dtype) if upstream is None else upstream
        grads.append((y, *torch.autograd.grad(y, [x, w] + ([b] if bias else []), upstream)))
    assert grads[1][0].is_contiguous() and grads[1][0].shape == grads[0][0].shape
    for ref, got in zip(*grads):
        assert torch.allclose(ref, got, atol=1e-12)


def test_gemm_conv_shares_the_parameters_and_state_dict_of_its_conv():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    gemm = GemmConv2d.from_conv(conv)
    assert gemm.weight is conv.weight and gemm.bias is None
    assert list(gemm.state_dict()) == list(conv.state_dict()) == ["weight"]
    x = torch.randn(2, 4, 4, 4)
    assert torch.allclose(gemm(x), conv(x), atol=1e-5)
    assert isinstance(gemm, nn.Conv2d) and "GemmConv2d" in repr(gemm)


def test_only_plain_convolutions_convert():
    assert gemm_convertible(nn.Conv2d(4, 4, 3))
    assert not gemm_convertible(nn.Conv2d(4, 4, 3, groups=2))
    assert not gemm_convertible(nn.Conv2d(4, 4, 3, padding="same"))
    assert not gemm_convertible(nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"))
    assert not gemm_convertible(nn.utils.parametrizations.spectral_norm(nn.Conv2d(4, 4, 3)))
    with pytest.raises(ValueError, match="cannot run as a GEMM"):
        GemmConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=4))


def _d_update(layer, x, casts):
    """A D update's use of one layer: real and fake calls in one bf16 autocast region, one backward."""
    layer.zero_grad(set_to_none=True)
    xs = x.detach().requires_grad_(True)
    region = shared_weight_casts(layer) if casts else contextlib.nullcontext()
    with torch.autocast("cpu", dtype=torch.bfloat16), region:
        y1, y2 = layer(xs), layer(xs.flip(0) * 0.5)
    (y1.float().square().mean() + y2.float().mean()).backward()
    return y1.float(), y2.float(), xs.grad.float(), layer.weight.grad.clone()


def test_shared_weight_casts_cast_once_and_give_the_same_step(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 48, 4, 2, 1, bias=True)
    gemm = GemmConv2d.from_conv(conv)
    x = torch.randn(4, 32, 8, 8).bfloat16()
    weights = []
    real = layers.gemm_conv2d
    monkeypatch.setattr(layers, "gemm_conv2d", lambda x, w, *a: weights.append(w) or real(x, w, *a))
    shared = _d_update(gemm, x, casts=True)
    assert len(weights) == 2 and weights[0] is weights[1] and weights[0].dtype == torch.bfloat16  # one cast
    weights.clear()
    per_call = _d_update(gemm, x, casts=False)
    assert len(weights) == 2 and all(w is conv.weight for w in weights)  # outside: the fp32 weight, autocast casts
    onednn = _d_update(conv, x, casts=False)  # F.conv2d: autocast's own cache, one cast too
    for a, b, c in zip(shared, per_call, onednn):
        scale = c.abs().max()
        assert (a - b).abs().max() <= 0.02 * scale and (a - c).abs().max() <= 0.02 * scale
    assert shared[3].dtype == torch.float32 and gemm._casts is None  # nothing stays cached


def test_shared_weight_casts_change_nothing_in_fp32_frozen_or_no_grad():
    conv = GemmConv2d.from_conv(nn.Conv2d(4, 6, 3, padding=1))
    x = torch.randn(2, 4, 4, 4)
    with shared_weight_casts(conv):
        assert conv._weight() is conv.weight  # no autocast
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                assert conv._weight() is conv.weight  # no graph: autocast casts per call, nothing kept
            conv.requires_grad_(False)
            assert conv._weight() is conv.weight  # frozen (the G update)
            conv.requires_grad_(True)
            assert conv._weight() is conv._weight() is not conv.weight
            conv(x)
    assert conv._casts is None
    twin = copy.deepcopy(conv)  # no graph tensors left on the module
    assert torch.equal(twin.weight, conv.weight)


@pytest.mark.parametrize("height,width,bias", [(4, 4, False), (5, 3, True), (1, 1, False)])
def test_upsample_conv3x3_is_nearest_upsampling_then_the_3x3_convolution(height, width, bias):
    """The transposed-convolution form: the same outputs and the same gradients of input, weight and bias (float64,
    so any wrong tap shows far above rounding), on odd and non-square sizes and at 1x1 (every tap on the border)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, height, width, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    two_step = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    folded = layers.upsample_conv3x3(x, w, b)
    assert folded.shape == two_step.shape == (2, 6, 2 * height, 2 * width)
    torch.testing.assert_close(folded, two_step, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(two_step.shape, generator=g, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    for a, c in zip(torch.autograd.grad(two_step, inputs, upstream), torch.autograd.grad(folded, inputs, upstream)):
        torch.testing.assert_close(c, a, rtol=1e-12, atol=1e-12)


def test_transposed_upsampling_keeps_the_block_its_parameters_and_its_function():
    torch.manual_seed(0)
    net = nn.Sequential(layers.UpBlock(8, 4), layers.UpBlock(4, 2, "relu"))
    x = torch.randn(3, 8, 4, 4)
    keys, before = list(net.state_dict()), net(x)
    assert layers.use_transposed_upsampling(net) == 2 and all(b.transposed for b in net)
    assert list(net.state_dict()) == keys  # the same modules: checkpoints and exports do not change
    torch.testing.assert_close(net(x), before, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the fold in fp32, the convolution under autocast
        low = net(x)
    torch.testing.assert_close(low.float(), before, rtol=0.05, atol=0.05)
    assert layers.use_transposed_upsampling(net, enabled=False) == 2 and not any(b.transposed for b in net)


def test_transposed_upsampling_leaves_blocks_it_cannot_fold():
    spectral, bilinear = layers.UpBlock(4, 2), layers.UpBlock(4, 2)
    nn.utils.parametrizations.spectral_norm(spectral[1])
    bilinear[0] = nn.Upsample(scale_factor=2, mode="bilinear")
    hooked = layers.UpBlock(4, 2)
    nn.utils.spectral_norm(hooked[1])  # the older hook form keeps weight_orig and recomputes weight in forward
    assert layers.use_transposed_upsampling(nn.ModuleList([spectral, bilinear, hooked])) == 0
    assert not (spectral.transposed or bilinear.transposed or hooked.transposed)
