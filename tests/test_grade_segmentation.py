"""Segmentation end to end: comments, a table of contents and prints that mention exercises
leave a correct notebook's grade at full marks (they moved snapshots before)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell

from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.spec import load_spec

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"


@pytest.mark.slow
def test_a_correct_notebook_with_misleading_mentions_keeps_full_marks(tmp_path: Path):
    nb = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    contents = "## Contents\n" + "\n".join(f"# Exercise {n}" for n in (1, 2, 3, 4))
    nb.cells[1:1] = [
        new_markdown_cell(contents),
        new_code_cell("# device and dtype are reused in Exercise 3 and Exercise 4\nprint('see Exercise 4')"),
    ]
    path = tmp_path / "student.ipynb"
    nbformat.write(nb, str(path))
    [grade] = grade_batch([path], tmp_path / "out", spec=load_spec(), settings=Settings(), workers=1)
    assert grade.score == grade.max_score, [c.message for e in grade.exercises for c in e.checks if not c.passed]
    assert not [n for n in grade.notes if n.startswith("segmentation")]


@pytest.mark.slow
def test_the_replay_uses_the_seed_the_kernel_set_not_the_seeds_in_the_text(tmp_path: Path):
    nb = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    [generation] = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("torch.manual_seed(42)")]
    generation.source = generation.source.replace("torch.manual_seed(42)", "torch.manual_seed(7)", 1)
    nb.cells.append(new_code_cell("\n".join(f"# torch.manual_seed({n})" for n in range(100, 140))))
    path = tmp_path / "student.ipynb"
    nbformat.write(nb, str(path))
    [grade] = grade_batch([path], tmp_path / "out", spec=load_spec(), settings=Settings(), workers=1)
    replay = next(c for e in grade.exercises for c in e.checks if c.id == "image_replay")
    assert replay.passed and replay.details.get("seed") == 7, replay.message
