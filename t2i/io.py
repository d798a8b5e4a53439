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

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from t2i.errors import CheckpointError, DiskFullError, TrainingError

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
    except BaseException as exc:
        with _suppress():
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "unexpected pos" in str(exc):
            # torch.save reports a full disk as "[enforce fail at inline_container.cc] unexpected pos"
            raise DiskFullError(disk_full_message(path)) from None
        raise
    remove_stale_tmp(path)
    return path


def remove_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes of ``path`` left behind (``.<name>.*.tmp``).

    Called after each successful write: only one writer writes a given target, so any older temporary
    file of the same target belongs to a write that was killed.
    """
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        with _suppress():
            tmp.unlink()
            removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def disk_full_message(path: str | os.PathLike, needed_bytes: int | None = None) -> str:
    """``disk full at PATH (N MB free[, M MB needed]); ...`` for a write that ran out of space."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free
    need = f", {needed_bytes / 2**20:.0f} MB needed" if needed_bytes else ""
    return f"disk full at {path} ({free / 2**20:.0f} MB free{need}); free some space or write somewhere else"


def set_aside(path: str | os.PathLike) -> Path | None:
    """Move an existing file to ``<stem>-before-<UTC time><suffix>`` beside it (never over another); the new path.

    A run that starts over (``train.resume=never``) keeps the old checkpoint this way instead of overwriting it.
    """
    path = Path(path)
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target = path.with_name(f"{path.stem}-before-{stamp}{path.suffix}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.stem}-before-{stamp}-{n}{path.suffix}")
        n += 1
    os.replace(path, target)
    return target


def non_finite(tensors: Any, prefix: str = "") -> str | None:
    """The name of the first floating-point tensor in a (nested) state that holds NaN or inf; None if all finite.

    Walks dicts, lists and tuples (model and optimiser state dicts alike).
    """
    import torch

    if isinstance(tensors, torch.Tensor):
        if tensors.is_floating_point() and not bool(torch.isfinite(tensors).all()):
            return prefix or "tensor"
        return None
    if isinstance(tensors, dict):
        items = tensors.items()
    elif isinstance(tensors, (list, tuple)):
        items = enumerate(tensors)
    else:
        return None
    for key, value in items:
        bad = non_finite(value, f"{prefix}.{key}" if prefix else str(key))
        if bad:
            return bad
    return None


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
    """Atomically save ``payload`` tagged with ``kind``, after checking that every tensor in it is finite.

    A state whose weights (or optimiser moments) hold NaN or inf is never written: the checkpoint already
    at ``path`` stays the last good one, and the error says so.

    Raises:
        TrainingError: a non-finite tensor in ``payload`` (nothing is written).
        DiskFullError: the disk filled up (the previous file is kept, no temporary file is left).
    """
    bad = non_finite(payload)
    if bad:
        path = Path(path)
        kept = f"the checkpoint already at {path} is kept" if path.exists() else "no checkpoint was written yet"
        step = f" at step {payload['step']}" if "step" in payload else ""
        raise TrainingError(f"{bad} became NaN/inf{step}, so it was not saved; {kept}; lower the learning rate "
                            "(or use train.precision=fp32), then resume")
    import torch

    data = {"format": FORMAT, "version": VERSION, "kind": kind, **payload}
    return atomic_write(path, lambda tmp: torch.save(data, tmp))


def start_over(path: str | os.PathLike) -> Path | None:
    """For a run told to start over: keep an existing checkpoint aside (see :func:`set_aside`) and say where."""
    moved = set_aside(path)
    if moved is not None:
        import logging

        logging.getLogger(__name__).warning("starting over (resume=never): the previous checkpoint is kept as %s",
                                            moved)
    return moved


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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded with results so a number can be traced to its weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
