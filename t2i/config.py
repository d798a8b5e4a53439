"""Hydra wiring: the only library module that imports Hydra or OmegaConf.

``build(node, **runtime)`` instantiates a config node whose ``_target_`` names a class or function,
adding values that depend on data (vocabulary size, embedding size) at the call site, as STYLE.md 3 asks.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from t2i.errors import T2IError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def build(node: Any, **runtime: Any) -> Any:
    """Instantiate ``node`` (a config with ``_target_``), with ``runtime`` keyword arguments added.

    Lists and dicts inside the node become plain Python containers, so library classes never see
    OmegaConf objects.
    """
    if node is None:
        raise ValueError("cannot build from an empty config node")
    try:
        return instantiate(node, _convert_="all", **runtime)
    except Exception as exc:  # Hydra wraps the target's errors; a user-facing one is re-raised as it is
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, T2IError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def option(node: Any, key: str, default: Any = None) -> Any:
    """``node.key``, or ``default`` when the node is None, has no such key, or holds null.

    The one config getter of the recipes and tools (a config node, a dict, or any object with attributes).
    """
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def run_option(cfg: Any, key: str, default: Any = None) -> Any:
    """``train.<key>`` when set (not null), else ``model.<key>``, else ``default``: the run settings
    (``conf/train/*.yaml``: batch size, max steps) override the model's own defaults."""
    return option(cfg.train, key, option(cfg.model, key, default))


def to_container(node: Any) -> Any:
    """A resolved plain ``dict``/``list`` copy of a config node (for checkpoints and exports)."""
    if isinstance(node, DictConfig) or OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def to_yaml(node: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(to_container(node)))


def from_container(data: dict) -> DictConfig:
    """Back from a plain dict (as stored in a checkpoint) to a config that ``build`` accepts."""
    return OmegaConf.create(data)


def compose(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """Compose a config from ``conf/`` outside ``@hydra.main`` (tests, notebooks)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=list(overrides or []))


def override_problem(config_name: str, argv: list[str]) -> str | None:
    """What is wrong with the command line's overrides, in one line, or None when ``config_name`` composes.

    Hydra reports an unknown key (``cache_dir=x``) or an unknown group option (``model=foo``) over several
    lines and exits with 1; the tools call this first (:func:`t2i.cli.preflight`) to say it in one line with
    exit 2. Hydra's own arguments (``hydra.*``; with a ``--flag`` the whole line) are left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.startswith("-") for a in argv):
        return None  # Hydra's flags (--cfg job, --config-name X, -m ...) change what is composed: Hydra's business
    overrides = [a for a in argv if not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    parser = OverridesParser.create()
    for arg in overrides:
        try:
            parser.parse_override(arg)
        except Exception as exc:  # OverrideParseException
            detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            return f"cannot read the override {arg!r} ({detail}); write key=value, quoting a value with commas"
    try:
        compose(config_name, overrides)
    except Exception as exc:  # Hydra's ConfigCompositionException, omegaconf errors
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if not lines:
            return f"the overrides do not compose into the {config_name} config ({type(exc).__name__})"
        head, rest = lines[0].rstrip("."), lines[1:]
        if rest and rest[0].startswith("Available options"):
            options = list(itertools.takewhile(lambda line: not line.startswith("Config search path"), rest[1:]))
            return f"{head}; {rest[0].rstrip(':').lower()}: {', '.join(options)}"
        if any(line.startswith("To append") for line in rest):
            return (f"{head}: the {config_name} config has no such key (python tools/{config_name}.py --cfg job "
                    "lists its keys)")
        return head
    return None
