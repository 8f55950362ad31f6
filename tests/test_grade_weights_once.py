"""The weights are verified once per submission, in one place, whatever its kind."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_markdown_cell, new_notebook

from sdverify import zoo
from sdverify.checker import checks
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.spec import load_spec
from sdverify.settings import Settings


def test_a_batch_of_a_module_and_a_notebook_verifies_the_weights_once_per_submission(monkeypatch, tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "alice.py").write_text("def cfg_combine(u, c, w):\n    return u + w * (c - u)\n")
    nbformat.write(new_notebook(cells=[new_markdown_cell("# nothing done")]), str(folder / "bob.ipynb"))
    verified: list[str] = []
    real = zoo.verify

    def counted(path):
        verified.append(str(path))
        return real(path)

    monkeypatch.setattr(zoo, "verify", counted)
    checks.context.cache_clear()  # the checker's check before any student code runs, counted once
    settings = Settings(sandbox="process", call_timeout=120)
    grades = grade_batch([folder], tmp_path / "out", spec=load_spec(), settings=settings, workers=1)
    assert [g.kind for g in grades] == ["module", "notebook"]
    assert all(g.error is None for g in grades), [g.error for g in grades]
    # before the batch, before the checker's first expected values, then once after each submission
    assert len(verified) == 1 + 1 + len(grades), verified
