"""Guards of the layering in DESIGN.md §1: Hydra stays in t2i/config.py; lower layers never import higher ones;
no import cycle between modules or between packages."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "t2i"

# Lower number = lower layer. A module may import modules of its own layer or lower.
LAYERS = {
    "structures": 0, "errors": 0, "runtime": 0, "io": 0, "validation": 0, "workers": 0,
    "data": 1,
    "models": 2, "export": 2, "augment": 2,
    "losses": 3,
    "metrics": 4,
    "training": 5,
    "visualize": 5,
    "pipeline": 6, "evaluation": 6, "benchmark": 6, "benchmark_reference": 6, "convert": 6,
    "config": 7, "recipes": 7, "cli": 7, "demo": 7,
}


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _layer_of(module: str):
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


# ------------------------------------------------------------------------------------------- cycles


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package modules it imports (module and function level, relative imports resolved).

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of ``a.b``.
    A package importing its own submodules (``__init__`` re-exports) is not counted.
    """
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for mod, path in paths.items():
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)
        deps = set()
        for name in names:
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != mod and not name.startswith(mod + "."):
                deps.add(name)
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto ``t2i.<first part>``."""
    top = lambda m: ".".join(m.split(".")[:2])  # noqa: E731
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        out.setdefault(top(mod), set()).update(top(d) for d in deps if top(d) != top(mod))
    return out


def test_no_module_cycle():
    assert cycles(import_graph(ROOT)) == []


def test_no_package_cycle():
    assert cycles(package_graph(import_graph(ROOT))) == []


def test_cycle_guard_detects_cycles(tmp_path):
    pkg = tmp_path / "t2i"
    for rel, text in {"__init__.py": "", "a/__init__.py": "", "a/x.py": "from t2i.b.y import f\n",
                      "b/__init__.py": "", "b/y.py": "def f():\n    from ..a import x\n",
                      "c.py": "from t2i.a import x\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    graph = import_graph(pkg)
    assert graph["t2i.b.y"] == {"t2i.a", "t2i.a.x"} and graph["t2i.c"] == {"t2i.a", "t2i.a.x"}
    assert cycles(graph) == [["t2i.a.x", "t2i.b.y"]]
    assert cycles(package_graph(graph)) == [["t2i.a", "t2i.b"]]
