"""Where a notebook's exercises begin, and where their variables are read.

An exercise opens at a markdown heading its spec's regex matches; its snapshot is taken just
before the next exercise's heading.  Pure functions of the cells: nothing runs here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nbformat import NotebookNode


@dataclass(frozen=True)
class Snapshot:
    """Extraction point: after the cells of exercise ``id`` (found by ``heading``), read ``names``."""

    id: str
    heading: str
    names: tuple[str, ...]


def locate_exercises(cells: list[NotebookNode], snapshots: list[Snapshot]) -> tuple[dict[str, int], list[str]]:
    """Exercise id -> index of the markdown cell that opens it, and the segmentation warnings.

    Only markdown headings count (a code comment mentioning "Exercise 3" is not one), in
    document order: each exercise opens at the first matching heading after the previous
    exercise's, so a repeated heading (a recap) does not move it.  A markdown cell matching
    several exercises is a table of contents, not a heading.  A heading found only out of
    order, or not at all, is graded best-effort and said so.
    """
    patterns = [(snap.id, re.compile(snap.heading, re.IGNORECASE | re.MULTILINE)) for snap in snapshots]
    markdown = [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    contents = {i for i, text in markdown if sum(bool(p.search(text)) for _, p in patterns) > 1}
    starts: dict[str, int] = {}
    notes: list[str] = []
    previous = -1
    for id, pattern in patterns:
        found = [i for i, text in markdown if i not in contents and pattern.search(text)]
        after = [i for i in found if i > previous]
        if after:
            starts[id] = previous = after[0]
        elif found:
            starts[id] = found[0]
            notes.append(f"{id}: its heading comes before the previous exercise's; graded from cell {found[0]}")
        else:
            notes.append(f"{id}: no markdown heading matches {pattern.pattern!r}; its variables are read at the end")
    return starts, notes


def plan_snapshots(cells: list[NotebookNode], snapshots: list[Snapshot]) -> dict[int, list[Snapshot]]:
    """Cell position -> snapshots to take just before it (``len(cells)`` means at the end).

    An exercise's snapshot goes before the next exercise heading after its own.  An
    exercise whose heading is missing is snapshotted at the end, so renamed headings
    cost precision (later cells may overwrite names) but never the grade outright.
    """
    starts, _ = locate_exercises(cells, snapshots)
    plan: dict[int, list[Snapshot]] = {}
    for snap in snapshots:
        start = starts.get(snap.id)
        later = [i for i in starts.values() if start is not None and i > start]
        plan.setdefault(min(later) if later else len(cells), []).append(snap)
    return plan
