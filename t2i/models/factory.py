"""Rebuild modules from plain specs, so checkpoints and exports rebuild themselves without Hydra.

A spec is ``{"target": "t2i.models.generator.MultiStageGenerator", "kwargs": {...plain values...}}``.

A spec read from a file is untrusted: exports are what people share. Only the model classes listed in
:data:`MODEL_CLASSES` can be built, and the target is checked against that list *before* anything is
imported or called; the keyword arguments must be plain JSON values (no ``_target_`` keys, no objects),
so a ``model.json`` cannot name ``t2i.config.build``, ``os.system``, a data renderer or any other callable.

The same list is the registry of self-describing models (diffusers' ``register_to_config``):
:func:`register_model` decorates each listed class, records its constructor arguments in
``init_kwargs`` and refuses a class that is not on the list. :func:`module_spec` turns a built module
back into its spec, and :func:`save_module` / :func:`load_module` write and read one module as
``<name>.safetensors`` (weights) beside ``<name>.json`` (spec and metadata); the DAMSM encoders and the
exports (:mod:`t2i.export`) go through them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from t2i.errors import CheckpointError
from t2i.io import atomic_write, atomic_write_json, load_state_dict_strict, non_finite

# Every class a saved model may name, by its dotted path. A new model class that is saved in checkpoints or
# exports is added here and decorated with @register_model (which refuses a class missing here); the list is
# deliberately static so that checking a target never imports the module it names.
MODEL_CLASSES: frozenset[str] = frozenset({
    "t2i.models.generator.MultiStageGenerator",
    "t2i.models.discriminator.StageDiscriminator",
    "t2i.models.text_encoders.RNNTextEncoder",
    "t2i.models.text_encoders.BertTextEncoder",
    "t2i.models.image_encoders.InceptionImageEncoder",
    "t2i.models.image_encoders.LightImageEncoder",
    "t2i.models.draw.DRAW",
    "t2i.models.aligndraw.AlignDRAW",
})

REGISTERED_MODELS: dict[str, type[nn.Module]] = {}  # dotted path -> class, filled by @register_model

MODULE_FORMAT = "t2i-module"
_MAX_DEPTH = 8  # nesting of lists/dicts in kwargs (stage_options is two deep)


M = TypeVar("M", bound=type)


def _plain_value(value: Any) -> Any:
    """A constructor argument as a JSON value (paths as strings, tuples as lists)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    return value


def register_model(cls: M) -> M:
    """Class decorator: a model that rebuilds itself from its constructor arguments.

    After ``__init__`` the instance has ``init_kwargs``, every constructor argument by name with defaults
    filled in (``**kwargs`` flattened), as plain values; :func:`module_spec` stores them. A class may define
    ``export_kwargs()`` to adjust what is stored (the Inception encoder drops its ImageNet path, since its
    trunk weights travel in the state dict). The class must be named in :data:`MODEL_CLASSES`.

    Raises:
        TypeError: the class is not on the allow-list (add its dotted path to MODEL_CLASSES).
    """
    path = f"{cls.__module__}.{cls.__qualname__}"
    if path not in MODEL_CLASSES:
        raise TypeError(f"{path} is not in t2i.models.factory.MODEL_CLASSES; add it there to make it loadable")
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self).__init__ is not __init__:
            return  # a registered subclass records its own arguments after this returns
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        recorded: dict[str, Any] = {}
        for name, param in list(signature.parameters.items())[1:]:
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update(bound.arguments.get(name, {}))
            elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
                recorded[name] = bound.arguments[name]
        self.init_kwargs = _plain_value(recorded)

    cls.__init__ = __init__
    REGISTERED_MODELS[path] = cls
    return cls


