"""Validation at the edge: the tools (and the demo) check each value a user typed before any work starts.

Every check raises :class:`~t2i.errors.ConfigError` with one line that names the setting, says what is wrong
and what to give instead. Values arrive from Hydra as they were typed (``num_images=abc`` is the string
``"abc"``, ``seed=1.5`` a float), so each check accepts exactly the types that make sense and nothing else.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from t2i.errors import ConfigError, DiskFullError
from t2i.io import disk_full_message

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


def integer(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
            optional: bool = False, hint: str = "") -> int | None:
    """``value`` as an int within ``[minimum, maximum]``; a whole float (``2.0``) counts, a bool or text does not."""
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} is not a whole number{_range(minimum, maximum)}{hint}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}={value} is out of range: give a whole number{_range(minimum, maximum)}{hint}")
    return value


def _range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum} to {maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def number(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
           optional: bool = False) -> float | None:
    """A finite real number in range (NaN and infinity are refused: ``lambda_damsm=nan`` is not "off")."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} is not a number")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={value} is not a finite number; give a real value")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{name}={value:g} is out of range ({_range(minimum, maximum).strip()})")
    return value


def choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(str(c) for c in choices)}")
    return value


def seed(value: Any, name: str = "seed") -> int:
    return integer(value, name, minimum=0, maximum=MAX_SEED)


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def device(value: Any, name: str = "device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (checked against the GPUs this machine has)."""
    text = str(value)
    if not _DEVICE.match(text):
        raise ConfigError(f"{name}={value!r} is not a device; use auto, cpu, cuda or cuda:N")
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{name}={value} asked for, but CUDA is not available here; use {name}=cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{name}={value}: this machine has {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{name}={value} asked for, but MPS is not available here; use {name}=cpu or auto")
    return dev


def caption(text: Any, name: str = "caption") -> str:
    """One caption: text on one line (a caption file holds one caption per line)."""
    if text is None or not str(text).strip():
        raise ConfigError(f'give a caption, e.g. {name}="a small bird with a green crown", or captions_file=PATH')
    text = str(text)
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{name} has a line break; give one caption per line in captions_file=PATH instead")
    if "\x00" in text:
        raise ConfigError(f"{name} contains a NUL character; give plain text")
    return text.strip()


def existing_path(value: Any, name: str, *, kind: str = "any") -> Path:
    """A path that exists (``kind``: ``file`` | ``dir`` | ``any``)."""
    if value is None or not str(value).strip():
        raise ConfigError(f"{name} is empty; give a path")
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise ConfigError(f"{name}={path} does not exist")
    if kind == "file" and not path.is_file():
        raise ConfigError(f"{name}={path} is not a file")
    if kind == "dir" and not path.is_dir():
        raise ConfigError(f"{name}={path} is not a folder")
    return path


def output_dir(value: Any, name: str = "out_dir") -> Path:
    """A folder that can be created (or exists) and written: not a file, not under a file, not read-only."""
    if value is None or not str(value).strip():
        raise ConfigError(f"{name} is empty; give a folder to write to")
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={path} is an existing file, not a folder; choose another {name}")
    _not_under_a_file(path, name)
    probe = path if path.exists() else next(p for p in path.parents if p.exists())
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{name}={path}: {probe} is not writable (read-only?); choose another {name}")
    return path


def data_folder(value: Any, name: str = "data.root") -> Path:
    """A folder to read data from, which may not exist yet (it can be rendered or prepared there)."""
    path = Path(str(value)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}={path} is a file, not a data folder")
    _not_under_a_file(path, name)
    return path


def _not_under_a_file(path: Path, name: str) -> None:
    for parent in path.parents:  # the nearest existing ancestor must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{name}={path} lies under {parent}, which is a file; choose another {name}")
            return


def first_free_dir(parent: Path, prefix: str = "") -> Path:
    """``parent/<prefix>NNN``, the first number not taken (never an existing folder)."""
    taken = {p.name for p in parent.iterdir()} if parent.is_dir() else set()  # nothing is created here
    n = 0
    while f"{prefix}{n:03d}" in taken or f".{prefix}{n:03d}.tmp" in taken:
        n += 1
    return parent / f"{prefix}{n:03d}"


def refuse_overwrite(folder: Path, names: Iterable[str], overwrite: bool, name: str = "out_dir") -> None:
    """Refuse to write into ``folder`` when any of ``names`` is already there, unless ``overwrite``."""
    if overwrite or not folder.is_dir():
        return
    clash = sorted(n for n in names if (folder / n).exists())
    if clash:
        raise ConfigError(f"{name}={folder} already holds {clash[0]}" + (f" and {len(clash) - 1} more" if len(clash) > 1
                          else "") + f"; choose another {name}, or pass overwrite=true")


@contextmanager
def file_set(folder: Path, overwrite: bool = False) -> Iterator[Path]:
    """Write a set of files all or nothing: into a hidden sibling folder, moved into ``folder`` at the end.

    Yields the staging folder. On any error (a full disk included) the staging folder is removed and
    ``folder`` is left as it was; a full disk becomes one :class:`ConfigError` line.
    """
    made = [p for p in (folder.parent, *folder.parent.parents) if not p.exists()]  # innermost first
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        try:
            yield stage
            if not folder.exists():
                os.replace(stage, folder)
            else:
                refuse_overwrite(folder, [p.name for p in stage.iterdir()], overwrite)
                for item in stage.iterdir():
                    os.replace(item, folder / item.name)
        except OSError as exc:
            if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
                raise DiskFullError(disk_full_message(folder, _size(stage))) from None
            raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in made:  # a refused set leaves no empty folders behind either
            try:
                parent.rmdir()
            except OSError:
                break
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
