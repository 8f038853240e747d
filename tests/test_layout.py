"""The package layout: imports flow one way, also the ones inside functions.

The import graph of `nnlint` is built with `ast` from every `import` and
`from ... import` wherever it stands. It must have no cycle between modules and
none between packages, and every import between packages must go down the
layers below (the folder tree is the architecture diagram).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nnlint"

# Lower layers first. A unit (a subpackage, or a top-level module) may import
# only from units of lower layers, and from itself.
LAYERS = (
    ("nnlint.core",),
    ("nnlint.script", "nnlint.setup"),
    ("nnlint.graph", "nnlint.dynamic"),
    ("nnlint.capture",),
    ("nnlint.pipeline",),
    ("nnlint.engine",),
    ("nnlint.ci_formats", "nnlint.htmlreport"),
    ("nnlint.api", "nnlint.docs", "nnlint.fixing", "nnlint.report", "nnlint.rule"),
    ("nnlint.integrations",),
    ("nnlint.cli_modes", "nnlint.lsp"),
    ("nnlint.testing", "nnlint.cli"),
    ("nnlint.pytest_plugin", "nnlint.__main__"),
)
LAYER = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The nnlint modules a file imports, at top level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(n for n in names if n in known)
    return found


def import_graph() -> dict[str, set[str]]:
    table = modules()
    known = set(table)
    return {name: imports_of(path, known) - {name} for name, path in table.items()}


def unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        edges = units.setdefault(unit(source), set())
        edges.update(unit(t) for t in targets if unit(t) != unit(source))
    return units


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    assert cycles(import_graph()) == []


def test_no_import_cycle_between_packages():
    assert cycles(package_graph(import_graph())) == []


def test_every_unit_has_a_layer():
    units = {unit(m) for m in modules()} - {"nnlint"}
    assert units <= set(LAYER), sorted(units - set(LAYER))


@pytest.mark.parametrize("source", sorted(modules()))
def test_imports_go_down_the_layers(source):
    graph = import_graph()
    if source == "nnlint":
        return  # the package itself resolves its names lazily, with importlib
    upward = [
        target
        for target in graph[source]
        if unit(target) != unit(source)
        and target != "nnlint"
        and LAYER[unit(target)] >= LAYER[unit(source)]
    ]
    assert upward == [], f"{source} imports from a layer at or above its own: {upward}"
