"""Seeding, device choice, the CPU and its threads, precision policy (autocast + GradScaler, ``auto``) and
torch.distributed setup."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16", "bf16")

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from t2i.errors import ConfigError
        raise ConfigError(f"device={device} asked for, but CUDA is not available here; use device=cpu or device=auto")
    return dev


# ------------------------------------------------------------------------------------------- the CPU
@dataclass(frozen=True)
class CPUInfo:
    """What this CPU offers for bf16: the model name, torch's kernel capability and the relevant flags."""

    model: str
    capability: str          # torch.backends.cpu.get_cpu_capability(): DEFAULT | AVX2 | AVX512 | ...
    avx512_bf16: bool
    amx_bf16: bool

    @property
    def native_bf16(self) -> bool:
        """bf16 arithmetic in hardware (avx512_bf16 or AMX); without it oneDNN emulates bf16, 50-100x slower."""
        return self.avx512_bf16 or self.amx_bf16

    @property
    def isa(self) -> str:
        return "AMX" if self.amx_bf16 else self.capability

    def line(self, threads: int | None = None) -> str:
        """One line for logs and benchmark headers, e.g. ``AMD EPYC (AVX2, native bf16: no, 2 threads)``."""
        extra = f", {threads} thread{'s' if threads > 1 else ''}" if threads else ""
        return f"{self.model} ({self.isa}, native bf16: {'yes' if self.native_bf16 else 'no'}{extra})"


@functools.lru_cache(maxsize=1)
def cpu_info() -> CPUInfo:
    """This machine's CPU, read from ``/proc/cpuinfo`` (Linux) and torch; unknown flags count as absent."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.processor() or platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return CPUInfo(model=model or "unknown CPU", capability=torch.backends.cpu.get_cpu_capability(),
                   avx512_bf16="avx512_bf16" in flags, amx_bf16="amx_bf16" in flags)


def usable_cores() -> int:
    """The cores this process may run on (``os.sched_getaffinity``: a container or ``taskset`` limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads and return the count.

    ``threads`` when given; else ``OMP_NUM_THREADS`` when set (torch already follows it); else the cores this
    process may use (:func:`usable_cores`) divided among the processes ``torchrun`` started on this machine.
    torch's own default counts the machine's physical cores, which overcommits a process pinned to fewer.
    """
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        from t2i.errors import ConfigError
        raise ConfigError(f"threads={threads!r}; give a positive whole number, or null for one per usable core")
    if threads:
        n = threads
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        n = int(os.environ["OMP_NUM_THREADS"])
    else:
        n = max(1, usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
    torch.set_num_threads(n)
    return n


# ------------------------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class ProbeShape:
    """The representative block the ``auto`` probe times: a 3x3 conv + BatchNorm + LeakyReLU + 3x3 conv."""

    channels: int = 32
    size: int = 64
    batch: int = 4


def cache_dir() -> Path:
    """``$T2I_CACHE_DIR``, else ``$XDG_CACHE_HOME/t2i``, else ``~/.cache/t2i``."""
    if os.environ.get("T2I_CACHE_DIR"):
        return Path(os.environ["T2I_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "t2i"


def probe_cpu_precisions(shape: ProbeShape = ProbeShape(), reps: int = 3) -> dict[str, float]:
    """Median seconds of a forward + backward of the probe block in fp32 and in bf16 autocast, on the CPU.

    A few passes at the model's own channels and resolution: well under a second on a CPU with native bf16
    (the only place it runs). Stops early when bf16 is already 3x slower than fp32.
    """
    with torch.random.fork_rng(devices=[]):  # initialising the block must not move the run's random stream
        block = torch.nn.Sequential(torch.nn.Conv2d(shape.channels, shape.channels, 3, padding=1, bias=False),
                                    torch.nn.BatchNorm2d(shape.channels), torch.nn.LeakyReLU(0.2),
                                    torch.nn.Conv2d(shape.channels, shape.channels, 3, padding=1, bias=False))
    x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, generator=torch.Generator().manual_seed(0))
    times: dict[str, float] = {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        ctx = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else contextlib.nullcontext
        samples = []
        for i in range(reps + 1):  # the first pass warms oneDNN's kernel cache and is not counted
            start = time.perf_counter()
            with ctx():
                out = block(x)
            out.float().square().mean().backward()
            block.zero_grad(set_to_none=True)
            if i:
                samples.append(time.perf_counter() - start)
            if name == "bf16" and "fp32" in times and sum(samples) > 3 * reps * times["fp32"]:
                break
        times[name] = sorted(samples)[len(samples) // 2] if samples else float("inf")
    return times


def _probe_cached(shape: ProbeShape) -> tuple[dict[str, float], bool]:
    """The probe's times, from the per-machine cache when this CPU, torch, thread count and shape were timed."""
    cpu = cpu_info()
    key = f"{cpu.model}|{cpu.isa}|torch {torch.__version__}|{torch.get_num_threads()} threads|" \
          f"{shape.channels}x{shape.size}x{shape.size} b{shape.batch}"
    cache = read_cache("precision_probe.json")
    hit = cache.get(key)
    if isinstance(hit, dict) and all(isinstance(hit.get(k), (int, float)) for k in ("fp32", "bf16")):
        return {"fp32": float(hit["fp32"]), "bf16": float(hit["bf16"])}, True
    times = probe_cpu_precisions(shape)
    cache[key] = times
    write_cache("precision_probe.json", cache)
    return times, False


def read_cache(name: str) -> dict:
    """The JSON object in ``cache_dir() / name`` (a probe's times), or ``{}`` when missing or unreadable."""
    try:
        cache = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def write_cache(name: str, cache: dict) -> None:
    """Replace ``cache_dir() / name`` atomically; a cache, not a result: a failed write means probing again."""
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def choose_precision(device: torch.device, shape: ProbeShape | None = None, *,
                     cpu: CPUInfo | None = None, probe=None) -> tuple[str, str]:
    """What ``precision=auto`` means on ``device``: ``(name, reason)``.

    CUDA: bf16 where the device supports it, else fp16 (with a GradScaler). CPU: bf16 only when the CPU has
    native bf16 *and* the probe at the model's shapes shows bf16 at least 5 % faster than fp32; else fp32.
    ``cpu`` and ``probe`` (``shape -> ({"fp32": s, "bf16": s}, cached)``) replace the real ones in tests.
    """
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name(device)} supports bf16"
        return "fp16", f"{torch.cuda.get_device_name(device)} has no bf16: fp16 with a GradScaler"
    if device.type != "cpu":
        return "fp32", f"device {device.type}: fp32"
    cpu = cpu or cpu_info()
    if not cpu.native_bf16:
        return "fp32", f"{cpu.line()}: bf16 would be emulated"
    times, cached = (probe or _probe_cached)(shape or ProbeShape())
    fp32, bf16 = times["fp32"] * 1e3, times["bf16"] * 1e3
    name = "bf16" if times["bf16"] < 0.95 * times["fp32"] else "fp32"
    return name, (f"{cpu.line()}: probe fp32 {fp32:.1f} ms, bf16 {bf16:.1f} ms"
                  f"{' (cached)' if cached else ''}")


