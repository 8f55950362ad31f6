"""The package's layers import one way: no import cycles (issue 18, item 5).

Read from the syntax trees, so nothing is imported.  Every import counts, at module level or
inside a function (a lazy import is still a dependency), except those under
``if TYPE_CHECKING:``.  Importing ``a.b.c`` runs ``a/b/__init__.py`` first, so it depends
on ``a.b`` too (but never on the importer's own packages, which Python runs first).

Two granularities: modules (no two modules need each other) and units, the modules and
subpackages directly under ``sdverify`` (``sdverify.checker``, ``sdverify.mistakes``...), so
that a subpackage is a layer: ``delegation`` may not reach back into ``checker``, nor
``notebooks`` into ``autograder``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdverify"


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(nodes: list[ast.stmt] | list[ast.AST], module: str) -> Iterator[str]:
    """The dotted names ``nodes`` import, at any depth, outside ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            yield from _imported(node.orelse, module)
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: a relative import; the package imports absolutely"
            base = node.module or ""
            yield from (f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
        yield from _imported(list(ast.iter_child_nodes(node)), module)


def _dependencies(module: str) -> set[str]:
    """The package's modules that importing ``module`` (or calling its functions) imports."""
    found = set()
    for name in _imported(ast.parse(MODULES[module].read_text()).body, module):
        parts = name.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        found |= {p for p in prefixes if p in MODULES and p != module and not module.startswith(p + ".")}
    return found


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return list(error.args[1])
    return None


def test_the_walk_sees_the_layers():
    """The graph is not vacuous: known dependencies show, a lazy (function-level) one included."""
    assert "sdverify.contract" in _dependencies("sdverify.checker.checks")
    assert "sdverify.checker" in _dependencies("sdverify.notebooks.grading")  # inside a function
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None


@pytest.mark.parametrize("granularity", ["module", "unit"])
def test_no_import_cycles(granularity: str):
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        if granularity == "module":
            graph[module] = _dependencies(module)
        else:
            graph.setdefault(_unit(module), set()).update(_unit(d) for d in _dependencies(module))
            graph[_unit(module)].discard(_unit(module))
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"
