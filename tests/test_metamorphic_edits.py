"""The metamorphic edits keep programs' meaning, and none moves a notebook's snapshots.

No grading here (milliseconds per example): each property checks an edit's promise on the
syntax tree of every sample submission and notebook cell, and the segmentation property
runs the grader's own planner on drawn notebooks (issue 11, item 4) without a kernel.
The graded tests are tests/test_checker_metamorphic.py and tests/test_grade_metamorphic.py.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from metamorphic import notebooks as N
from metamorphic import source as S
from metamorphic.strategies import (
    CELL_SOURCE_EDITS,
    RENAME,
    SOURCE_EDITS,
    Variant,
    edited_modules,
    edited_notebooks,
)
from nbformat.v4 import new_markdown_cell

from sdverify.checker import API_NAMES
from sdverify.notebooks.segmentation import locate_exercises, plan_snapshots
from sdverify.notebooks.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_spec()
HEADINGS = [e.heading for e in SPEC.exercises]
SNAPSHOTS = [e.snapshot() for e in SPEC.exercises]
PROTECTED = {name for snap in SNAPSHOTS for name in snap.names}  # what the grader reads
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))
CORRECT_NOTEBOOK = nbformat.read(ROOT / "examples" / "notebooks" / "correct.ipynb", as_version=4)
MODULES = sorted((ROOT / "examples" / "submissions").glob("*.py")) + [ROOT / "sdverify" / "reference.py"]
# Corners of Python and IPython syntax an edit must respect.
TRICKY = {
    "docstring-future-imports": '"""Docstring."""\nfrom __future__ import annotations\nimport os\nimport sys\n',
    "elif": "if a:\n    x = 1\nelif b:\n    x = 2\nelse:\n    x = 3\n",
    "decorators": '@decorator\n@other(1)\ndef f(x):\n    """doc"""\n    return x\n',
    "one-line-bodies": "x = 1; y = 2\nif x: y = 3\nz = (1 +\n     2)\nw = 1 + \\\n    2\n",
    "try-imports": "try:\n    import a\n    import b\nexcept ImportError as e:\n    pass\nfinally:\n    q = 1\n",
    "ipython": "%%time\nx = torch.no_grad()\n!ls\ny = !ls\n%time z = 1\n",
    "magic-in-string": 's = """\n!not a shell escape\n%neither\n"""\nprint(s)  # trailing\n',
    "class": "class A:\n    x = 1\n    def f(self):\n        with torch.no_grad():\n            return m(a).sample\n",
    "call-corners": "x = f(a, b,)\ny = f()\nu = m(\n    a,  # comment\n).last_hidden_state\nv = g().sample\n",
    "unicode": "é = 'ü'\nü = é + m(é, k='✨').prev_sample  # ✨\n",
}
SOURCES = (
    list(TRICKY.values())
    + [p.read_text() for p in MODULES]
    + [c.source for p in NOTEBOOKS for c in nbformat.read(p, as_version=4).cells if c.cell_type == "code"]
)


def _tree(source: str) -> str:
    """The source's syntax tree (notebook cells: IPython lines as ``pass``)."""
    try:
        return ast.dump(ast.parse(source))
    except SyntaxError:
        return ast.dump(ast.parse(S.python_view(source)))


def _parses(source: str) -> bool:
    try:
        _tree(source)
    except SyntaxError:
        return False
    return True


PARSED = [s for s in SOURCES if _parses(s)]


class _Normal(ast.NodeTransformer):
    """What the non-cosmetic edits may change, made canonical: imports sorted within each run,
    ``no_grad``/``inference_mode`` one name, ``f(...).field`` and ``f(..., return_dict=False)[0]``
    one form, constant prints dropped."""

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                out: list[ast.stmt] = []
                run: list[ast.stmt] = []
                for stmt in [*(s for s in body if not _constant_print(s)), None]:
                    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                        run.append(stmt)
                        continue
                    out += sorted(run, key=ast.dump) + ([stmt] if stmt is not None else [])
                    run = []
                setattr(node, field, out)
        if isinstance(node, ast.Attribute) and node.attr == "inference_mode":
            node.attr = "no_grad"
        if isinstance(node, ast.Attribute) and node.attr in S.OUTPUT_FIELDS and isinstance(node.value, ast.Call):
            return ast.Subscript(node.value, ast.Constant("field"), ast.Load())
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call):
            kept = [
                k
                for k in node.value.keywords
                if ast.dump(k) != ast.dump(ast.keyword("return_dict", ast.Constant(False)))
            ]
            if len(kept) < len(node.value.keywords) and ast.dump(node.slice) == ast.dump(ast.Constant(0)):
                node.value.keywords = kept
                return ast.Subscript(node.value, ast.Constant("field"), ast.Load())
        return node


def _constant_print(stmt: ast.stmt) -> bool:
    call = stmt.value if isinstance(stmt, ast.Expr) else None
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id == "print"
        and len(call.args) == 1
        and isinstance(call.args[0], ast.Constant)
    )