_SAID: set[str] = set()


def _say_once(level: int, message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        log.log(level, message)


@dataclass
class Precision:
    """Mixed-precision policy for one device.

    ``auto`` (the default of every tool): see :func:`choose_precision`; :attr:`name` is then the choice and
    :attr:`reason` says why. ``fp32``: no autocast. ``bf16``: autocast to bfloat16 (CUDA, and CPUs with native
    bf16; elsewhere it is emulated, and a warning says so once). ``fp16``: autocast to float16 with a
    GradScaler (CUDA only; on the CPU it is refused).
    """

    name: str
    device: torch.device
    probe_shape: ProbeShape | None = None
    reason: str = ""

    def __post_init__(self):
        from t2i.errors import ConfigError

        self.device = torch.device(self.device)
        if self.name == "auto":
            self.name, self.reason = choose_precision(self.device, self.probe_shape)
            _say_once(logging.INFO, f"precision auto -> {self.name}: {self.reason}")
        if self.name not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.name!r}; choose auto or one of {', '.join(PRECISIONS)}")
        if self.name == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision=fp16 needs CUDA; on the CPU use precision=auto, bf16 or fp32")
        if self.name == "bf16" and self.device.type == "cpu" and not self.reason and not cpu_info().native_bf16:
            _say_once(logging.WARNING, f"precision=bf16 on {cpu_info().line()}: bf16 is emulated here and 50-100x "
                                       "slower than fp32; use precision=auto or fp32")

    @property
    def dtype(self) -> torch.dtype | None:
        return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[self.name]

    def autocast(self):
        """Context manager: autocast for this policy (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only for fp16."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise torch.distributed when launched by ``torchrun`` (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def rng_state() -> dict:
    """Every RNG state needed to resume bit-exactly (python, numpy, torch CPU and CUDA)."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    if isinstance(x, list):
        return tuple(_to_tuple(v) for v in x)
    return x


def _numpy_state() -> list:
    # Stored as plain values and a tensor so that torch.load(weights_only=True) can read it back.
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
