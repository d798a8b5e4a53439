"""A restricted unpickler for the metadata pickles of the AttnGAN/StackGAN data releases.

AttnGAN's ``birds.zip`` and ``coco.zip`` ship ``{train,test}/filenames.pickle`` (a list of str),
``{train,test}/class_info.pickle`` (class ids) and ``captions.pickle``
(``[train_captions, test_captions, ixtoword, wordtoix]``). They were written by Python 2 with
protocol 2, so strings may arrive as py2 ``str`` (decoded here as latin-1) and containers are built
with plain opcodes. ``pickle.load`` on such a file would run any code its author chose; this module
reads them without ever calling anything outside a short allowlist.

What is accepted:

* plain opcodes: list, tuple, dict, str, bytes, int, float, bool, None (and the memo);
* a few harmless constructors a protocol-2 pickle needs for ordinary values:
  ``set``/``frozenset``/``bytearray``/``complex`` (protocol 2 has no set opcode), ``_codecs.encode``
  with the ``latin1`` codec only (how Python 3 writes ``bytes`` in protocol 2), ``int``/``float``/
  ``str``/``list``/``dict``/``tuple``/``bool`` (``defaultdict`` factories), ``collections.OrderedDict``
  and ``collections.defaultdict``;
* numeric numpy arrays and scalars (class ids are sometimes saved as ``numpy`` arrays): the
  ``numpy.core.multiarray._reconstruct``/``scalar`` and ``numpy.ndarray``/``numpy.dtype`` globals,
  with object and void dtypes refused (they could smuggle pointers or arbitrary objects).

Anything else (``os.system``, ``builtins.eval``, ``copy_reg._reconstructor`` for class instances,
...) raises :class:`t2i.errors.DataError` naming the file, *before* the callable could be invoked.
"""

from __future__ import annotations

import codecs
import collections
import io
import os
import pickle
from pathlib import Path
from typing import Any

from t2i.errors import DataError

__all__ = ["safe_load", "safe_loads", "UnsafePickleError"]


class UnsafePickleError(pickle.UnpicklingError):
    """Raised inside the unpickler when a pickle asks for a global outside the allowlist."""


def _latin1_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles ``bytes`` in protocol 2 as ``_codecs.encode(text, 'latin1')``; allow only that.
    if encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return codecs.encode(obj, "latin1", errors)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return {}
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]

    def _check_dtype(dtype: Any) -> None:
        if np.dtype(dtype).kind in "OV":
            raise UnsafePickleError(f"numpy dtype {np.dtype(dtype)!s} (object/void) is not allowed")

    def safe_dtype(obj: Any, *args: Any) -> Any:
        if isinstance(obj, str) and obj[:1] in ("O", "V"):
            raise UnsafePickleError(f"numpy dtype {obj!r} (object/void) is not allowed")
        return np.dtype(obj, *args)

    def safe_reconstruct(cls: Any, shape: Any, dtype: Any) -> Any:
        if cls is not np.ndarray:
            raise UnsafePickleError("numpy _reconstruct of a class other than ndarray is not allowed")
        return _reconstruct(cls, shape, dtype)

    def safe_scalar(dtype: Any, *args: Any) -> Any:
        _check_dtype(dtype)
        return scalar(dtype, *args)

    out = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = safe_reconstruct
        out[(mod, "scalar")] = safe_scalar
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = safe_dtype
    return out


_BUILTIN_TYPES = {name: getattr(__import__("builtins"), name) for name in (
    "set", "frozenset", "bytearray", "complex", "int", "float", "str", "list", "dict", "tuple", "bool")}

_ALLOWED: dict[tuple[str, str], Any] = {
    **{("builtins", k): v for k, v in _BUILTIN_TYPES.items()},
    **{("__builtin__", k): v for k, v in _BUILTIN_TYPES.items()},  # py2 names (fix_imports maps too)
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
}
_ALLOWED.update(_numpy_globals())


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allowlisted callables."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"global {module}.{name} is not allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not allowed")


def safe_loads(data: bytes, *, encoding: str = "latin1", name: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allowlist of this module.

    Args:
        data: the pickle bytes.
        encoding: how Python 2 ``str`` objects are decoded (``latin1`` keeps every byte; use
            ``bytes`` to get them as ``bytes``).
        name: what to call the data in error messages.

    Raises:
        DataError: the pickle asks for a forbidden global, or is corrupt.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as exc:
        raise DataError(f"refusing to load {name}: {exc}; only plain data pickles are accepted "
                        f"(re-create the file, or get it from a trusted source)") from None
    except Exception as exc:  # truncated or corrupt pickle
        raise DataError(f"cannot read pickle {name}: {type(exc).__name__}: {str(exc)[:150]} "
                        f"(is the file complete?)") from None


def safe_load(path: str | os.PathLike, *, encoding: str = "latin1") -> Any:
    """Read the pickle at ``path`` with the restricted unpickler (see the module docstring).

    Raises:
        DataError: the file is missing, corrupt, or asks for something other than plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pickle file {path} does not exist; see data/README.md for the expected layout")
    return safe_loads(path.read_bytes(), encoding=encoding, name=str(path))
