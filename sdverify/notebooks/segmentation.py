"""Where a notebook's exercises begin, and where their variables are read.

An exercise opens at a markdown heading its spec's regex matches; its snapshot is taken just
before the next exercise's heading, or before the heading its ``ends`` names (spec format 2).
Pure functions of the cells: nothing runs here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from nbformat import NotebookNode

from sdverify.notebooks.paths import kernel_request


@dataclass(frozen=True)
class Snapshot:
    """Extraction point: after the cells of exercise ``id`` (found by ``heading``), read ``names``.

    A v2 spec's snapshot reads variable paths (``walk``), matches markdown heading lines only
    (``headings_only``) and may end its section at the first heading line matching ``ends``.
    """

    id: str
    heading: str
    names: tuple[str, ...]
    ends: str | None = None
    walk: bool = False
    headings_only: bool = False

    def requests(self) -> list[list[Any]]:
        """What the extraction cell reads: each name as ``[text, root, steps]``."""
        return [kernel_request(name, walk=self.walk) for name in self.names]


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
    headings = [(i, heading_lines(text)) for i, text in markdown]
    texts = [headings if snap.headings_only else markdown for snap in snapshots]
    matches = [{i for i, text in where if p.search(text)} for (_, p), where in zip(patterns, texts)]
    contents = {i for i, _ in markdown if sum(i in found for found in matches) > 1}
    starts: dict[str, int] = {}
    notes: list[str] = []
    previous = -1
    for (id, pattern), matched in zip(patterns, matches):
        found = sorted(matched - contents)
        after = [i for i in found if i > previous]
        if after:
            starts[id] = previous = after[0]
        elif found:
            starts[id] = found[0]
            notes.append(f"{id}: its heading comes before the previous exercise's; graded from cell {found[0]}")
        else:
            notes.append(f"{id}: no markdown heading matches {pattern.pattern!r}; its variables are read at the end")
    return starts, notes


_HEADING_LINE = re.compile(r"^ {0,3}#.*$", re.MULTILINE)


def heading_lines(markdown: str) -> str:
    """The markdown heading lines (``# ...``) of a cell's text, one per line."""
    return "\n".join(m.group() for m in _HEADING_LINE.finditer(markdown))


def locate_ends(cells: list[NotebookNode], snapshots: list[Snapshot], starts: dict[str, int]) -> dict[str, int]:
    """Exercise id -> index of the markdown cell whose heading line matches its ``ends`` (the first
    after its start; exercises without ``ends``, or whose end is not found, have none)."""
    ends: dict[str, int] = {}
    for snap in snapshots:
        start = starts.get(snap.id)
        if snap.ends is None or start is None:
            continue
        pattern = re.compile(snap.ends, re.IGNORECASE | re.MULTILINE)
        found = [
            i
            for i, c in enumerate(cells)
            if i > start and c.cell_type == "markdown" and pattern.search(heading_lines(c.source))
        ]
        if found:
            ends[snap.id] = found[0]
    return ends


def plan_snapshots(cells: list[NotebookNode], snapshots: list[Snapshot]) -> dict[int, list[Snapshot]]:
    """Cell position -> snapshots to take just before it (``len(cells)`` means at the end).

    An exercise's snapshot goes before its ``ends`` heading or the next exercise heading after
    its own, whichever comes first.  An exercise whose heading is missing is snapshotted at the
    end, so renamed headings cost precision (later cells may overwrite names) but never the
    grade outright.
    """
    starts, _ = locate_exercises(cells, snapshots)
    ends = locate_ends(cells, snapshots, starts)
    plan: dict[int, list[Snapshot]] = {}
    for snap in snapshots:
        start = starts.get(snap.id)
        later = [i for i in [*starts.values(), ends.get(snap.id, -1)] if start is not None and i > start]
        plan.setdefault(min(later) if later else len(cells), []).append(snap)
    return plan
