"""The import structure of autoeff (docs/architecture.md, "Layers"): no import cycles between
modules, and no import from a later layer into an earlier one.

Read from the source with ``ast`` (nothing is imported), counting every import statement,
including the ones inside functions: an import deferred to keep start-up light is still a
dependency. ``from .pkg import name`` counts as an import of ``pkg.name`` when that is a module,
else of ``pkg``.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set

import pytest

ROOT = Path(__file__).resolve().parents[1] / "autoeff"

#: The layers, earliest first (docs/architecture.md keeps the same list). A module may import from
#: its own layer and from earlier ones. "" is the package root (``autoeff/__init__.py``, the
#: public facade).
LAYERS = [
    ("errors", "registry", "isolation", "metrics"),
    ("config",),
    ("attention",),
    ("model",),
    ("tasks", "compress", "measure"),
    ("training",),
    ("supernet",),
    ("search",),
    ("tracking", "export", "bench"),
    ("api",),
    ("cli", "__main__", ""),
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}

#: Known exceptions (importer, imported), each with its reason, allowed by both checks (layer order
#: and cycles). Keep this list short.
KNOWN_EXCEPTIONS = {
    # machine_tags() reads autoeff.__version__, which lives in the package root (the facade).
    ("autoeff.tracking.mlflow_tracker", "autoeff"),
}
#: Registration by import: a package's __init__ imports its plugin files at its end ("one import
#: line per family/task"), and each plugin file imports the package's register_* decorator.
#: These package <-> plugin cycles are the registry pattern and are allowed; no other cycle is.
REGISTRY_PACKAGES = ("autoeff.attention", "autoeff.tasks")


def _modules() -> Dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mods: Dict[str, Path]) -> Dict[str, Set[str]]:
    """module -> the autoeff modules it imports (anywhere in the file)."""
    edges: Dict[str, Set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [(mod, a.name) for a in node.names]
            else:
                continue
            for mod, attr in targets:
                if mod != "autoeff" and not mod.startswith("autoeff."):
                    continue
                sub = f"{mod}.{attr}" if attr else None
                edges[name].add(sub if sub in mods else mod)
    return edges


def _cycles(edges: Dict[str, Set[str]], nodes) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _registration_edge(a: str, b: str) -> bool:
    """A registry package's __init__ importing one of its plugin files, or the reverse."""
    for pkg in REGISTRY_PACKAGES:
        if (a == pkg and b.startswith(pkg + ".")) or (b == pkg and a.startswith(pkg + ".")):
            return True
    return False


def test_every_module_has_a_layer():
    unknown = sorted({_layer(m) for m in _modules()} - set(RANK))
    assert not unknown, (f"top-level modules/packages {unknown} are in no layer: add them to LAYERS here "
                         f"and to docs/architecture.md")


def test_no_import_cycles():
    mods = _modules()
    edges = {a: {b for b in bs if not _registration_edge(a, b) and (a, b) not in KNOWN_EXCEPTIONS}
             for a, bs in _imports(mods).items()}
    cycles = _cycles(edges, mods)
    assert not cycles, "import cycles (move the shared piece into a module both can import): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_no_import_from_a_later_layer():
    mods = _modules()
    bad = []
    for a, bs in _imports(mods).items():
        for b in bs:
            if RANK.get(_layer(b), -1) > RANK.get(_layer(a), len(LAYERS)) and (a, b) not in KNOWN_EXCEPTIONS:
                bad.append(f"{a} imports {b}")
    assert not bad, "imports against the layer order of docs/architecture.md: " + "; ".join(sorted(bad))


@pytest.mark.parametrize("source, expected", [
    ("from .strategy import Strategy\n", {"autoeff.search.strategy"}),
    ("def f():\n    from ..config import RunConfig\n", {"autoeff.config"}),
    ("from . import oneshot\n", {"autoeff.search.oneshot"}),
    ("import autoeff.search.pareto as p\n", {"autoeff.search.pareto"}),
    ("import torch\n", set()),
])
def test_the_walker_sees_imports(tmp_path, source, expected):
    """The walker itself: relative, deferred (in a function) and absolute imports all count."""
    mods = {"autoeff.search.strategy": tmp_path / "strategy.py", "autoeff.search.oneshot": tmp_path / "oneshot.py",
            "autoeff.config": tmp_path / "config.py", "autoeff.search.pareto": tmp_path / "pareto.py",
            "autoeff.search.x": tmp_path / "x.py"}
    for p in mods.values():
        p.write_text("")
    mods["autoeff.search.x"].write_text(source)
    assert _imports(mods).get("autoeff.search.x", set()) == expected


def test_a_cycle_and_a_layer_violation_are_found():
    edges = {"autoeff.search.a": {"autoeff.search.b"}, "autoeff.search.b": {"autoeff.search.a"}}
    assert _cycles(edges, edges) == [["autoeff.search.a", "autoeff.search.b"]]
    assert RANK[_layer("autoeff.search.objective")] > RANK[_layer("autoeff.model.encoder")]
