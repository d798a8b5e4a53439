"""Which kernel computes each of the discriminators' small convolutions: oneDNN's, or one GEMM (``train.gemm_conv``).

A discriminator ends in convolutions with few output positions and many channels (AttnGAN's 256-px D:
``[B, 1024, 8, 8] -> [B, 2048, 4, 4]``, then 3x3 convolutions at 4x4). On an AVX2 CPU oneDNN's direct kernels
reach a third to a half of the GEMM peak there, while the same convolution as one matrix product over the
unfolded patches (:class:`t2i.models.layers.GemmConv2d`) runs near it. Which is faster depends on the CPU, the
thread count, the shapes and the precision (fp32, or bf16 autocast on a CPU with native bf16, where oneDNN's
bf16 kernels at 4x4 outputs are as far from the bf16 GEMM), so ``auto`` measures it: at the first training step,
a forward + backward of each candidate layer at its own shapes (batch and precision included) with both kernels,
cached per CPU, torch, threads and shape in
``~/.cache/t2i/conv_probe.json`` (``T2I_CACHE_DIR``), like the precision probe of :mod:`t2i.runtime`.
Either kernel computes the same function (the sums in another order); parameters and state dicts are unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2i.models.layers import GemmConv2d, gemm_convertible, shared_weight_casts
from t2i.runtime import cpu_info, read_cache, write_cache

log = logging.getLogger(__name__)

GEMM_CONV_CHOICES = ("auto", "true", "false")
MAX_POSITIONS = 64  # candidates: output maps of at most 8x8 (larger ones lose on the CPUs measured; see README)
PROBE_FILE = "conv_probe.json"
PROBE_VERSION = 2  # what a probe times (2: the step's three calls); older entries are not reused


@dataclass(frozen=True)
class ConvShape:
    """One convolution call: input ``[batch, channels, size, size]``, weight ``[out, channels, k, k]``."""

    batch: int
    channels: int
    height: int
    width: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    bias: bool
    precision: str = "fp32"  # fp32, or bf16: the call runs under bf16 autocast (input and output bf16)

    def key(self) -> str:
        return (f"b{self.batch} {self.channels}x{self.height}x{self.width} -> {self.out_channels} "
                f"k{self.kernel} s{self.stride} p{self.padding} d{self.dilation}{' bias' if self.bias else ''}"
                f"{'' if self.precision == 'fp32' else ' ' + self.precision}")

    def positions(self) -> int:
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        h = (self.height + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        w = (self.width + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        return h * w


def probe_conv(shape: ConvShape, reps: int = 2) -> dict[str, float]:
    """Median seconds of the layer's share of a training step with oneDNN's kernel and with the GEMM.

    As in the step: the D update's two calls (real, fake) in one autocast region, one backward giving input and
    weight gradients (the GEMM under :func:`shared_weight_casts`, so its weight is cast once as oneDNN's is), then
    the G update's call with D frozen (input gradients only). One untimed pass of each first; the two kernels
    alternate, so load from other processes hits both alike. A ``bf16`` shape runs under bf16 autocast on a bf16
    input (the discriminator's activations are bf16 there).
    """
    g = torch.Generator().manual_seed(0)
    bf16 = shape.precision == "bf16"
    x0 = torch.randn(shape.batch, shape.channels, shape.height, shape.width, generator=g)
    x0 = x0.bfloat16() if bf16 else x0
    with torch.random.fork_rng(devices=[]):  # the layer's initialisation must not move the run's random stream:
        conv = nn.Conv2d(shape.channels, shape.out_channels, shape.kernel, shape.stride, shape.padding,
                         shape.dilation, bias=shape.bias)  # a probe (run or cached) leaves the step the same
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
    layers = {"onednn": conv, "gemm": GemmConv2d.from_conv(conv)}

    def run(layer: nn.Module) -> None:
        x = x0.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), shared_weight_casts(layer):
            y = layer(x).float().sum() + layer(x.flip(0)).float().sum()
        y.backward()
        conv.zero_grad(set_to_none=True)
        conv.requires_grad_(False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            layer(x).float().sum().backward()
        conv.requires_grad_(True)

    times: dict[str, list[float]] = {"onednn": [], "gemm": []}
    for i in range(reps + 1):
        for name in times:
            start = time.perf_counter()
            run(layers[name])
            if i:
                times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def probe_cached(shape: ConvShape) -> tuple[dict[str, float], bool]:
    """:func:`probe_conv`'s times from the per-machine cache when this CPU, torch, thread count and shape were timed."""
    cpu = cpu_info()
    key = (f"{cpu.model}|{cpu.isa}|torch {torch.__version__}|{torch.get_num_threads()} threads|{shape.key()}"
           f"|probe {PROBE_VERSION}")
    cache = read_cache(PROBE_FILE)
    hit = cache.get(key)
    if isinstance(hit, dict) and all(isinstance(hit.get(k), (int, float)) for k in ("onednn", "gemm")):
        return {"onednn": float(hit["onednn"]), "gemm": float(hit["gemm"])}, True
    times = probe_conv(shape)
    cache[key] = times
    write_cache(PROBE_FILE, cache)
    return times, False


def conv_calls(module: nn.Module, run: Callable[[], object], precision: str = "fp32") -> dict[str, ConvShape]:
    """The shape of every convertible convolution below ``module`` in one call of ``run`` (first call each).

    ``run`` is called under ``torch.no_grad()`` with ``module`` in eval mode (BatchNorm statistics do not move),
    then the training mode is restored. ``precision`` (``fp32`` | ``bf16``) is recorded in every shape: the
    autocast the training step runs those calls under.
    """
    shapes: dict[str, ConvShape] = {}

    def hook(name):
        def record(conv, args, _out):
            x = args[0]
            shapes.setdefault(name, ConvShape(x.shape[0], x.shape[1], x.shape[2], x.shape[3], conv.out_channels,
                                              tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding),
                                              tuple(conv.dilation), conv.bias is not None, precision))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules() if gemm_convertible(m)]
    mode = module.training
    try:
        module.eval()
        with torch.no_grad():
            run()
    finally:
        module.train(mode)
        for h in handles:
            h.remove()
    return shapes