def _normal(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        tree = ast.parse(S.python_view(source))
    return ast.dump(_Normal().visit(tree))


@pytest.mark.parametrize("kind", ["comments", "trailing comments", "blank lines"])
@given(data=st.data())
def test_comments_and_blank_lines_leave_the_syntax_tree_unchanged(kind, data):
    source = data.draw(st.sampled_from(PARSED))
    variant = data.draw(edited_modules(source, kinds=[kind]))
    assert _tree(variant.value) == _tree(source), variant


@pytest.mark.parametrize("kind", ["prints", "import order", "inference_mode", "return_dict=False"])
@given(data=st.data())
def test_other_edits_change_only_what_they_say(kind, data):
    source = data.draw(st.sampled_from(PARSED))
    variant = data.draw(edited_modules(source, kinds=[kind]))
    assert _normal(variant.value) == _normal(source), variant
    if variant.edits and kind != "import order":
        assert _tree(variant.value) != _tree(source), variant


@pytest.mark.parametrize("corner", TRICKY)
def test_every_site_of_every_edit_on_syntax_corners(corner):
    """Each site alone, exhaustively: an edit that breaks the syntax somewhere shows here."""
    source = TRICKY[corner]
    first = {"comments": "x", "trailing comments": "x", "blank lines": 1, "prints": "x"}
    for kind, edit in SOURCE_EDITS.items():
        for index, site in enumerate(edit.sites(source)):
            choice = list(range(site.size))[::-1] if kind == "import order" else first.get(kind)
            edited = edit.apply(source, {index: choice})
            assert _normal(edited) == _normal(source), (kind, site, edited)
            assert edited != source, (kind, site)


def _names(source: str) -> tuple[set[str], set[str]]:
    """(variables, parameters of the API functions) of ``source``; a parameter is a variable
    too, read or not (``lambda *args: None`` binds ``args``)."""
    tree = ast.parse(S.python_view(source))
    api = {
        a.arg
        for f in ast.walk(tree)
        if isinstance(f, ast.FunctionDef) and f.name in API_NAMES
        for a in ast.walk(f.args)
        if isinstance(a, ast.arg)
    }
    variables = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return variables | {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}, api


# A source and one renaming of it (drawn together, so a falsifying pair can be kept as an example).
_RENAMED = st.sampled_from(PARSED).flatmap(
    lambda source: st.tuples(st.just(source), edited_modules(source, kinds=[RENAME], protected=API_NAMES))
)
# Issue 18: the only renameable names are parameters never read, so the variables read
# stayed the same although the program changed (the check counted ast.Name nodes only).
_UNREAD_PARAMETER = "print = lambda *args, **kwargs: None\n"


@example(case=(_UNREAD_PARAMETER, Variant(S.rename(_UNREAD_PARAMETER, {"args": "args_"}), ["renamed: args"])))
@given(case=_RENAMED)
def test_renaming_changes_only_renameable_names(case: tuple[str, Variant[str]]):
    source, variant = case
    (before, api_before), (after, api_after) = _names(source), _names(variant.value)
    assert api_after == api_before, variant  # rename() itself proves the rest on the syntax tree
    assert before - after <= set(S.renameable([source], API_NAMES, API_NAMES)), variant
    assert all(S.fresh([source], name) for name in after - before), variant
    assert (before == after) == (not variant.edits), variant


def test_rename_refuses_a_name_that_is_taken():
    with pytest.raises(ValueError, match="fresh"):
        S.rename("a = 1\nb = a\n", {"a": "b"})


@pytest.mark.parametrize(
    ("source", "unsafe"),
    [
        ("def f(x):\n    return x\nf(x=1)\n", "x"),  # a parameter passed by keyword
        ("x = 1\nprint(globals()['x'])\n", "x"),  # read by its spelling
        ("class A:\n    x = 1\n", "x"),  # a class attribute
        ("import os as x\n", "x"),
        ("x = 1\nprint(f'{x}')\n", "x"),
        ("try:\n    pass\nexcept Exception as x:\n    pass\n", "x"),
        ("from m import *\nx = 1\n", "x"),
        ("display = 1\n", "display"),  # IPython's
    ],
)
def test_renameable_leaves_names_it_cannot_rename_safely(source, unsafe):
    assert unsafe not in S.renameable([source])


def test_batched_cfg_replaces_the_two_calls_by_one():
    source = (
        "with torch.no_grad():\n"
        "    eps_u = unet(x, t, encoder_hidden_states=u)[0]\n"
        "    eps_c = unet(x, t, encoder_hidden_states=c)[0]\n"
        "eps = eps_u + w * (eps_c - eps_u)\n"
    )
    assert S.cfg_pair_sites(source) == [S.Site(2)]
    assert S.batch_cfg(source, [0]).splitlines()[1] == (
        "    eps_u, eps_c = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([u, c]))[0].chunk(2)"
    )
    # Not when the second call reads the first's result, nor when an argument is a call.
    assert not S.cfg_pair_sites(
        "a = unet(x, t, encoder_hidden_states=e)[0]\nb = unet(x, a, encoder_hidden_states=f)[0]"
    )
    assert not S.cfg_pair_sites(
        "a = unet(f(), t, encoder_hidden_states=e)[0]\nb = unet(f(), t, encoder_hidden_states=g)[0]"
    )


def test_rebound_decode_moves_the_scaling_into_the_latents():
    source = "with torch.no_grad():\n    image = vae.decode(z / vae.config.scaling_factor).sample\n"
    assert S.decode_rebinding_sites(source) == [S.Site(2)]
    assert S.rebind_decode(source, [0]) == (
        "with torch.no_grad():\n    z = z / vae.config.scaling_factor\n    image = vae.decode(z).sample\n"
    )
    # Not when the latents are read again after the decode, nor when the decode reads them twice.
    assert not S.decode_rebinding_sites("image = vae.decode(z / 0.18215).sample\nprint(z)")
    assert not S.decode_rebinding_sites("image = vae.decode(z / 0.18215, z).sample")


def test_seeded_generator_feeds_every_draw_after_the_seed():
    source = "torch.manual_seed(42)\nz = torch.randn(4, device=d,)\nfor t in ts:\n    z = s.step(e, t, z).prev_sample\n"
    assert S.seeded_generator_sites(source) == [S.Site(1)]
    assert S.use_seeded_generator(source, {0: 7}) == (
        "torch.manual_seed(42)\ngenerator = torch.Generator(d).manual_seed(7)\n"
        "z = torch.randn(4, device=d, generator=generator)\n"
        "for t in ts:\n    z = s.step(e, t, z, generator=generator).prev_sample\n"
    )
    # Not when the name is taken, nor without a draw after the seed.
    assert not S.seeded_generator_sites("generator = 1\n" + source)
    assert not S.seeded_generator_sites("z = torch.randn(4)\ntorch.manual_seed(42)\n")


@pytest.mark.parametrize("kind", [*SOURCE_EDITS, *CELL_SOURCE_EDITS, RENAME])
def test_every_edit_applies_to_the_sample_notebook_and_a_sample_module(kind):
    """So the graded metamorphic tests exercise every kind on what they edit."""
    module = (ROOT / "examples" / "submissions" / "correct_two_unet_calls.py").read_text()
    cells = N.code_sources(CORRECT_NOTEBOOK)
    if kind == RENAME:
        assert S.renameable(cells, PROTECTED)
        assert S.renameable([module], API_NAMES, API_NAMES)
    elif kind in CELL_SOURCE_EDITS:
        assert S.program_sites(cells, CELL_SOURCE_EDITS[kind].sites)
    else:
        assert S.program_sites(cells, SOURCE_EDITS[kind].sites)
        assert SOURCE_EDITS[kind].sites(module)


def test_time_cell_opens_a_cell_once():
    source = N.code_sources(CORRECT_NOTEBOOK)[0]
    timed = S.time_cell(source, [0])
    assert timed == "%%time\n" + source
    assert S.time_cell(timed, [0]) == timed and not S.timed_cell_sites(timed) and not S.timed_cell_sites("\n")


def test_inert_cells_bind_nothing():
    for kind in N.INERT_CODE:
        namespace: dict = {}
        exec(N.inert_code(kind, "Exercise 3 ✨").source, namespace)
        assert set(namespace) == {"__builtins__"}


def test_exercise_headings_needs_an_unambiguous_notebook():
    assert [i for i, _ in N.exercise_headings(CORRECT_NOTEBOOK, HEADINGS)] == [2, 5, 7, 9]
    doubled = N.insert_cells(CORRECT_NOTEBOOK, [(3, new_markdown_cell("## Exercise 1 again"))])
    with pytest.raises(ValueError, match="Exercise"):
        N.exercise_headings(doubled, HEADINGS)
    with pytest.raises(ValueError, match="at least two"):
        N.table_of_contents(["## Exercise 1"], "headings")


def _tagged(nb):
    """``nb`` with each cell's original index in its metadata (survives every edit)."""
    nb = copy.deepcopy(nb)
    for index, cell in enumerate(nb.cells):
        cell.metadata["origin"] = index
    return nb


def _ran_before_each_snapshot(nb) -> dict[str, set[int]]:
    """Exercise id -> the original code cells run before its variables are read."""
    plan = plan_snapshots(nb.cells, SNAPSHOTS)
    ran = {}
    for position, snaps in plan.items():
        before = {c.metadata.get("origin") for c in nb.cells[:position] if c.cell_type == "code"}
        ran.update({snap.id: before - {None} for snap in snaps})
    return ran


TAGGED = _tagged(CORRECT_NOTEBOOK)


@given(variant=edited_notebooks(TAGGED, headings=HEADINGS, protected=PROTECTED))
def test_no_notebook_edit_moves_a_snapshot(variant):
    """Item 4: contents cells, recaps, prose and comments that mention exercises, extra cells
    and prints leave every exercise's variables read after the same cells, with no warning."""
    _, notes = locate_exercises(variant.value.cells, SNAPSHOTS)
    assert notes == [], variant
    assert _ran_before_each_snapshot(variant.value) == _ran_before_each_snapshot(TAGGED), variant
