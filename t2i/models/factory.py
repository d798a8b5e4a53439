"""Rebuild modules from plain specs, so checkpoints and exports rebuild themselves without Hydra.

A spec is ``{"target": "t2i.models.generator.MultiStageGenerator", "kwargs": {...plain values...}}``.
Only classes inside the ``t2i`` package can be named, so a spec read from an untrusted file cannot
make this import and run arbitrary code.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from t2i.errors import CheckpointError


def make_spec(target: str, **kwargs: Any) -> dict:
    return {"target": target, "kwargs": kwargs}


def spec_from_node(node: dict, **runtime: Any) -> dict:
    """A spec from a plain config dict with ``_target_`` plus call-site values (vocab size, ...)."""
    kwargs = {k: v for k, v in node.items() if k != "_target_"}
    kwargs.update(runtime)
    return make_spec(node["_target_"], **kwargs)


def build_from_spec(spec: dict) -> nn.Module:
    """Import ``spec['target']`` (a t2i class) and call it with ``spec['kwargs']``."""
    target = spec.get("target", "") if isinstance(spec, dict) else ""
    if not target.startswith("t2i.") or "." not in target:
        raise CheckpointError(f"refusing to build {target!r}: a saved model may only name classes of the t2i package")
    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        raise CheckpointError(f"saved model names {target}, which this version of t2i does not have") from None
    try:
        return cls(**spec.get("kwargs", {}))
    except TypeError as exc:
        raise CheckpointError(f"saved model's arguments do not fit {target}: {exc}") from None
