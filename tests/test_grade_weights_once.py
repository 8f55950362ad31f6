"""The weights are verified once per submission, in one place, whatever its kind: a ``.py``'s by
the checker's own ``sandbox.grader_files`` gate, a notebook's by the batch after it ran."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell, new_notebook

from sdverify import zoo
from sdverify.notebooks import grading
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.spec import load_spec
from sdverify.settings import Settings

SETTINGS = Settings(sandbox="process", call_timeout=120)


def _class(folder: Path) -> Path:
    folder.mkdir()
    (folder / "alice.py").write_text("def cfg_combine(u, c, w):\n    return u + w * (c - u)\n")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# nothing done")]), str(folder / "bob.ipynb"))
    return folder


def _count(monkeypatch) -> list[str]:
    verified: list[str] = []
    real = zoo.verify

    def counted(path):
        verified.append(str(path))
        return real(path)

    monkeypatch.setattr(zoo, "verify", counted)
    return verified


def test_the_batch_verifies_after_a_notebook_and_leaves_a_module_to_its_runner(monkeypatch, tmp_path):
    verified = _count(monkeypatch)

    def module(job, keep):  # as the checker: its report's gate verifies the weights after the run
        zoo.verify_after_run(zoo.weights_dir(job.settings.preset, job.settings.seed))
        return grading.SubmissionGrade(job.name, str(job.path), "module", [])

    def notebook(job, keep):
        return grading.SubmissionGrade(job.name, str(job.path), "notebook", [])

    monkeypatch.setitem(grading.RUNNERS, ".py", grading.Runner("module", module, False, checks_weights=True))
    monkeypatch.setitem(grading.RUNNERS, ".ipynb", grading.Runner("notebook", notebook, True))
    grades = grade_batch([_class(tmp_path / "class")], tmp_path / "out", spec=load_spec(), settings=SETTINGS, workers=1)
    assert [g.kind for g in grades] == ["module", "notebook"]
    assert len(verified) == 1 + len(grades), verified  # before the batch, then once after each submission


@pytest.mark.slow
def test_a_batch_of_a_module_and_a_notebook_verifies_the_weights_once_per_submission(monkeypatch, tmp_path):
    from sdverify.checker import checks

    verified = _count(monkeypatch)
    checks.context.cache_clear()  # the checker's check before any student code runs, counted once
    grades = grade_batch([_class(tmp_path / "class")], tmp_path / "out", spec=load_spec(), settings=SETTINGS, workers=1)
    assert [g.kind for g in grades] == ["module", "notebook"]
    assert all(g.error is None for g in grades), [g.error for g in grades]
    # before the batch, before the checker's first expected values, then once after each submission
    assert len(verified) == 1 + 1 + len(grades), verified
