"""What a graded notebook used of the watched names, charged to the exercise of each cell.

Two sources, both best effort (:mod:`sdverify.delegation`): the cells' source, read
statically in document order (names bound in one cell carry to the next, as in the kernel),
and the kernel's tripwire records, each tagged with the cell that ran when it fired.  Uses in
cells before the first exercise heading are charged to no exercise and become notes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from IPython.core.inputtransformer2 import TransformerManager

from sdverify.delegation.policy import Use, Watch, from_records
from sdverify.delegation.static import scan_cells
from sdverify.notebooks.runner import RunResult


def _python(source: str) -> str | None:
    """A cell's source as the kernel runs it (magics rewritten), or None when IPython cannot."""
    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # a cell IPython cannot parse ran nothing
        return None


def notebook_uses(run: RunResult, watch: Watch, section: Callable[[int], str | None]) -> tuple[list[Use], list[str]]:
    """Every use in ``run``'s executed notebook, ``where`` = the exercise of its cell ("" before the
    first heading), and notes for what the grader should know (no tripwire records, uses
    outside any exercise)."""
    cells = run.executed.cells
    sources = [_python(c.source) if c.cell_type == "code" else None for c in cells]
    uses: list[Use] = []
    for index, found in enumerate(scan_cells(sources, watch.names)):
        uses += [Use(u.how, u.names, section(index) or "", f"cell {index}, {u.at}") for u in found]
    notes = []
    if run.tripwire is None:
        notes.append("delegation: the kernel's tripwire records could not be read; only the source was checked")
    else:
        for record in run.tripwire:
            cell = record.get("cell")
            where = section(cell) if isinstance(cell, int) else None
            at = f"cell {cell}, at run time" if isinstance(cell, int) else "at run time"
            try:
                uses += from_records([record], where or "", at)
            except ValueError:
                notes.append("delegation: a tripwire record was malformed (tampering?) and ignored")
    return list(dict.fromkeys(uses)), notes


def outside_exercises(uses: Iterable[Use], forbidden: Callable[[Use], bool]) -> list[str]:
    """Notes for forbidden uses in cells that belong to no exercise (charged to none)."""
    return list(
        dict.fromkeys(
            f"delegation: {u.describe()} before the first exercise (charged to no exercise)"
            for u in uses
            if not u.where and forbidden(u)
        )
    )
