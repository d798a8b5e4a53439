"""t2i.training.kernels: which discriminator convolutions run as one GEMM (train.gemm_conv), probed and cached."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import t2i.training.kernels as kernels
from t2i.models import layers
from t2i.models.discriminator import StageDiscriminator
from t2i.models.layers import GemmConv2d
from t2i.training.kernels import ConvShape, choose_gemm_convs, conv_calls, probe_conv, use_gemm_convs


def _d_shapes(resolution=64, batch=2):
    d = StageDiscriminator(resolution, ndf=4, cond_dim=8)
    images = torch.randn(batch, 3, resolution, resolution)
    before = {k: v.clone() for k, v in d.state_dict().items()}
    shapes = conv_calls(d, lambda: d.cond_logits(d.encode(images), torch.zeros(batch, 8)))
    assert d.training and all(torch.equal(before[k], v) for k, v in d.state_dict().items())  # BN stats untouched
    return d, shapes


def test_conv_calls_records_every_convolution_at_its_shapes():
    d, shapes = _d_shapes()
    assert shapes["encoder.0.0"] == ConvShape(2, 3, 64, 64, 4, (4, 4), (2, 2), (1, 1), (1, 1), False)
    assert shapes["encoder.0.0"].positions() == 32 * 32
    assert shapes["cond_head"].positions() == 1 and shapes["cond_head"].bias
    assert {n for n, s in shapes.items() if s.positions() <= 64} == {"encoder.2.0", "encoder.3.0", "joint.0", "cond_head"}


def test_auto_takes_the_small_layers_the_probe_times_faster():
    d, shapes = _d_shapes()
    seen = []

    def probe(shape):
        seen.append(shape)
        return ({"onednn": 1.0, "gemm": 0.5} if shape.out_channels == 32 else {"onednn": 1.0, "gemm": 0.99}), False

    chosen = choose_gemm_convs(shapes, "auto", probe=probe)
    assert list(chosen) == ["encoder.3.0", "joint.0"]  # 32 output channels; the others within 5 %
    assert all(s.positions() <= 64 for s in seen) and len(seen) == 4  # large maps are never probed
    assert list(choose_gemm_convs(shapes, "true")) == ["encoder.2.0", "encoder.3.0", "joint.0", "cond_head"]
    assert choose_gemm_convs(shapes, "false") == {}
    with pytest.raises(ValueError, match="gemm_conv='yes'"):
        choose_gemm_convs(shapes, "yes")
    x = torch.randn(2, 3, 64, 64)
    code = d.encode(x)
    assert use_gemm_convs(d, chosen) == 2 and isinstance(d.joint[0], GemmConv2d)
    assert torch.allclose(d.encode(x), code, atol=1e-5)


def test_probe_times_both_kernels_and_is_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("T2I_CACHE_DIR", str(tmp_path))
    shape = ConvShape(2, 8, 8, 8, 16, (4, 4), (2, 2), (1, 1), (1, 1), False)
    torch.manual_seed(3)
    state = torch.get_rng_state()
    times = probe_conv(shape, reps=1)
    assert set(times) == {"onednn", "gemm"} and all(t > 0 for t in times.values())
    # the probe runs at a run's first step or not at all (cached): it must leave the run's random stream alone
    assert torch.equal(torch.get_rng_state(), state)
    calls = []
    monkeypatch.setattr(kernels, "probe_conv", lambda s: calls.append(s) or {"onednn": 0.2, "gemm": 0.1})
    assert kernels.probe_cached(shape) == ({"onednn": 0.2, "gemm": 0.1}, False)
    assert kernels.probe_cached(shape) == ({"onednn": 0.2, "gemm": 0.1}, True) and calls == [shape]
    key = next(iter(json.loads((tmp_path / "conv_probe.json").read_text())))
    assert torch.__version__ in key and "threads" in key and shape.key() in key
    # a bf16 call is another entry (timed under bf16 autocast)
    bf16 = ConvShape(2, 8, 8, 8, 16, (4, 4), (2, 2), (1, 1), (1, 1), False, "bf16")
    assert bf16.key() == shape.key() + " bf16"
    assert kernels.probe_cached(bf16) == ({"onednn": 0.2, "gemm": 0.1}, False) and calls == [shape, bf16]


def test_bf16_probe_runs_both_kernels_under_autocast(monkeypatch):
    seen = []
    real = layers.gemm_conv2d

    def spy(x, w, *args):
        seen.append((x.dtype, w.dtype, torch.is_autocast_enabled("cpu")))
        return real(x, w, *args)

    monkeypatch.setattr(layers, "gemm_conv2d", spy)
    shape = ConvShape(2, 8, 8, 8, 16, (4, 4), (2, 2), (1, 1), (1, 1), False, "bf16")
    times = probe_conv(shape, reps=1)
    assert all(t > 0 for t in times.values())
    # per pass as in the step: real and fake with the weight cast once (bf16), then D frozen (fp32, autocast casts)
    assert seen == ([(torch.bfloat16, torch.bfloat16, True)] * 2 + [(torch.bfloat16, torch.float32, True)]) * 2
    _, shapes = _d_shapes()
    d = StageDiscriminator(64, ndf=4, cond_dim=8)
    marked = conv_calls(d, lambda: d.encode(torch.randn(2, 3, 64, 64)), "bf16")
    assert {s.precision for s in marked.values()} == {"bf16"}
    assert {n: s.key() + " bf16" for n, s in shapes.items() if n in marked} == {n: s.key() for n, s in marked.items()}
