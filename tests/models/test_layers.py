"""t2i.models.layers: the GEMM convolution computes F.conv2d's function and shares the parameters it was built from."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import GemmConv2d, gemm_conv2d, gemm_convertible


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
