"""Base file I/O for every layer: atomic writes, safe checkpoint loading, strict state-dict loading.

This module sits at the bottom layer (it imports only ``t2i.errors``; torch when a checkpoint is read or
written, so the synthetic-bird render workers stay light), so data, models,
metrics, the pipeline and the trainers all write and read files the same way.

A checkpoint is a dict saved with ``torch.save``::

    {"format": "t2i", "kind": "damsm_text" | "gan" | "draw" | ..., "version": 1,
     "config": {...resolved plain config...}, "vocab": {...} | None, ...payload...}

It is written to a temporary file in the same directory, flushed and fsynced, then moved into place
with ``os.replace``, so a crash or a full disk leaves the previous checkpoint intact. It is read with
``torch.load(weights_only=True)``: only tensors and plain containers, never arbitrary pickles.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from t2i.errors import CheckpointError

if TYPE_CHECKING:
    import torch

FORMAT = "t2i"
VERSION = 1


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Call ``write_fn(tmp_path)`` then atomically move the file to ``path``.

    On any failure (including ``OSError: No space left on device``) the temporary file is removed
    and whatever was at ``path`` before is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Atomically write ``data`` as JSON (sets and tuples as lists, paths as strings)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return sorted(obj) if isinstance(obj, (set, frozenset)) else list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def save_checkpoint(path: str | os.PathLike, kind: str, payload: dict[str, Any]) -> Path:
    """Atomically save ``payload`` tagged with ``kind``."""
    import torch

    data = {"format": FORMAT, "version": VERSION, "kind": kind, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def load_checkpoint(path: str | os.PathLike, kinds: str | Iterable[str] | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a t2i checkpoint safely and check its kind.

    Raises:
        CheckpointError: the file is missing, unreadable, not a t2i checkpoint, or of another kind.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (train a model first with tools/train.py)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle that needs code to load
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first[:200]} (is it a t2i checkpoint, and complete?)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a t2i checkpoint (no 'format: t2i' tag)")
    if kinds is not None:
        allowed = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        if data.get("kind") not in allowed:
            raise CheckpointError(
                f"{path} holds a '{data.get('kind')}' checkpoint, but a {' or '.join(repr(k) for k in allowed)} one is needed here")
    return data


def state_dict_mismatch(module: torch.nn.Module, state: dict) -> str:
    """Why ``state`` does not load strictly into ``module`` ("" when it does): keys and shapes, one line."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in sorted(own.keys() & state.keys()) if tuple(own[k].shape) != tuple(state[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"shape of {k} is {tuple(state[k].shape)} there but {tuple(own[k].shape)} here")
    return "; ".join(parts)


def load_state_dict_strict(module: torch.nn.Module, state: dict, what: str, path: str | os.PathLike = "", *,
                           error: type[Exception] = CheckpointError,
                           advice: str = "check the model config and the checkpoint") -> None:
    """``load_state_dict(strict=True)`` that turns key/shape mismatches into one clear line.

    Raises:
        ``error`` (CheckpointError by default): "<what> from <path> does not fit this model: <why>; <advice>".
    """
    why = state_dict_mismatch(module, state)
    if why:
        where = f" from {path}" if path else ""
        raise error(f"{what}{where} does not fit this model: {why}; {advice}")
    module.load_state_dict(state, strict=True)


def fill_batchnorm_counters(module: torch.nn.Module, state: dict) -> dict:
    """Add BatchNorm ``num_batches_tracked`` entries that state dicts saved by PyTorch < 0.4.1 lack
    (AttnGAN's released encoders, the pytorch-fid Inception), so strict loading can check everything else."""
    import torch

    state = dict(state)
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    return state
