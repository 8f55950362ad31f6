"""Variable paths of a v2 spec: ``text_input.input_ids``, ``noise_pred[0]``, ``out["sample"]``.

Grammar: ``NAME ( '.' NAME | '[' INT ']' | '[' STRING ']' )*``, where NAME is an identifier not
starting with ``_`` (no dunders, no private attributes) and STRING is single- or double-quoted
without quotes inside.  The grader parses a path (trusted); the kernel only walks the parsed steps
(:mod:`.kernel_program`), one getattr or ``[...]`` at a time, so no spec text is ever evaluated.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_STEP = re.compile(rf"\.({_NAME})|\[(-?\d+)\]|\[\"([^\"']*)\"\]|\['([^\"']*)'\]")
_ROOT = re.compile(_NAME)


class Step(NamedTuple):
    """One step of a path: ``("attr", name)`` or ``("item", key)``, and how it was written."""

    kind: str
    key: str | int
    text: str


def parse_path(path: str) -> tuple[str, tuple[Step, ...]]:
    """``(root name, steps)`` of ``path``; a ValueError says where the grammar broke."""
    root = _ROOT.match(path)
    if not isinstance(path, str) or root is None:
        raise ValueError(f"variable path {path!r} must start with a name (a letter, then letters, digits or _)")
    steps: list[Step] = []
    at = root.end()
    while at < len(path):
        found = _STEP.match(path, at)
        if found is None:
            raise ValueError(
                f"variable path {path!r}: cannot read {path[at:]!r}; expected .name, [integer] or ['key'] "
                "(names may not start with _)"
            )
        attr, index, double, single = found.groups()
        if attr is not None:
            steps.append(Step("attr", attr, found.group()))
        elif index is not None:
            steps.append(Step("item", int(index), found.group()))
        else:
            steps.append(Step("item", double if double is not None else single, found.group()))
        at = found.end()
    return root.group(), tuple(steps)


def kernel_request(path: str, *, walk: bool) -> list[Any]:
    """What the extraction cell is given for ``path``: ``[path, root, steps]`` (JSON-safe).

    Without ``walk`` (a v1 spec) the whole text is one bare name, read as v1 read it.
    """
    if not walk:
        return [path, path, []]
    root, steps = parse_path(path)
    return [path, root, [list(step) for step in steps]]
