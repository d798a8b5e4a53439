"""Guards of the layering in DESIGN.md §1: Hydra stays in t2i/config.py; lower layers never import higher ones."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "t2i"

# Lower number = lower layer. A module may import modules of its own layer or lower.
LAYERS = {
    "structures": 0, "errors": 0, "runtime": 0,
    "data": 1,
    "models": 2,
    "losses": 3,
    "metrics": 4,
    "training": 5,
    "visualize": 5,
    "pipeline": 6, "evaluation": 6, "benchmark": 6,
    "config": 7, "recipes": 7, "cli": 7,
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


# Checkpoint I/O depends only on torch and t2i.errors, and every layer saves or loads weights.
BASE_MODULES = {"t2i.training.checkpoint": 0}


def _layer_of(module: str):
    if module in BASE_MODULES:
        return BASE_MODULES[module]
    parts = module.split(".")
    if parts[0] != "t2i" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1])


SOURCES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_hydra_only_in_config(path):
    if path == ROOT / "config.py":
        return
    bad = [m for m in _imports(path) if m.split(".")[0] in {"hydra", "omegaconf"}]
    assert not bad, f"{path} imports {bad}; only t2i/config.py may import Hydra/OmegaConf"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_upward_imports(path):
    rel = path.relative_to(ROOT)
    own = LAYERS.get(rel.parts[0].removesuffix(".py")) if rel.parts[0] != "__init__.py" else 0
    assert own is not None, f"{rel} is in no layer; add it to LAYERS in this test"
    for module in _imports(path):
        layer = _layer_of(module)
        if layer is None:
            continue
        assert layer <= own, f"{rel} (layer {own}) imports {module} (layer {layer}): a lower layer imports a higher one"


def test_layering_guard_detects_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from t2i.training.ema import EMA\nimport omegaconf\n")
    mods = list(_imports(bad))
    assert _layer_of(mods[0]) == LAYERS["training"] and mods[1] == "omegaconf"
