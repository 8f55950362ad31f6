"""Hypothesis strategies for metamorphic tests of the graders: edited variants of a submission.

:func:`edited_modules` and :func:`edited_notebooks` draw a few of the edits of
:mod:`.source` and :mod:`.notebooks`, where they apply and with what (a comment's text,
an import order, which ``torch.no_grad()`` becomes ``torch.inference_mode()``...), and
return a :class:`Variant`: the edited submission and a log of what was done.  Every edit
keeps the program's meaning, so a grader must give a variant the grade of the original.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nbformat import NotebookNode

from metamorphic import notebooks as N
from metamorphic import source as S

T = TypeVar("T")


class Variant(Generic[T]):
    """An edited submission (source text or notebook) and what was done to it, in order.

    Not a dataclass: Hypothesis prints a failing example with its ``repr``, the edits, not
    the whole notebook.
    """

    def __init__(self, value: T, edits: Sequence[str]) -> None:
        self.value = value
        self.edits = tuple(edits)

    def __repr__(self) -> str:
        return f"Variant({'; '.join(self.edits) or 'unedited'})"


@dataclass(frozen=True)
class SourceEdit:
    """One kind of source edit: where it applies, how, and what to draw for each chosen site."""

    sites: Callable[[str], list[S.Site]]
    apply: Callable[[str, Mapping[int, Any]], str]
    choice: Callable[[S.Site], st.SearchStrategy[Any]]
    most: int | None = 3  # sites chosen at most (None: any number)


def mention_texts() -> st.SearchStrategy[str]:
    """One line a student might write next to the code: mentions of exercises, seeds and
    scores, headings and prints quoted, then any printable text (emoji, accents, RTL...)."""
    templates = st.sampled_from(
        [
            "see Exercise {n}",
            "Exercise {n} reuses this",
            "TODO: Exercise {n}",
            "## Exercise {n}",
            "torch.manual_seed({seed})",
            "print('Exercise {n}: 100/100')",
            "score {n}/{n}",
        ]
    )
    filled = st.builds(lambda t, n, seed: t.format(n=n, seed=seed), templates, st.integers(1, 9), st.integers(0, 2**32))
    tail = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12)
    return st.builds(lambda head, rest: f"{head} {rest}".strip(), filled, tail)


def _none(site: S.Site) -> st.SearchStrategy[None]:
    return st.none()


SOURCE_EDITS: dict[str, SourceEdit] = {
    "comments": SourceEdit(S.statement_sites, S.add_comments, lambda site: mention_texts()),
    "trailing comments": SourceEdit(S.line_end_sites, S.add_trailing_comments, lambda site: mention_texts()),
    "blank lines": SourceEdit(S.statement_sites, S.add_blank_lines, lambda site: st.integers(1, 3)),
    "prints": SourceEdit(S.print_sites, S.add_prints, lambda site: mention_texts()),
    "import order": SourceEdit(S.import_runs, S.reorder_imports, lambda site: st.permutations(range(site.size))),
    "inference_mode": SourceEdit(S.no_grad_sites, S.use_inference_mode, _none, most=None),
    "return_dict=False": SourceEdit(S.output_field_sites, S.use_tuple_outputs, _none, most=None),
    "batched CFG": SourceEdit(S.cfg_pair_sites, S.batch_cfg, _none, most=None),
    "rebound decode": SourceEdit(S.decode_rebinding_sites, S.rebind_decode, _none, most=None),
}
# Notebook cells only: IPython syntax, and the global seed a lesson sets (a module is handed its generator).
CELL_SOURCE_EDITS: dict[str, SourceEdit] = {
    "%%time": SourceEdit(S.timed_cell_sites, S.time_cell, _none),
    "seeded generator": SourceEdit(
        S.seeded_generator_sites, S.use_seeded_generator, lambda site: st.integers(0, 2**31), most=None
    ),
}
RENAME = "renamed variables"
# How a student might rename a variable (the result is made fresh if it is taken).
_NEW_NAMES = (lambda n: f"{n}_", lambda n: f"my_{n}", lambda n: f"{n}2", lambda n: f"_{n}", lambda n: f"{n}_tmp")


def _renaming(draw: st.DrawFn, sources: Sequence[str], candidates: Sequence[str]) -> dict[str, str]:
    """Draw up to four of ``candidates`` and a fresh new name for each."""
    chosen = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=4, unique=True))
    mapping: dict[str, str] = {}
    for old in chosen:
        base = draw(st.sampled_from(_NEW_NAMES))(old)
        new = next(
            n
            for n in itertools.chain([base], (f"{base}{k}" for k in itertools.count()))
            if S.fresh(sources, n) and n not in mapping.values()
        )
        mapping[old] = new
    return mapping


def _code_edit(
    draw: st.DrawFn, kind: str, sources: list[str], protected: Collection[str], where: Callable[[int, S.Site], str]
) -> tuple[list[str], str | None]:
    """One edit of ``kind`` on a program (a module: one source; a notebook: its code cells):
    the new sources and the log line (None: the kind has no site here)."""
    if kind == RENAME:
        candidates = S.renameable(sources, protected, protected_functions=protected)
        if not candidates:
            return sources, None
        mapping = _renaming(draw, sources, candidates)
        return [S.rename(source, mapping) for source in sources], f"{RENAME}: {mapping}"
    edit = {**SOURCE_EDITS, **CELL_SOURCE_EDITS}[kind]
    sites = S.program_sites(sources, edit.sites)
    if not sites:
        return sources, None
    most = len(sites) if edit.most is None else min(edit.most, len(sites))
    chosen = draw(st.lists(st.integers(0, len(sites) - 1), min_size=1, max_size=most, unique=True))
    choices = {i: draw(edit.choice(sites[i][1])) for i in sorted(chosen)}
    parts = [where(*sites[i]) + (f" {value!r}" if value is not None else "") for i, value in choices.items()]
    return S.edit_program(sources, edit.sites, edit.apply, choices), f"{kind}: {', '.join(parts)}"


def _contents(draw: st.DrawFn, end: int, headings: Sequence[tuple[int, str]]) -> tuple[int, NotebookNode]:
    entries = draw(st.lists(st.sampled_from(range(len(headings))), min_size=2, unique=True).map(sorted))
    cell = N.table_of_contents([headings[i][1] for i in entries], draw(st.sampled_from(N.CONTENTS_STYLES)))
    return draw(st.integers(0, end)), cell


def _recap(draw: st.DrawFn, end: int, headings: Sequence[tuple[int, str]]) -> tuple[int, NotebookNode]:
    position, line = draw(st.sampled_from(headings))
    return draw(st.integers(position + 1, end)), N.recap(line)  # after the heading it repeats


def _prose(draw: st.DrawFn, end: int, headings: Sequence[tuple[int, str]]) -> tuple[int, NotebookNode]:
    return draw(st.integers(0, end)), N.prose(draw(mention_texts()))


def _inert(draw: st.DrawFn, end: int, headings: Sequence[tuple[int, str]]) -> tuple[int, NotebookNode]:
    return draw(st.integers(0, end)), N.inert_code(draw(st.sampled_from(N.INERT_CODE)), draw(mention_texts()))


# Cells a notebook edit adds: (position, cell) given the cell count and the exercises' headings.
CELL_EDITS: dict[str, Callable[[st.DrawFn, int, Sequence[tuple[int, str]]], tuple[int, NotebookNode]]] = {
    "table of contents": _contents,
    "recap heading": _recap,
    "prose": _prose,
    "inert code cell": _inert,
}
MODULE_EDITS = (*SOURCE_EDITS, RENAME)
NOTEBOOK_EDITS = (*SOURCE_EDITS, *CELL_SOURCE_EDITS, RENAME, *CELL_EDITS)


def _kinds(
    draw: st.DrawFn, kinds: Collection[str], known: Sequence[str], min_edits: int, max_edits: int | None
) -> list[str]:
    """Draw which kinds, and in which order (validating the caller's arguments first)."""
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        raise ValueError(f"unknown edit kinds {unknown}; expected some of {list(known)}")
    most = len(set(kinds)) if max_edits is None else max_edits
    if not 0 <= min_edits <= most <= len(set(kinds)):
        raise ValueError(f"need 0 <= min_edits <= max_edits <= {len(set(kinds))} kinds, got {min_edits}, {max_edits}")
    return draw(st.permutations(sorted(set(kinds))))[: draw(st.integers(min_edits, most))]


@st.composite
def edited_modules(
    draw: st.DrawFn,
    source: str,
    *,
    protected: Collection[str] = (),
    kinds: Collection[str] = MODULE_EDITS,
    min_edits: int = 1,
    max_edits: int | None = None,
) -> Variant[str]:
    """A Python module with some semantics-preserving edits.

    * ``source`` -- the module's text.
    * ``protected`` -- functions a grader calls (default none): their names and parameters
      are never renamed.
    * ``kinds`` -- the kinds of edit to draw from (default all, :data:`MODULE_EDITS`); each
      is drawn at most once, in a drawn order.
    * ``min_edits``, ``max_edits`` -- how many kinds (default 1 to all); a kind that has no
      site in the source is skipped, so a variant may hold fewer.
    """
    log = []
    sources = [source]
    for kind in _kinds(draw, kinds, MODULE_EDITS, min_edits, max_edits):
        sources, line = _code_edit(draw, kind, sources, protected, lambda _, site: f"line {site.line}")
        log += [line] if line else []
    return Variant(sources[0], log)


@st.composite
def edited_notebooks(
    draw: st.DrawFn,
    notebook: NotebookNode,
    *,
    headings: Sequence[str],
    protected: Collection[str] = (),
    kinds: Collection[str] = NOTEBOOK_EDITS,
    min_edits: int = 1,
    max_edits: int | None = None,
) -> Variant[NotebookNode]:
    """A notebook with some semantics-preserving edits.

    * ``notebook`` -- the notebook (not modified); it must have one markdown heading per
      exercise, in order.
    * ``headings`` -- each exercise's heading pattern, in order (the spec's ``heading``).
    * ``protected`` -- variables a grader reads: never renamed (default none).
    * ``kinds`` -- the kinds of edit to draw from (default all, :data:`NOTEBOOK_EDITS`:
      :data:`SOURCE_EDITS` and :data:`CELL_SOURCE_EDITS` on the code cells, :data:`RENAME`
      across them, :data:`CELL_EDITS`); each at most once.
    * ``min_edits``, ``max_edits`` -- how many kinds (default 1 to all); a kind that has no
      site in the notebook is skipped.

    Code is edited first, then cells are added all at once (positions, and recaps placed
    after the heading they repeat, refer to the notebook before any was added).
    """
    found = N.exercise_headings(notebook, headings)
    order = _kinds(draw, kinds, NOTEBOOK_EDITS, min_edits, max_edits)
    cells = N.code_cells(notebook)
    sources, log = N.code_sources(notebook), []

    def where(k: int, site: S.Site) -> str:
        return f"cell {cells[k]} line {site.line}"

    for kind in (k for k in order if k not in CELL_EDITS):
        sources, line = _code_edit(draw, kind, sources, protected, where)
        log += [line] if line else []
    nb = N.with_code_sources(notebook, sources)
    added = [
        (kind, CELL_EDITS[kind](draw, len(nb.cells), found))
        for kind in order
        if kind in CELL_EDITS
        for _ in range(draw(st.integers(1, 3)))
    ]
    nb = N.insert_cells(nb, [cell for _, cell in added])
    log += [f"{kind}: before cell {at} {cell.source[:60]!r}" for kind, (at, cell) in added]
    return Variant(nb, log)


def draw_examples(strategy: st.SearchStrategy[T], count: int) -> list[T]:
    """``count`` examples of ``strategy``, drawn by Hypothesis under the loaded profile
    (derandomised in ``ci``: the same examples on every run), for tests that grade them
    together.  The simplest example, which Hypothesis tries first, is left out.

    Raises ValueError for ``count`` < 1.
    """
    if count < 1:
        raise ValueError(f"draw_examples: count must be at least 1, got {count}")
    found: list[T] = []

    @settings(
        max_examples=count + 1,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(example: T) -> None:
        found.append(example)

    collect()
    return found[1:][-count:]
