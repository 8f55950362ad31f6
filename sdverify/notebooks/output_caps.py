"""What the grader keeps of a notebook's outputs: a cell printing gigabytes must not fill its memory.

Per cell, at most ``GRADE_CELL_TEXT_BYTES`` of text and ``GRADE_CELL_IMAGE_BYTES`` of images
are kept as they arrive; the executed copy as a whole is cut to ``GRADE_NOTEBOOK_BYTES``.
"""

from __future__ import annotations

import json

import nbformat
from nbformat import NotebookNode

from sdverify import contract as C

_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")
CAPPED_MESSAGE = (
    f"outputs cut: the grader keeps {C.GRADE_CELL_TEXT_BYTES >> 20} MiB of text and "
    f"{C.GRADE_CELL_IMAGE_BYTES >> 20} MiB of images per cell"
)


def _sizes(out: NotebookNode) -> tuple[int, int]:
    """(text bytes, image bytes) of one output."""
    if out.get("output_type") == "stream":
        return len(str(out.get("text", "")).encode()), 0
    if out.get("output_type") == "error":
        return sum(len(str(line).encode()) for line in [out.get("evalue", ""), *out.get("traceback", [])]), 0
    text = image = 0
    for mime, value in out.get("data", {}).items():
        size = len(value.encode()) if isinstance(value, str) else len(json.dumps(value).encode())
        if mime in _IMAGE_TYPES:
            image += size
        else:
            text += size
    return text, image


def cap_output(out: NotebookNode, used: list[int]) -> tuple[NotebookNode | None, bool]:
    """``out`` cut to what its cell has left (``used``: [text, image] bytes kept so far, updated);
    return what to keep (None: drop it) and whether anything was cut."""
    text, image = _sizes(out)
    cut = False
    if image and used[1] + image > C.GRADE_CELL_IMAGE_BYTES:
        for mime in _IMAGE_TYPES:
            out.get("data", {}).pop(mime, None)
        cut = True
        image = 0
    if used[0] + text > C.GRADE_CELL_TEXT_BYTES:
        cut = True
        room = max(0, C.GRADE_CELL_TEXT_BYTES - used[0])
        if out.get("output_type") == "stream" and room:
            out.text = out.text.encode()[:room].decode(errors="ignore") + "\n[sdverify] output cut\n"
            text = room
        else:
            return None, cut
    if out.get("output_type") in ("display_data", "execute_result") and not out.get("data"):
        return None, cut
    used[0] += text
    used[1] += image
    return out, cut


def cap_notebook(nb: NotebookNode, limit: int = C.GRADE_NOTEBOOK_BYTES) -> list[int]:
    """Clear the outputs of the largest cells until ``nb`` serialises within ``limit`` bytes;
    return the cleared cells' indices (the executed copy is for reading, not for storage)."""
    cleared: list[int] = []
    sizes = sorted(
        ((len(json.dumps(c.get("outputs", []))), i) for i, c in enumerate(nb.cells) if c.get("outputs")),
        reverse=True,
    )
    for _size, index in sizes:
        if len(nbformat.writes(nb).encode()) <= limit:
            break
        nb.cells[index].outputs = []
        cleared.append(index)
    return sorted(cleared)
