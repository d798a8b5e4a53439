"""Benchmark maths for ``tools/bench.py``: matmul peak, model FLOPs, timers, peak memory, results table.

Everything here takes plain arguments (no config objects), so each piece is testable on its own:

- :func:`matmul_peak` measures the matrix-product peak of this machine, ``2 n^3`` FLOPs per product.
- :func:`count_flops` counts the FLOPs of a callable with ``torch.utils.flop_counter.FlopCounterMode``
  (matrix products and convolutions, forward and backward; element-wise ops are not counted, as usual).
- :func:`time_fn` times a callable (warm-up, CUDA synchronisation, every repeat kept).
- :class:`PeakMemory` measures the peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA;
  on the CPU the process high-water mark ``VmHWM`` of ``/proc/self/status`` after resetting it through
  ``/proc/self/clear_refs`` (tracemalloc does not see torch's allocations).
- :class:`BenchCase` is one measured row; :func:`format_table` prints them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


# ---------------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], steps: int, warmup: int = 1, device: torch.device | str = "cpu") -> list[float]:
    """Seconds of each of ``steps`` calls of ``fn`` after ``warmup`` untimed calls.

    Args:
        fn: the work to time (no arguments).
        steps: timed calls (>= 1).
        warmup: untimed calls first (allocator, oneDNN primitive caches, cuDNN autotuning, compilation).
        device: the device ``fn`` runs on; CUDA is synchronised around every call.

    Returns:
        list of ``steps`` wall-clock durations in seconds.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize_times(times: list[float]) -> dict[str, float]:
    """``best``, ``median`` and ``mean`` of a list of durations (seconds)."""
    return {"best": min(times), "median": statistics.median(times), "mean": statistics.fmean(times)}


