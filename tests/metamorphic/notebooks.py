"""Semantics-preserving edits of a notebook: its code cells edited, inert cells added.

A notebook is a program cut into cells: the source edits of :mod:`.source` apply to its
code cells as one program (:func:`code_sources`, :func:`with_code_sources`).  Added cells
change no value: a markdown cell never runs, and an added code cell is empty, a comment
or a print of a constant.  Added markdown adds no exercise heading: a table of contents
names several exercises (a grader must not take it for one), a recap repeats a heading
after the original, prose is no heading.

Every function returns a new notebook; the one given is never modified.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell

from metamorphic import source as S

CONTENTS_STYLES = ("headings", "links", "numbered")
INERT_CODE = ("empty", "blank lines", "comment", "print")


def code_sources(nb: NotebookNode) -> list[str]:
    """The sources of the code cells, in order: the program the source edits apply to."""
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def code_cells(nb: NotebookNode) -> list[int]:
    """Index of each code cell (``code_sources(nb)[k]`` is cell ``code_cells(nb)[k]``)."""
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def with_code_sources(nb: NotebookNode, sources: Sequence[str]) -> NotebookNode:
    """``nb`` with its code cells' sources replaced, in order (markdown untouched)."""
    cells = code_cells(nb)
    if len(sources) != len(cells):
        raise ValueError(f"with_code_sources: {len(sources)} sources for {len(cells)} code cells")
    nb = copy.deepcopy(nb)
    for index, source in zip(cells, sources):
        nb.cells[index].source = source
    return nb


def exercise_headings(nb: NotebookNode, patterns: Sequence[str]) -> list[tuple[int, str]]:
    """Each exercise's heading in an unedited notebook: (cell index, the heading's line).

    Raises ValueError unless exactly one markdown cell matches each pattern, in order and
    matching no other pattern (the base notebook of a metamorphic test must be unambiguous).
    """
    compiled = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in patterns]
    found = []
    for pattern in compiled:
        cells = [
            (i, m) for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and (m := pattern.search(c.source))
        ]
        if len(cells) != 1 or sum(bool(p.search(nb.cells[cells[0][0]].source)) for p in compiled) != 1:
            raise ValueError(f"expected one markdown heading matching {pattern.pattern!r}, found {len(cells)}")
        index, match = cells[0]
        text = nb.cells[index].source
        start = text.rfind("\n", 0, match.start()) + 1
        end = text.find("\n", match.start())
        found.append((index, text[start : end if end >= 0 else len(text)].strip()))
    if [i for i, _ in found] != sorted(i for i, _ in found):
        raise ValueError(f"the headings matching {list(patterns)} are not in document order")
    return found


def table_of_contents(headings: Sequence[str], style: str) -> NotebookNode:
    """A contents cell listing ``headings`` (at least two: one heading alone is a heading).

    ``style``: ``headings`` (the heading lines themselves), ``links`` (a bulleted list of
    anchors) or ``numbered`` (a numbered list of titles).
    """
    if len(headings) < 2:
        raise ValueError(f"a table of contents lists at least two headings, got {list(headings)}")
    titles = [h.lstrip("#").strip() for h in headings]
    lines = {
        "headings": ["## Contents", *headings],
        "links": ["**Contents**", *(f"- [{t}](#{re.sub(r'[^a-z0-9]+', '-', t.lower())})" for t in titles)],
        "numbered": ["Contents:", *(f"{n}. {t}" for n, t in enumerate(titles, 1))],
    }
    if style not in lines:
        raise ValueError(f"table of contents style {style!r}; expected one of {CONTENTS_STYLES}")
    return new_markdown_cell("\n".join(lines[style]))


def recap(heading: str) -> NotebookNode:
    """A markdown cell repeating ``heading``: it goes after the original, never before."""
    return new_markdown_cell(f"{heading} (recap)\nThe same steps once more, in words.")


def prose(text: str) -> NotebookNode:
    """A markdown paragraph (no heading) holding one line of ``text``."""
    return new_markdown_cell(f"Note: {S.one_line(text)}")


def inert_code(kind: str, text: str = "") -> NotebookNode:
    """A code cell that changes nothing: ``empty``, ``blank lines``, a ``comment``, a ``print`` of ``text``."""
    sources = {"empty": "", "blank lines": "\n\n", "comment": f"# {S.one_line(text)}", "print": f"print({text!r})"}
    if kind not in sources:
        raise ValueError(f"inert code cell {kind!r}; expected one of {INERT_CODE}")
    return new_code_cell(sources[kind])


def insert_cells(nb: NotebookNode, cells: Sequence[tuple[int, NotebookNode]]) -> NotebookNode:
    """``nb`` with each ``(position, cell)`` added before the cell now at ``position``
    (``len(nb.cells)``: at the end); cells for one position keep their order."""
    nb = copy.deepcopy(nb)
    before: dict[int, list[NotebookNode]] = {}
    ids = {c.get("id") for c in nb.cells}
    for position, cell in cells:
        if not 0 <= position <= len(nb.cells):
            raise ValueError(f"insert position {position} outside 0..{len(nb.cells)}")
        cell = copy.deepcopy(cell)
        if "id" in cell:  # nbformat 4.5: unique ids, and the same on every run of a test
            cell.id = next(f"added-{n}" for n in range(len(ids) + 1) if f"added-{n}" not in ids)
            ids.add(cell.id)
        before.setdefault(position, []).append(cell)
    out: list[NotebookNode] = []
    for index in range(len(nb.cells) + 1):
        out += before.get(index, [])
        if index < len(nb.cells):
            out.append(nb.cells[index])
    nb.cells = out
    return nb
