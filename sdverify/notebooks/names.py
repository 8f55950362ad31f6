"""The names a piece of notebook code binds, read from its syntax tree (never run)."""

from __future__ import annotations

import ast


def bound_names(source: str) -> list[str]:
    """Names ``source`` binds at its top level, in order (assignments, loops, ``with ... as``,
    ``def``/``class``); a function's or class's body is another scope.  [] if it does not parse."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return list(dict.fromkeys(name for statement in tree.body for name in statement_names(statement)))


def statement_names(node: ast.AST) -> list[str]:
    """Names one statement (or expression) binds in its own scope."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Name):
        return [node.id] if isinstance(node.ctx, ast.Store) else []
    if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        return []
    return [name for child in ast.iter_child_nodes(node) for name in statement_names(child)]
