"""The student version of a solved lesson: solutions become TODO stubs, nothing hidden remains.

Solution regions are marked as nbgrader and otter-grader mark them (``# BEGIN SOLUTION`` /
``# END SOLUTION``, any number of ``#``).  A notebook without such marks is stubbed where the
spec's checks read: each statement of an exercise's section that assigns a variable a check of
that exercise reads.  Hidden tests (``BEGIN HIDDEN TESTS`` ... ``END HIDDEN TESTS``) are
dropped, every output and execution count is cleared, and all metadata but the kernel's and
the language's is removed: nbgrader keeps grading ids and points in cell metadata, and its
feedback shows hidden test source; nothing of a check reaches the student here.
"""

from __future__ import annotations

import ast
import copy
import re
from dataclasses import dataclass

import nbformat
from nbformat import NotebookNode

from sdverify.notebooks.names import bound_names, statement_names
from sdverify.notebooks.runner import locate_exercises, plan_snapshots
from sdverify.notebooks.spec import Spec

_BEGIN = re.compile(r"^(\s*)#+\s*BEGIN SOLUTION\b.*$", re.IGNORECASE)
_END = re.compile(r"^\s*#+\s*END SOLUTION\b.*$", re.IGNORECASE)
_HIDDEN_BEGIN = re.compile(r"^\s*#+\s*BEGIN HIDDEN TESTS\b.*$", re.IGNORECASE)
_HIDDEN_END = re.compile(r"^\s*#+\s*END HIDDEN TESTS\b.*$", re.IGNORECASE)
_KEPT_METADATA = ("kernelspec", "language_info")  # what a student's Jupyter needs to open it
MARKDOWN_STUB = "_Your answer here._"


@dataclass(frozen=True)
class Release:
    """The student notebook and what was taken out of it (cell indices)."""

    notebook: NotebookNode
    stubbed: tuple[int, ...]  # cells whose code became stubs
    hidden_removed: tuple[int, ...]  # cells that lost hidden tests


def release(solved: NotebookNode, spec: Spec | None = None) -> Release:
    """The student version of ``solved`` (left unchanged).

    Marked solution regions are stubbed; without marks, the statements assigning what ``spec``'s
    checks read in each exercise's section are (a ValueError when there is neither).
    """
    nb = copy.deepcopy(solved)
    marked = any(_BEGIN.match(line) for cell in nb.cells for line in cell.source.splitlines())
    if not marked and spec is None:
        raise ValueError("no '# BEGIN SOLUTION' / '# END SOLUTION' region and no spec: nothing to stub")
    stubbed: set[int] = set()
    hidden: set[int] = set()
    reads = {} if marked or spec is None else _reads(nb, spec)
    for index, cell in enumerate(nb.cells):
        source, cut = _drop_regions(cell.source, _HIDDEN_BEGIN, _HIDDEN_END, lambda _lines, _indent: [])
        if cut:
            hidden.add(index)
        if marked:
            stub = _code_stub if cell.cell_type == "code" else _markdown_stub
            source, cut = _drop_regions(source, _BEGIN, _END, stub)
        elif cell.cell_type == "code" and reads.get(index):
            source, cut = _stub_statements(source, reads[index])
        else:
            cut = False
        if cut:
            stubbed.add(index)
        cell.source = source
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in _KEPT_METADATA}
    return Release(nb, tuple(sorted(stubbed)), tuple(sorted(hidden)))


def write_release(solved: str, out: str, spec: Spec | None = None) -> Release:
    """Read ``solved``, write its student version to ``out`` and return it."""
    result = release(nbformat.read(solved, as_version=4), spec)
    nbformat.write(result.notebook, out)
    return result


def _drop_regions(source: str, begin: re.Pattern[str], end: re.Pattern[str], stub) -> tuple[str, bool]:
    """``source`` with each ``begin``..``end`` region replaced by ``stub(lines, indent)``."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    cut = False
    for line in source.splitlines():
        if region is None and (m := begin.match(line)):
            region, indent = [], m.group(1) if m.groups() else ""
        elif region is not None and end.match(line):
            out += stub(region, indent)
            region, cut = None, True
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:  # an unclosed region runs to the end of the cell
        out += stub(region, indent)
        cut = True
    return "\n".join(out), cut


def _code_stub(lines: list[str], indent: str) -> list[str]:
    """``name = None  # TODO`` for each name the region assigns, else ``raise NotImplementedError``."""
    names = bound_names(_dedent(lines))
    if not names:
        return [f"{indent}# TODO", f"{indent}raise NotImplementedError"]
    return [f"{indent}{name} = None  # TODO" for name in names]


def _markdown_stub(lines: list[str], indent: str) -> list[str]:
    return [MARKDOWN_STUB]


def _dedent(lines: list[str]) -> str:
    widths = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(widths, default=0)
    return "\n".join(line[cut:] for line in lines)


def _reads(nb: NotebookNode, spec: Spec) -> dict[int, set[str]]:
    """Code cell index -> the variables its exercise's checks read (cells inside an exercise's
    section: from its heading to where grading reads it); a path's root name stands for it."""
    snapshots = [e.snapshot() for e in spec.exercises]
    starts, _ = locate_exercises(nb.cells, snapshots)
    ends = {snap.id: position for position, taken in plan_snapshots(nb.cells, snapshots).items() for snap in taken}
    reads: dict[int, set[str]] = {}
    for snap in snapshots:
        if snap.id in starts:
            for index in range(starts[snap.id], ends[snap.id]):
                reads.setdefault(index, set()).update(_root(name) for name in snap.names)
    return reads


def _root(path: str) -> str:
    """The variable a spec's path (``text_input.input_ids``, ``noise_pred[0]``) starts from."""
    return re.split(r"[.\[]", path, maxsplit=1)[0]


def _stub_statements(source: str, names: set[str]) -> tuple[str, bool]:
    """``source`` with each top-level statement binding one of ``names`` replaced by
    ``name = None  # TODO`` for the names it binds (a cell that does not parse is kept)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source, False
    lines = source.splitlines()
    cut = False
    for statement in reversed(tree.body):
        bound = [n for n in dict.fromkeys(statement_names(statement)) if n in names]
        if not bound:
            continue
        start = min([statement.lineno, *(d.lineno for d in getattr(statement, "decorator_list", []))]) - 1
        end = statement.end_lineno or statement.lineno
        stubs = [f"{name} = None  # TODO" for name in bound]
        lines[start:end] = [] if lines[end : end + len(stubs)] == stubs else stubs  # consecutive ones: one stub
        cut = True
    return "\n".join(lines), cut
