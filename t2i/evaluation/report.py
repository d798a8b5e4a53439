"""Evaluation results on disk: ``metrics.json`` (everything) and ``metrics.md`` (a table), written atomically."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from t2i.io import atomic_write_text
from t2i.metrics.registry import metric_drivers

log = logging.getLogger(__name__)


_EXTRA_LABELS = {"attribute_accuracy_real": "attribute accuracy, real test images (ceiling)"}


def _label(name: str) -> str:
    """The table label of a metric: its registered ``label``, or its name."""
    drivers = metric_drivers()
    return _EXTRA_LABELS.get(name) or (drivers[name].label if name in drivers else name)


def format_table(results: Mapping[str, Any]) -> str:
    """A Markdown table of the metrics of :func:`evaluate` (value, std, images)."""
    metrics = results["metrics"]
    counts = results.get("counts", {})
    lines = ["| metric | value | std | images |", "|---|---:|---:|---:|"]
    for name, value in metrics.items():
        if name.endswith("_std"):
            continue
        label = _label(name)
        std = metrics.get(f"{name}_std")
        n = counts.get(f"{name}_images", counts.get("images", ""))
        lines.append(f"| {label} | {value:.4f} | {'' if std is None else f'{std:.4f}'} | {n} |")
    return "\n".join(lines)


def _json_ready(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> tuple[Path, Path]:
    """Atomically write ``metrics.json`` (everything in ``results``) and ``metrics.md`` (header + table).

    ``results`` is what :func:`evaluate` returns, plus whatever the caller adds (``export``, ``data``,
    ``split``...); ``weights`` maps each weights file used to its SHA-256.
    """
    out_dir = Path(out_dir)
    text = json.dumps(_json_ready(dict(results)), indent=1, sort_keys=True)
    json_path = atomic_write_text(out_dir / "metrics.json", text + "\n")
    head = [f"# Evaluation of {results.get('export') or 'real images'}", ""]
    for key in ("data", "split", "reference_split", "profile", "seed", "created"):
        if key in results:
            head.append(f"- {key}: {results[key]}")
    head.append(f"- images: {results.get('counts', {}).get('images', '?')}")
    if results.get("timings", {}).get("images_per_second"):
        head.append(f"- throughput: {results['timings']['images_per_second']} images/s")
    md = "\n".join(head + ["", format_table(results), ""])
    md_path = atomic_write_text(out_dir / "metrics.md", md)
    return json_path, md_path
