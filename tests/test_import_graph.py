"""The modules of ``winback`` import each other without a cycle.

The graph is read from the source with :mod:`ast`: every ``import`` counts, at module level
or inside a function (a deferred import still ties the two modules together), except those
under ``if TYPE_CHECKING:``, which never run. Importing ``a.b.c`` also runs the package
``a.b``, so an import depends on the target's packages too (not on the importer's own, which
are already running)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import winback

SRC = Path(winback.__file__).parent
PACKAGE = "winback"


def module_files(root: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node`` that can run (not under TYPE_CHECKING)."""
    if isinstance(node, ast.If) and _type_checking(node.test):
        for other in node.orelse:
            yield from _imports(other)
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child)


def _named(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The dotted names an import statement refers to (modules or names inside them)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        anchor = here[: len(here) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    yield base
    yield from (f"{base}.{alias.name}" for alias in node.names)


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules (and packages) of ``winback`` that importing it runs."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for module, path in files.items():
        own = set(_ancestors(module)) | {module}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            for name in _named(module, path.name == "__init__.py", node):
                if name in files:
                    graph[module].update(
                        m for m in [*_ancestors(name), name] if m in files and m not in own
                    )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) for each group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_shortest_cycle(graph, group) for group in groups]


def _shortest_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    following.append(w)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not a cycle")  # pragma: no cover


#: Imports that close a cycle and are being removed, with the reason; each must still exist
#: (remove it here once it is gone).
PENDING: dict[tuple[str, str], str] = {}


def test_no_import_cycle() -> None:
    graph = import_graph()
    gone = [edge for edge in PENDING if edge[1] not in graph.get(edge[0], set())]
    assert not gone, f"no longer imported, remove from PENDING: {gone}"
    for importer, imported in PENDING:
        graph[importer].discard(imported)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_graph_sees_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    root = tmp_path / "winback"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("from winback.sub import b\n")
    (root / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from winback import c\n"
        "def later():\n    from winback.sub.b import thing\n"
    )
    (root / "sub" / "b.py").write_text("from . import c\nthing = 1\n")
    (root / "sub" / "c.py").write_text("import winback.a\n")
    (root / "c.py").write_text("from winback import a\n")
    graph = import_graph(root)
    assert graph["winback.a"] == {"winback.sub", "winback.sub.b"}  # not c: type-only
    assert graph["winback.sub.b"] == {"winback.sub.c"}  # its own package is running
    assert cycles(graph) == [["winback.a", "winback.sub.b", "winback.sub.c", "winback.a"]]
