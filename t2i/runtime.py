"""Seeding, device choice, precision policy (autocast + GradScaler) and torch.distributed setup."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

PRECISIONS = ("fp32", "fp16", "bf16")


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


@dataclass
class Precision:
    """Mixed-precision policy for one device.

    ``fp32``: no autocast. ``bf16``: autocast to bfloat16 (CUDA, and CPU where AMX makes it pay).
    ``fp16``: autocast to float16 with a GradScaler (CUDA only; on CPU it is refused).
    """

    name: str
    device: torch.device

    def __post_init__(self):
        if self.name not in PRECISIONS:
            from t2i.errors import ConfigError
            raise ConfigError(f"unknown precision {self.name!r}; choose one of {', '.join(PRECISIONS)}")
        if self.name == "fp16" and self.device.type != "cuda":
            from t2i.errors import ConfigError
            raise ConfigError("precision=fp16 needs CUDA; on the CPU use precision=bf16 or fp32")

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
