"""Metamorphic tests of `sdverify grade`: a notebook rewritten without changing what it
computes keeps its grade.

The edits (tests/metamorphic: comments, markdown and prints that mention exercises, a
table of contents, recap headings, inert cells, ``%%time``, renamed helper variables,
reordered imports, ``torch.inference_mode``, ``return_dict=False``, batched CFG) are drawn by
Hypothesis first and graded afterwards in one ``grade_batch`` call, since a notebook costs
about 13 s.  All of it is in the slow tier: one correct notebook carrying every kind of
edit and, in one batch on two workers, ``VARIANTS`` edited correct notebooks, each
single-mistake sample with an edited copy of it (the same checks must fail), and a copy
whose heading was renamed (a segmentation note and a best-effort grade, never a silent
misgrade).  ``SDVERIFY_HYPOTHESIS_PROFILE=thorough`` draws more (docs/development.md).
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from hypothesis import settings
from metamorphic import notebooks as N
from metamorphic.strategies import NOTEBOOK_EDITS, Variant, draw_examples, edited_notebooks
from recorded_scores import expected

from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings, SubmissionGrade
from sdverify.notebooks.spec import load_spec

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
SPEC = load_spec()
HEADINGS = [e.heading for e in SPEC.exercises]
PROTECTED = {name for e in SPEC.exercises for name in e.snapshot().names}  # what the grader reads
# The grader's logic is under test, not its isolation (tests/test_grade_isolation.py).
SETTINGS = Settings(sandbox="process")
# Edited correct notebooks in the slow batch: the profile's max_examples (dev and ci 20,
# thorough 500) over ten; each edited mistake gets a tenth of that.
VARIANTS = max(2, settings.default.max_examples // 10)
MISTAKE_VARIANTS = max(1, VARIANTS // 10)
# Every single-mistake sample but the one that never finishes (it costs its cell timeout).
MISTAKES = sorted(p.stem for p in SAMPLES.glob("mistake_*.ipynb") if p.stem != "mistake_never_finishes")


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(SAMPLES / f"{name}.ipynb", as_version=4)


def _variants(name: str, count: int, **kwargs) -> list[Variant]:
    return draw_examples(edited_notebooks(_read(name), headings=HEADINGS, protected=PROTECTED, **kwargs), count)


def _failed(grade: SubmissionGrade) -> dict[str, str]:
    """``exercise/check`` -> message of every check that lost points."""
    return {f"{e.id}/{c.id}": c.message for e in grade.exercises for c in e.checks if not c.passed}


def _grade(folder: Path, notebooks: dict[str, nbformat.NotebookNode], workers: int) -> dict[str, SubmissionGrade]:
    folder.mkdir()
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / f"{name}.ipynb")
    grades = grade_batch([folder], folder.parent / "grades", spec=SPEC, settings=SETTINGS, workers=workers)
    return {g.name: g for g in grades}


def _full_marks(grade: SubmissionGrade, variant: Variant) -> None:
    assert grade.error is None, (variant, grade.error)
    assert not _failed(grade), (variant, _failed(grade))
    assert grade.score == grade.max_score == expected("notebooks", "correct")["max_score"], variant
    assert not [n for n in grade.notes if n.startswith("segmentation")], (variant, grade.notes)


@pytest.mark.slow  # a kernel (~15 s of CPU); the laptop tier: the edits' properties, an edited module's grade
def test_a_correct_notebook_with_every_kind_of_edit_keeps_full_marks(tmp_path: Path):
    [variant] = _variants("correct", 1, min_edits=len(NOTEBOOK_EDITS))
    assert {edit.split(":")[0] for edit in variant.edits} == set(NOTEBOOK_EDITS), variant
    grades = _grade(tmp_path / "submissions", {"variant": variant.value}, workers=1)
    _full_marks(grades["variant"], variant)


def _renamed_heading(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Exercise 2's heading no longer matches its pattern (not a semantics-preserving edit)."""
    index, line = N.exercise_headings(nb, HEADINGS)[1]
    nb = copy.deepcopy(nb)
    nb.cells[index].source = nb.cells[index].source.replace(line, "## Part two: tokens and text embeddings")
    return nb


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    """Every notebook of the slow tier, graded in one batch: name -> (grade, variant or None)."""
    notebooks: dict[str, tuple[nbformat.NotebookNode, Variant | None]] = {}
    for i, variant in enumerate(_variants("correct", VARIANTS)):
        notebooks[f"correct-{i}"] = (variant.value, variant)
    for mistake in MISTAKES:
        notebooks[mistake] = (_read(mistake), None)
        for i, variant in enumerate(_variants(mistake, MISTAKE_VARIANTS)):
            notebooks[f"{mistake}-{i}"] = (variant.value, variant)
    notebooks["heading_renamed"] = (_renamed_heading(_read("correct")), None)
    folder = tmp_path_factory.mktemp("metamorphic") / "submissions"
    grades = _grade(folder, {name: nb for name, (nb, _) in notebooks.items()}, workers=2)
    return {name: (grades[name], variant) for name, (_, variant) in notebooks.items()}


@pytest.mark.slow
def test_edited_correct_notebooks_keep_full_marks(batch):
    variants = [name for name in batch if name.startswith("correct-")]
    assert len(variants) >= 2
    for name in variants:
        _full_marks(*batch[name])


@pytest.mark.slow
@pytest.mark.parametrize("mistake", MISTAKES)
def test_edited_mistakes_lose_exactly_the_same_checks(batch, mistake: str):
    original, _ = batch[mistake]
    assert _failed(original), f"{mistake} lost no points: not a mistake sample"
    for name in (n for n in batch if n.startswith(f"{mistake}-")):
        grade, variant = batch[name]
        assert grade.error == original.error, (variant, grade.error)
        assert sorted(_failed(grade)) == sorted(_failed(original)), (variant, _failed(grade), _failed(original))


@pytest.mark.slow
def test_a_renamed_heading_is_noted_and_graded_best_effort(batch):
    """Item 4: a missing heading is said in the feedback; the exercise's variables are read at
    the end of the notebook, where this lesson's Exercise 2 values are still intact."""
    grade, _ = batch["heading_renamed"]
    assert any(n.startswith("segmentation: ex2: no markdown heading") for n in grade.notes), grade.notes
    [ex2] = [e for e in grade.exercises if e.id == "ex2"]
    assert any("heading not found" in n for n in ex2.notes), ex2.notes
    assert not _failed(grade), _failed(grade)
