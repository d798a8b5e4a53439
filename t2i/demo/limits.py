"""The demo's request limits: what one request may ask for, and a deadline that every layer of a model checks."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from t2i.errors import T2IError


class LimitError(T2IError, ValueError):
    """A request over one of the demo's limits (images, steps, caption length, seed, time)."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Args:
        max_images: images per request (the page's slider goes to this).
        max_steps: interpolation steps per request.
        max_caption_chars: longest caption text accepted (the model reads at most ``words_num`` words anyway).
        time_limit_s: wall-clock seconds a request may spend in the model; past it the request stops with an error.
        max_files: canvas GIFs kept in the work folder (older ones are deleted).
    """

    max_images: int = 16
    max_steps: int = 16
    max_caption_chars: int = 1000
    time_limit_s: float = 60.0
    max_files: int = 64
    max_seed: int = 2**31 - 1


# ============================================================================================ time limit
_deadline = threading.local()


class RequestTimeout(LimitError):
    """The request ran past :attr:`Limits.time_limit_s`."""


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Arm the request deadline of this thread; the models' pre-hooks (:func:`install_deadline_hooks`) check it."""
    previous = getattr(_deadline, "value", None)
    _deadline.value = (time.monotonic() + seconds, seconds) if seconds else None
    try:
        yield
    finally:
        _deadline.value = previous


def check_deadline(*_: Any) -> None:
    """Raise :class:`RequestTimeout` when this thread's request is past its deadline (a no-op outside one)."""
    armed = getattr(_deadline, "value", None)
    if armed is not None and time.monotonic() > armed[0]:
        raise RequestTimeout(f"the request ran past the time limit of {armed[1]:g} s; ask for fewer images or steps")


def install_deadline_hooks(*modules: torch.nn.Module | None) -> int:
    """A forward pre-hook on every submodule that checks the deadline: a long request stops within one layer.

    Returns the number of hooks installed.
    """
    count = 0
    for module in modules:
        if module is None:
            continue
        for sub in module.modules():
            sub.register_forward_pre_hook(check_deadline)
            count += 1
    return count