# ---------------------------------------------------------------------------------------------- FLOPs
def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of ``[m, k] @ [k, n]``: one multiply and one add per term, ``2 m k n``."""
    return 2 * m * k * n


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """Run ``fn`` once under ``FlopCounterMode`` and return ``(flops, fn's result)``.

    Counts matrix products, convolutions (forward and backward) and attention kernels with PyTorch's
    registered formulas (``2 m k n`` per product); element-wise ops, normalisation and recurrent cells
    without a registered formula (``aten::lstm`` on the CPU) count zero.
    """
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn()
    return int(counter.get_total_flops()), out


def matmul_peak(n: int = 2048, dtype: torch.dtype | str = torch.float32, repeats: int = 5,
                device: torch.device | str = "cpu", inner: int = 1, via: str = "mm") -> dict[str, float]:
    """Best-of-``repeats`` throughput of an ``n x n x n`` matrix product.

    Args:
        n: matrix side (2048 by default: large enough to reach the BLAS peak, small enough for a laptop).
        dtype: ``torch.float32``/``bfloat16``/``float16`` or their names ``fp32``/``bf16``/``fp16``.
        repeats: timed repeats; the best one is the peak (the others are slowed by other processes).
        device: where to run.
        inner: products per timed repeat (more for fast GPUs, so that timer resolution does not matter).
        via: ``mm`` (``torch.mm``: MKL for fp32 on x86 CPUs, oneDNN for bf16, cuBLAS on CUDA) or ``conv1x1``:
            the same product as a 1x1 convolution in channels-last, ``[1, n, n/64, 64] x [n, n, 1, 1]``,
            which runs on oneDNN/cuDNN, the libraries the models' convolutions use (MKL's fp32 GEMM is
            several times slower than oneDNN's on AMD CPUs).

    Returns:
        ``{"n", "dtype", "via", "seconds", "gflops", "median_gflops"}``; seconds per product of the best repeat.
    """
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    if via == "mm":
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

        def product():
            return a @ b
    elif via == "conv1x1":
        if n % 64:
            raise ValueError(f"conv1x1 peak needs n divisible by 64, got {n}")
        cl = torch.channels_last
        x = torch.randn(1, n, n // 64, 64, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=cl)
        w = torch.randn(n, n, 1, 1, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=cl)

        def product():
            return torch.nn.functional.conv2d(x, w)  # (1, n, n/64, 64): M = n pixels, K = N = n channels
    else:
        raise ValueError(f"via must be mm or conv1x1, got {via!r}")

    def repeat():
        for _ in range(inner):
            product()

    times = [t / inner for t in time_fn(repeat, repeats, warmup=1, device=device)]
    flops = matmul_flops(n, n, n)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "via": via, "seconds": min(times),
            "gflops": flops / min(times) / 1e9, "median_gflops": flops / statistics.median(times) / 1e9}


def gemm_peak(n: int = 2048, dtype: torch.dtype | str = torch.float32, repeats: int = 5,
              device: torch.device | str = "cpu", inner: int = 1) -> dict[str, Any]:
    """The better of :func:`matmul_peak` via ``mm`` and via ``conv1x1``: ``{"gflops", "mm", "conv1x1"}``."""
    runs = {via: matmul_peak(n, dtype, repeats, device, inner, via) for via in ("mm", "conv1x1")}
    return {"gflops": max(r["gflops"] for r in runs.values()), **runs}


def conv_peak(channels: int = 64, size: int = 64, batch: int = 16, dtype: torch.dtype | str = torch.float32,
              repeats: int = 5, device: torch.device | str = "cpu") -> dict[str, float]:
    """Best-of-``repeats`` GFLOP/s of a channels-last 3x3 convolution, counted as direct convolution FLOPs.

    A reference for the models' own convolutions: oneDNN may run 3x3 convolutions faster per counted FLOP
    than its GEMMs (Winograd, better-tuned kernels), so a model can exceed 100% of :func:`matmul_peak`.
    """
    dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(batch, channels, size, size, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=cl)
    w = torch.randn(channels, channels, 3, 3, generator=g).to(device=device, dtype=dtype).contiguous(memory_format=cl)
    flops = 2 * batch * channels * size * size * channels * 9  # 2 B Cout H W Cin k k
    times = time_fn(lambda: torch.nn.functional.conv2d(x, w, padding=1), repeats, warmup=1, device=device)
    return {"channels": channels, "size": size, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            "seconds": min(times), "gflops": flops / min(times) / 1e9}


def interleaved_times(fns: list[Callable[[], Any]], steps: int, device: torch.device | str = "cpu") -> list[list[float]]:
    """Time several callables in rounds (``fn0, fn1, ..., fn0, fn1, ...``), ``steps`` rounds.

    On a shared machine the load changes by several times within a minute; interleaving exposes every
    variant to the same conditions, so that their ratios (the speedups) stay meaningful. Warm up first.

    Returns:
        ``times[i]``: the ``steps`` durations (seconds) of ``fns[i]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = torch.device(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(steps):
        for i, fn in enumerate(fns):
            times[i] += time_fn(fn, 1, warmup=0, device=device)
    return times


def achieved(flops: float, seconds: float, peak_gflops: float | None) -> tuple[float, float | None]:
    """GFLOP/s of ``flops`` done in ``seconds``, and its percentage of ``peak_gflops`` (None without a peak)."""
    gflops = flops / seconds / 1e9
    return gflops, (100.0 * gflops / peak_gflops if peak_gflops else None)


# ---------------------------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def reset_peak_rss() -> bool:
    """Reset the process high-water mark ``VmHWM`` to the current RSS (Linux >= 4.0); False if unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory of the block it wraps, in MiB (``.peak_mib``), above what was in use at entry (``.delta_mib``).

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, after ``reset_peak_memory_stats``).
    CPU: ``VmHWM`` (resident set high-water mark of the whole process, reset at entry) minus ``VmRSS`` at
    entry; includes allocator caches and oneDNN scratch buffers, which is what a user has to provision.
    ``None`` where neither is available.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak_mib: float | None = None
        self.delta_mib: float | None = None
        self._start = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._ok = reset_peak_rss()
            self._start = (_status_kib("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = _status_kib("VmHWM")
            self.peak_mib = hwm / 1024 if (hwm is not None and self._ok) else None
        self.delta_mib = self.peak_mib - self._start if self.peak_mib is not None else None


# ---------------------------------------------------------------------------------------------- layout
def to_channels_last(module: nn.Module) -> nn.Module:
    """Store the 4-d weights of ``module`` channels-last (NHWC); oneDNN and cuDNN then skip layout reorders."""
    return module.to(memory_format=torch.channels_last)


def images_channels_last(images: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[B, C, H, W]`` tensors in channels-last memory format (same shapes and values)."""
    return [im.contiguous(memory_format=torch.channels_last) for im in images]


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op threads (None: leave as is)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------- results
@dataclass
class BenchCase:
    """One measured configuration.

    Attributes:
        kind: ``train`` (one G+D step, images/s) or ``generate`` (forward only, latency).
        precision: ``fp32`` / ``bf16`` / ``fp16``.
        channels_last: modules and inputs channels-last.
        compiled: modules compiled with ``torch.compile``.
        batch: images per step.
        resolution: final image side in pixels.
        seconds: per step/call: best, median, mean.
        flops_per_image: counted FLOPs per image (train: forward + backward of G, Ds and DAMSM path).
        images_per_s: ``batch / best``.
        gflops / pct_peak: achieved GFLOP/s at the best time, and its percentage of the matmul peak of
            the same precision.
        peak_mib / delta_mib: peak memory and its increase over the state before the case.
    """

    kind: str
    precision: str
    channels_last: bool
    compiled: bool
    batch: int
    resolution: int
    seconds: dict[str, float]
    flops_per_image: float
    images_per_s: float
    gflops: float
    pct_peak: float | None
    peak_mib: float | None
    delta_mib: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_case(kind: str, precision: str, channels_last: bool, compiled: bool, batch: int, resolution: int,
              times: list[float], flops_per_step: float, peak_gflops: float | None,
              memory: PeakMemory | None = None, **extra: Any) -> BenchCase:
    """A :class:`BenchCase` from raw timings (seconds per step) and the FLOPs of one step."""
    s = summarize_times(times)
    gflops, pct = achieved(flops_per_step, s["best"], peak_gflops)
    return BenchCase(kind=kind, precision=precision, channels_last=channels_last, compiled=compiled, batch=batch,
                     resolution=resolution, seconds=s, flops_per_image=flops_per_step / batch,
                     images_per_s=batch / s["best"], gflops=gflops, pct_peak=pct,
                     peak_mib=memory.peak_mib if memory else None, delta_mib=memory.delta_mib if memory else None,
                     extra=dict(extra))


def speedups(cases: list[BenchCase], kind: str = "train") -> dict[str, float]:
    """Images/s of every ``kind`` case relative to the fp32, NCHW, eager case of the same batch and resolution."""
    base = {(c.batch, c.resolution): c.images_per_s for c in cases
            if c.kind == kind and c.precision == "fp32" and not c.channels_last and not c.compiled}
    out = {}
    for c in cases:
        ref = base.get((c.batch, c.resolution))
        if c.kind == kind and ref:
            out[case_label(c)] = c.images_per_s / ref
    return out


def case_label(c: BenchCase) -> str:
    layout = "cl" if c.channels_last else "nchw"
    mode = "compiled" if c.compiled else "eager"
    return f"{c.kind} {c.resolution}px b{c.batch} {c.precision} {layout} {mode}"


def format_table(cases: list[BenchCase], peaks: dict[str, float]) -> str:
    """A fixed-width text table of the cases, with the matmul peaks first."""
    lines = ["matmul peak: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items())]
    head = (f"{'kind':<9}{'px':>5}{'batch':>6} {'prec':<5}{'layout':<7}{'mode':<9}{'ms/step':>9}{'median':>9}"
            f"{'img/s':>9}{'GFLOP/img':>10}{'GFLOP/s':>9}{'%peak':>7}{'peakMiB':>9}")
    lines += [head, "-" * len(head)]
    for c in cases:
        pct = f"{c.pct_peak:.1f}" if c.pct_peak is not None else "-"
        mem = f"{c.delta_mib:.0f}" if c.delta_mib is not None else "-"
        lines.append(f"{c.kind:<9}{c.resolution:>5}{c.batch:>6} {c.precision:<5}"
                     f"{'cl' if c.channels_last else 'nchw':<7}{'compiled' if c.compiled else 'eager':<9}"
                     f"{1e3 * c.seconds['best']:>9.1f}{1e3 * c.seconds['median']:>9.1f}{c.images_per_s:>9.2f}"
                     f"{c.flops_per_image / 1e9:>10.3f}{c.gflops:>9.1f}{pct:>7}{mem:>9}")
    return "\n".join(lines)
