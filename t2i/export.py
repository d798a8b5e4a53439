"""Exported models: the one writer (both trainers) and the one reader (the pipeline, the tools).

An export directory is enough to generate, with no training config, data set or Hydra::

    export/
      model.json                   {"format": "t2i-export", "version": 1, "kind": "gan" | "aligndraw", "step",
                                    "model_spec": {"name", "z_dim", "words_num", "generator": spec,
                                                   "text_encoder": spec, ...}, "config"}
      generator.safetensors        the (averaged) generator            } written by save_module, each with
      text_encoder.safetensors     the frozen text encoder (GANs only) } its .json spec beside it
      vocab.json                   the vocabulary

``model.json`` (written last) lists every other file with its sha256, checked when the export is read.

Every module goes through :func:`t2i.models.factory.save_module` / ``load_module`` (so only t2i's
registered model classes can be built from an export). ``model.json`` keeps the module specs in
``model_spec`` as well: that is where exports written before ``save_module`` carry them (they have no
per-module ``.json``), and the reader takes them from there, so old and new exports load alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from t2i.data.text import Vocabulary
from t2i.errors import CheckpointError
from t2i.io import atomic_write_json, sha256_file
from t2i.models.factory import load_module, save_module

FORMAT = "t2i-export"
VERSION = 1
KINDS = ("gan", "aligndraw")
MODULES = {"gan": ("generator", "text_encoder"), "aligndraw": ("generator",)}


def write_export(out_dir: str | os.PathLike, kind: str, modules: dict[str, nn.Module], vocab: dict,
                 model_spec: dict, step: int, config: dict | None = None) -> Path:
    """Write an export directory (see the module docstring); returns it.

    Args:
        out_dir: the export directory (created).
        kind: ``gan`` (generator + text encoder) or ``aligndraw`` (one model with its own caption encoder).
        modules: ``{"generator": ..., "text_encoder": ...}`` as ``MODULES[kind]`` names them.
        vocab: the vocabulary as a dict (``Vocabulary.to_dict()``).
        model_spec: what generation needs besides the modules (``name``, ``z_dim``, ``words_num``...).
        step: the training step.
        config: the resolved training config, kept for the record.
    """
    if kind not in KINDS or set(modules) != set(MODULES[kind]):
        raise ValueError(f"an export of kind {kind!r} holds {MODULES.get(kind)}, got {sorted(modules)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specs = {name: save_module(out / f"{name}.safetensors", module, kind=f"{kind}_{name}")
             for name, module in modules.items()}
    atomic_write_json(out / "vocab.json", vocab)
    # The files of this export with their sha256, checked on load: a kill between two files (a new
    # generator beside the model.json of the previous export) is then found instead of silently mixed.
    files = {name: sha256_file(out / name) for name in sorted(_export_files(kind))}
    meta = {"format": FORMAT, "version": VERSION, "kind": kind, "step": int(step),
            "model_spec": {**model_spec, **specs}, "files": files, "config": config or {}}
    atomic_write_json(out / "model.json", meta)  # last: an export without model.json is not an export
    return out


def _export_files(kind: str) -> list[str]:
    return [f for name in MODULES[kind] for f in (f"{name}.safetensors", f"{name}.json")] + ["vocab.json"]


def verify_export_files(path: str | os.PathLike, meta: dict) -> None:
    """Check the files an export's ``model.json`` lists against their sha256 (exports without a list pass).

    Raises:
        CheckpointError: a listed file is missing or differs (an interrupted export, or a file swapped in).
    """
    path = Path(path)
    files = meta.get("files")
    if files is None:
        return
    if not isinstance(files, dict):
        raise CheckpointError(f"{path / 'model.json'} has a malformed file list; export the model again")
    for name, digest in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
            raise CheckpointError(f"{path / 'model.json'} lists a file {name!r} outside the export; export again")
        if not (path / name).is_file():
            raise CheckpointError(f"export {path} is incomplete: {name} is missing; export the model again")
        if sha256_file(path / name) != digest:
            raise CheckpointError(f"export {path} is inconsistent: {name} does not match model.json (an export that "
                                  "was interrupted, or a file replaced by hand); export the model again")


@dataclass
class Export:
    """An export read back: its kind, the rebuilt modules (weights loaded strictly), vocabulary and metadata."""

    path: Path
    kind: str
    generator: nn.Module
    text_encoder: nn.Module | None
    vocab: Vocabulary
    model_spec: dict
    step: int
    config: dict

    @property
    def z_dim(self) -> int:
        return int(self.model_spec.get("z_dim", 0))

    @property
    def words_num(self) -> int:
        return int(self.model_spec.get("words_num", 18))


def read_export_meta(path: str | os.PathLike) -> dict:
    """``model.json`` of an export directory, checked.

    Raises:
        CheckpointError: no ``model.json``, invalid JSON, not a t2i export, or a kind that cannot generate.
    """
    path = Path(path)
    meta_path = path / "model.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{path} is not an exported t2i model (no model.json); "
                              "export one by training with tools/train.py, or pass checkpoint=<run>/export")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc}); re-export the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a t2i export (format tag missing)")
    if meta.get("version", VERSION) > VERSION:
        raise CheckpointError(f"{meta_path} is export format version {meta['version']}; this t2i reads up to "
                              f"{VERSION}: update t2i")
    if meta.get("kind") not in KINDS:
        raise CheckpointError(f"{path} holds a '{meta.get('kind')}' model, which cannot generate from captions")
    if not isinstance(meta.get("model_spec"), dict):
        raise CheckpointError(f"{meta_path} has no model_spec; re-export the model")
    return meta


def read_export(path: str | os.PathLike) -> Export:
    """Rebuild an export's modules (only t2i's registered model classes) and read its vocabulary.

    Raises:
        CheckpointError: see :func:`read_export_meta`; a missing or unreadable weights file; a spec that
            names anything but a registered model class; weights that do not fit.
    """
    path = Path(path)
    meta = read_export_meta(path)
    verify_export_files(path, meta)
    spec = meta["model_spec"]
    loaded: dict[str, Any] = {}
    for name in MODULES[meta["kind"]]:
        loaded[name] = load_module(path / f"{name}.safetensors", spec.get(name), name.replace("_", " "))
    return Export(path=path, kind=meta["kind"], generator=loaded["generator"], text_encoder=loaded.get("text_encoder"),
                  vocab=Vocabulary.load(path / "vocab.json"), model_spec=spec, step=int(meta.get("step", 0)),
                  config=meta.get("config") or {})


PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_PRETRAINED = "synthbirds-attngan"


def shipped_exports(pretrained_dir: str | os.PathLike = PRETRAINED_DIR) -> list[Path]:
    """The exports shipped in the repository's ``pretrained/`` folder (``pretrained/<name>/model.json``),
    the default model (:data:`DEFAULT_PRETRAINED`) first."""
    folder = Path(pretrained_dir)
    found = sorted(p.parent for p in folder.glob("*/model.json")) if folder.is_dir() else []
    return sorted(found, key=lambda p: p.name != DEFAULT_PRETRAINED)


def newest_export(runs_dir: str | os.PathLike, pretrained_dir: str | os.PathLike | None = PRETRAINED_DIR) -> Path:
    """The most recently written export directory (``**/export/model.json``) under ``runs_dir``; when there is
    none, the shipped model in ``pretrained/`` (see :func:`shipped_exports`).

    Raises:
        CheckpointError: there is none.
    """
    runs_dir = Path(runs_dir)
    exports = sorted(runs_dir.glob("**/export/model.json"), key=lambda p: p.stat().st_mtime)
    if exports:
        return exports[-1].parent
    shipped = shipped_exports(pretrained_dir) if pretrained_dir is not None else []
    if shipped:
        return shipped[0]
    raise CheckpointError(f"no exported model under {runs_dir}/; train one first "
                          "(python tools/train.py model=attngan) or pass checkpoint=PATH")


def resolve_export(checkpoint: str | os.PathLike | None, runs_dir: str | os.PathLike = "runs",
                   pretrained_dir: str | os.PathLike | None = PRETRAINED_DIR) -> Path:
    """An export directory from ``checkpoint=``: an export dir, a run dir holding ``export/``, or (None) the newest
    under ``runs_dir``, else the shipped model.

    Raises:
        CheckpointError: the path does not exist, or no export is found.
    """
    if checkpoint is None:
        return newest_export(runs_dir, pretrained_dir)
    path = Path(checkpoint)
    if (path / "export" / "model.json").is_file():
        return path / "export"
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; pass an export directory (runs/<data>/<model>/export)")
    return path
