"""Rebuild modules from plain specs, so checkpoints and exports rebuild themselves without Hydra.

A spec is ``{"target": "t2i.models.generator.MultiStageGenerator", "kwargs": {...plain values...}}``.

A spec read from a file is untrusted: exports are what people share. Only the model classes listed in
:data:`MODEL_CLASSES` can be built, and the target is checked against that list *before* anything is
imported or called; the keyword arguments must be plain JSON values (no ``_target_`` keys, no objects),
so a ``model.json`` cannot name ``t2i.config.build``, ``os.system``, a data renderer or any other callable.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from torch import nn

from t2i.errors import CheckpointError

# Every class a saved model may name, by its dotted path. A new model class that is saved in checkpoints or
# exports is added here (and nowhere else); the list is deliberately static so that checking a target
# never imports the module it names.
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

_MAX_DEPTH = 8  # nesting of lists/dicts in kwargs (stage_options is two deep)


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
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):  # the list names classes only; a guard all the same
        raise CheckpointError(f"refusing to build {target!r}: not a model class")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"saved model's arguments do not fit {target}: {exc}") from None
