"""The engine's import graph: no cycle, and no module imports one of a later layer.

The layers are read from README.md's "Layout" section (the block headed ``import layers``), so the
written order and the checked order cannot drift. Only imports that run when a module loads count:
imports under ``if TYPE_CHECKING:`` and inside functions are left out (class bodies and ``try``/``if``/
``with`` blocks at module level do count).

A package's ``__init__`` runs before any of its modules when one of them is imported; that implicit step
is not an edge here, so a plugin that imports its package's ``registry`` module does not import the
package that loads it.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "engine"
LAYERS_HEADER = "import layers"


# ------------------------------------------------------------------ reading the layers from the README
def read_layers(readme: str) -> list[tuple[str, list[str]]]:
    """[(layer name, [module or package names])], lowest layer first, from the Layout section's block.

    The block is the fenced code block of the "## Layout" section whose first line starts with
    ``import layers``; each following line is ``N  name  module module ...``.
    """
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert section, "README.md has no '## Layout' section"
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", section.group(1), re.M | re.S)
    block = next((b for b in blocks if b.lstrip().startswith(LAYERS_HEADER)), None)
    assert block, f"README.md's Layout section has no code block starting with {LAYERS_HEADER!r}"
    layers = []
    for line in block.splitlines()[1:]:
        found = re.match(r"^\s*(\d+)\s+(\S+)\s+(.+)$", line)
        if found:
            assert int(found.group(1)) == len(layers) + 1, f"layers must be numbered 1, 2, ... in order: {line!r}"
            layers.append((found.group(2), found.group(3).split()))
    return layers


def layer_index(module: str, layers: list[tuple[str, list[str]]], root: str = PACKAGE) -> int | None:
    """The layer of ``module``: the longest listed name that is the module or a package above it.

    The root package's own name covers only the root's ``__init__``, not every module below it.
    """
    best, best_len = None, -1
    for i, (_, names) in enumerate(layers):
        for name in names:
            covers = module == name or (name != root and module.startswith(name + "."))
            if covers and len(name) > best_len:
                best, best_len = i, len(name)
    return best


# ------------------------------------------------------------------ the import graph
def find_modules(root: Path, package: str) -> dict[str, Path]:
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (``engine.paths.DISTILLERS`` -> ``engine.paths``), or None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_time_imports(module: str, source: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``module`` imports when it loads."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(node, ast.ClassDef):
                visit(node.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
            elif isinstance(node, (ast.If, ast.For, ast.While, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)

    visit(ast.parse(source).body)
    return {target for name in found if (target := _resolve(name, modules)) and target != module}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = find_modules(root, package)
    return {m: import_time_imports(m, p.read_text(), p.name == "__init__.py", modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def upward_imports(graph: dict[str, set[str]], layers: list[tuple[str, list[str]]], root: str = PACKAGE
                   ) -> list[str]:
    """One line per import of a module from a later layer than the importer's."""
    problems = []
    for module, imported in sorted(graph.items()):
        mine = layer_index(module, layers, root)
        for target in sorted(imported):
            theirs = layer_index(target, layers, root)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{module} (layer {mine + 1} {layers[mine][0]}) imports {target} "
                                f"(layer {theirs + 1} {layers[theirs][0]})")
    return problems


# ------------------------------------------------------------------ the engine
@pytest.fixture(scope="module")
def layers() -> list[tuple[str, list[str]]]:
    return read_layers((ROOT / "README.md").read_text())


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PACKAGE)


def test_readme_names_each_module_once(layers) -> None:
    names = [name for _, listed in layers for name in listed]
    assert len(layers) >= 5
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert all(name == PACKAGE or name.startswith(PACKAGE + ".") for name in names)


def test_every_engine_module_has_a_layer(layers, graph) -> None:
    unplaced = [m for m in graph if layer_index(m, layers) is None]
    assert not unplaced, f"add these to the import layers in README.md's Layout section: {unplaced}"


def test_no_import_cycle(graph) -> None:
    assert cycles(graph) == []


def test_no_module_imports_a_later_layer(layers, graph) -> None:
    assert upward_imports(graph, layers) == []


# ------------------------------------------------------------------ the checks themselves
SYNTHETIC_README = """# X

## Layout

```
import layers, lowest first
  1  ground    pkg  pkg.base
  2  plugins   pkg.plugins
  3  top       pkg.loop
```

## Next
"""


def test_layers_are_read_from_the_layout_block() -> None:
    layers = read_layers(SYNTHETIC_README)
    assert layers == [("ground", ["pkg", "pkg.base"]), ("plugins", ["pkg.plugins"]), ("top", ["pkg.loop"])]
    assert layer_index("pkg.plugins.kd", layers, "pkg") == 1
    assert layer_index("pkg", layers, "pkg") == 0
    assert layer_index("pkg.other", layers, "pkg") is None  # the root package's name does not cover its modules


def test_a_planted_upward_import_and_cycle_are_caught() -> None:
    layers = read_layers(SYNTHETIC_README)
    clean = {"pkg": set(), "pkg.base": set(), "pkg.plugins": {"pkg.base"}, "pkg.plugins.kd": {"pkg.base"},
             "pkg.loop": {"pkg.plugins", "pkg.base"}}
    assert upward_imports(clean, layers, "pkg") == [] and cycles(clean) == []
    planted = {**clean, "pkg.base": {"pkg.loop"}}  # the ground imports the training loop
    assert upward_imports(planted, layers, "pkg") == ["pkg.base (layer 1 ground) imports pkg.loop (layer 3 top)"]
    assert cycles(planted) == [["pkg.base", "pkg.loop", "pkg.plugins"]]


def test_only_import_time_imports_are_edges(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "plugins").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "loop.py").write_text("from pkg import base\n")
    (package / "plugins" / "__init__.py").write_text("from pkg.plugins import kd  # registers\n")
    (package / "plugins" / "kd.py").write_text("from ..base import X\n")
    (package / "base.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.loop import Loop\n"
        "def late():\n    from pkg import loop\n"
        "class Holder:\n    from pkg.plugins import kd\n"  # a class body runs at import time
        "try:\n    import pkg.loop\nexcept ImportError:\n    pass\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.base"] == {"pkg.plugins", "pkg.plugins.kd", "pkg.loop"}
    assert graph["pkg.plugins"] == {"pkg.plugins.kd"}
    assert graph["pkg.plugins.kd"] == {"pkg.base"}  # a relative import
    assert graph["pkg.loop"] == {"pkg", "pkg.base"}
    assert upward_imports(graph, read_layers(SYNTHETIC_README), "pkg") == [
        "pkg.base (layer 1 ground) imports pkg.loop (layer 3 top)",
        "pkg.base (layer 1 ground) imports pkg.plugins (layer 2 plugins)",
        "pkg.base (layer 1 ground) imports pkg.plugins.kd (layer 2 plugins)"]
    assert cycles(graph) == [["pkg.base", "pkg.loop", "pkg.plugins", "pkg.plugins.kd"]]