def choose_gemm_convs(shapes: dict[str, ConvShape], mode: str, probe=None) -> dict[str, str]:
    """For each candidate layer (output of at most 8x8): ``{name: reason}`` of those that should run as a GEMM.

    ``mode``: ``true`` takes every candidate, ``false`` none, ``auto`` those whose GEMM the probe times at least
    5 % faster than oneDNN's kernel. ``probe`` (``shape -> ({"onednn": s, "gemm": s}, cached)``) replaces the real
    one in tests.
    """
    if mode not in GEMM_CONV_CHOICES:
        raise ValueError(f"gemm_conv={mode!r}; choose one of {', '.join(GEMM_CONV_CHOICES)}")
    chosen: dict[str, str] = {}
    if mode == "false":
        return chosen
    for name, shape in shapes.items():
        if shape.positions() > MAX_POSITIONS:
            continue
        if mode == "true":
            chosen[name] = "gemm_conv=true"
            continue
        times, cached = (probe or probe_cached)(shape)
        if times["gemm"] < 0.95 * times["onednn"]:
            chosen[name] = (f"{shape.key()}: gemm {times['gemm'] * 1e3:.1f} ms, onednn {times['onednn'] * 1e3:.1f} ms"
                            f"{' (cached)' if cached else ''}")
    return chosen


def use_gemm_convs(module: nn.Module, names) -> int:
    """Replace the named convolutions below ``module`` by :class:`GemmConv2d` sharing their parameters."""
    count = 0
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        conv = getattr(parent, child)
        if type(conv) is nn.Conv2d:
            setattr(parent, child, GemmConv2d.from_conv(conv))
            count += 1
    return count
