"""Every third-party module the package imports belongs to a distribution `pyproject.toml`
declares: an import at module level to a core dependency (a plain install must be able to
import it), an import inside a function, a `try` or a `TYPE_CHECKING` block to a core
dependency or an extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "winback"


@dataclass(frozen=True)
class Import:
    module: str  # top-level module name, e.g. "sklearn" for "from sklearn.cluster import X"
    path: Path
    line: int
    eager: bool  # runs when the module is imported (not in a function, `try` or TYPE_CHECKING)


def _normalise(name: str) -> str:
    """A distribution name in the form PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"pyproject.toml: cannot read the requirement {requirement!r}"
    return _normalise(match.group(0))


def declared(pyproject: Path = ROOT / "pyproject.toml") -> tuple[set[str], set[str]]:
    """The core dependencies and those of every extra, as normalised distribution names."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    core = {_requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        _requirement_name(r)
        for group in project.get("optional-dependencies", {}).values()
        for r in group
    }
    return core, extras


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """The absolute imports of one module, each with whether it runs at import time."""

    def visit(node: ast.AST, eager: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(alias.name.split(".")[0], path, child.lineno, eager)
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and child.module:
                    yield Import(child.module.split(".")[0], path, child.lineno, eager)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, False)
            elif isinstance(child, ast.Try):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from visit(child, False)
            else:
                yield from visit(child, eager)

    yield from visit(ast.parse(source, filename=str(path)), True)


def third_party_imports(package: Path = PACKAGE) -> list[Import]:
    found = []
    for path in sorted(package.rglob("*.py")):
        for imp in imports_in(path.read_text(encoding="utf-8"), path):
            if imp.module in sys.stdlib_module_names or imp.module in ("__future__", "winback"):
                continue
            found.append(imp)
    return found


def undeclared(
    imports: list[Import], core: set[str], extras: set[str], owners: Mapping[str, list[str]]
) -> list[str]:
    """One line per import no declared distribution covers."""
    problems = []
    for imp in imports:
        where = f"{imp.path.relative_to(ROOT) if imp.path.is_absolute() else imp.path}:{imp.line}"
        dists = {_normalise(d) for d in owners.get(imp.module, [])}
        if not dists:
            problems.append(f"{where}: {imp.module!r} is not provided by any installed package")
        elif imp.eager and not dists & core:
            problems.append(
                f"{where}: {imp.module!r} is imported at module level but its package "
                f"({', '.join(sorted(dists))}) is not in [project].dependencies"
            )
        elif not dists & (core | extras):
            problems.append(
                f"{where}: {imp.module!r} comes from {', '.join(sorted(dists))}, "
                "declared neither as a dependency nor in an extra"
            )
    return problems


def test_every_imported_package_is_declared() -> None:
    core, extras = declared()
    imports = third_party_imports()
    assert {"sqlalchemy", "numpy", "fastapi"} <= {imp.module for imp in imports}
    problems = undeclared(imports, core, extras, packages_distributions())
    assert problems == [], "\n".join(problems)


def test_undeclared_imports_are_reported_with_their_place() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "from starlette.types import Scope\n"
        "if TYPE_CHECKING:\n"
        "    import pyarrow\n"
        "def fit() -> None:\n"
        "    from sklearn.cluster import KMeans\n"
        "    import leftpad\n"
    )
    imports = [
        imp for imp in imports_in(source, Path("m.py")) if imp.module not in sys.stdlib_module_names
    ]
    assert [(imp.module, imp.line, imp.eager) for imp in imports] == [
        ("numpy", 2, True),
        ("starlette", 3, True),
        ("pyarrow", 5, False),
        ("sklearn", 7, False),
        ("leftpad", 8, False),
    ]
    owners = {
        "numpy": ["numpy"],
        "starlette": ["starlette"],
        "pyarrow": ["pyarrow"],
        "sklearn": ["scikit-learn"],
    }
    problems = undeclared(imports, {"numpy", "fastapi"}, {"pyarrow"}, owners)
    assert problems == [
        "m.py:3: 'starlette' is imported at module level but its package (starlette) "
        "is not in [project].dependencies",
        "m.py:7: 'sklearn' comes from scikit-learn, declared neither as a dependency "
        "nor in an extra",
        "m.py:8: 'leftpad' is not provided by any installed package",
    ]