def _path_of(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def module_spec(module: nn.Module) -> dict:
    """``{"target", "kwargs"}`` of a module built from a :func:`register_model` class.

    Raises:
        CheckpointError: the module's class is not registered, or its arguments are not plain values.
    """
    path = _path_of(type(module))
    if REGISTERED_MODELS.get(path) is not type(module) or not hasattr(module, "init_kwargs"):
        raise CheckpointError(f"cannot save a {type(module).__name__}: only t2i's registered model classes "
                              f"({', '.join(sorted(n.rpartition('.')[2] for n in MODEL_CLASSES))}) rebuild themselves")
    export = getattr(module, "export_kwargs", None)
    kwargs = dict(export() if callable(export) else module.init_kwargs)
    check_plain(kwargs, f"{type(module).__name__} arguments")
    return make_spec(path, **kwargs)


def _spec_file(path: Path) -> Path:
    return path.with_suffix(".json")


def save_module(path: str | os.PathLike, module: nn.Module, **meta: Any) -> dict:
    """Write ``module`` as ``path`` (safetensors weights) and ``path`` with suffix ``.json`` (spec + ``meta``).

    Both files are written atomically; ``meta`` must be JSON values. Returns the spec.
    """
    from safetensors.torch import save_file

    path = Path(path)
    spec = module_spec(module)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    bad = non_finite(state)
    if bad:
        raise CheckpointError(f"refusing to save {path.name}: its weight {bad} is NaN/inf; save from a good checkpoint")
    atomic_write(path, lambda tmp: save_file(state, tmp))
    record = {"format": MODULE_FORMAT, "version": 1, **meta, "spec": spec}
    atomic_write_json(_spec_file(path), record)
    return spec


def read_module_record(path: str | os.PathLike) -> dict:
    """The JSON record written by :func:`save_module` beside the weights ``path`` (spec and metadata)."""
    json_path = _spec_file(Path(path))
    if not json_path.is_file():
        raise CheckpointError(f"{json_path} is missing; the saved model is incomplete, save it again")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{json_path} is not valid JSON ({exc}); save the model again") from None
    if not isinstance(record, dict) or record.get("format") != MODULE_FORMAT:
        raise CheckpointError(f"{json_path} is not a t2i saved model (no 'format: {MODULE_FORMAT}' tag)")
    return record


def load_module(path: str | os.PathLike, spec: dict | None = None, what: str = "model") -> nn.Module:
    """Rebuild a module saved by :func:`save_module` and load its weights strictly.

    Args:
        path: the ``.safetensors`` weights file.
        spec: the spec to build from; None: read it from the ``.json`` beside ``path``. (Exports of format
            version 1 keep their specs in ``model.json``.)
        what: the module's role, for error messages.

    Raises:
        CheckpointError: a missing or unreadable file, a spec that names anything but a registered model
            class, or weights that do not fit.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if spec is None:
        spec = read_module_record(path).get("spec")
    check_fits_in_memory(spec, what)
    module = build_from_spec(spec)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the saved model is incomplete, save or export it again")
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"cannot read {path}: {str(exc)[:150]}; save or export the model again") from None
    bad = non_finite(state)
    if bad:  # NaN weights would draw black images with no error
        raise CheckpointError(f"{what} weights in {path} hold NaN/inf (first: {bad}); export again from a good checkpoint")
    load_state_dict_strict(module, state, what, path)
    return module


def available_memory() -> int | None:
    """Bytes of memory available to this process now (Linux ``MemAvailable``), or None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits_in_memory(spec: Any, what: str = "model") -> int:
    """Build ``spec`` on the meta device (no memory) and refuse it when its weights exceed the available memory.

    Returns the weights' size in bytes. A BERT-family text encoder (weights from a folder) is not measured.
    """
    target, _ = check_spec(spec)
    if target.endswith("BertTextEncoder"):
        return 0
    with torch.device("meta"):
        module = build_from_spec(spec)
    size = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
    free = available_memory()
    if free is not None and size > free:
        raise CheckpointError(f"the {what} described by this saved model needs {size / 2**30:.1f} GiB for its weights, "
                              f"more than the {free / 2**30:.1f} GiB available; is the file the one you meant?")
    return size


def make_spec(target: str, **kwargs: Any) -> dict:
    return {"target": target, "kwargs": kwargs}


def spec_from_node(node: dict, **runtime: Any) -> dict:
    """A spec from a plain config dict with ``_target_`` plus call-site values (vocab size, ...)."""
    kwargs = {k: v for k, v in node.items() if k != "_target_"}
    kwargs.update(runtime)
    return make_spec(node["_target_"], **kwargs)


def check_plain(value: Any, where: str = "kwargs", depth: int = 0) -> None:
    """Raise unless ``value`` is made only of JSON values: None, bool, int, finite float, str, lists, str-keyed dicts.

    A dict key ``_target_`` (a Hydra instantiation request) is refused as well.
    """
    if depth > _MAX_DEPTH:
        raise CheckpointError(f"saved model's {where} is nested too deeply; re-export the model")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"saved model's {where} is {value}; re-export the model")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"saved model's {where} has a non-string key {key!r}; re-export the model")
            if key == "_target_":
                raise CheckpointError(f"saved model's {where} names a _target_ to build; a saved model may only "
                                      "hold plain values")
            check_plain(item, f"{where}.{key}", depth + 1)
        return
    raise CheckpointError(f"saved model's {where} holds a {type(value).__name__}, not a plain value; re-export the model")


def check_spec(spec: Any) -> tuple[str, dict]:
    """Validate an untrusted spec without importing anything; returns ``(target, kwargs)``.

    Raises:
        CheckpointError: the target is not one of :data:`MODEL_CLASSES`, or the kwargs are not plain values.
    """
    if not isinstance(spec, dict):
        raise CheckpointError(f"saved model spec is a {type(spec).__name__}, not an object; re-export the model")
    target = spec.get("target")
    if not isinstance(target, str) or target not in MODEL_CLASSES:
        raise CheckpointError(f"refusing to build {target!r}: a saved model may only name t2i's model classes "
                              f"({', '.join(sorted(n.rpartition('.')[2] for n in MODEL_CLASSES))})")
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"saved model's kwargs for {target} are a {type(kwargs).__name__}, not an object")
    check_plain(kwargs)
    return target, kwargs


def build_from_spec(spec: dict) -> nn.Module:
    """Build one of t2i's model classes from a (possibly untrusted) spec; see :func:`check_spec`."""
    target, kwargs = check_spec(spec)
    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"saved model names {target}, which this version of t2i does not have") from None
    if REGISTERED_MODELS.get(target) is not cls:  # the list names classes only; a guard all the same
        raise CheckpointError(f"refusing to build {target!r}: not a registered model class")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"saved model's arguments do not fit {target}: {exc}") from None
