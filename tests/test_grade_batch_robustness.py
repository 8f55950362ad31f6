"""A batch always finishes, with every result, whatever one submission does to its worker or
to the weights (the process level, where a notebook can do both; bwrap prevents them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from sdverify import zoo
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.spec import load_spec

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"


def _with_cell(folder: Path, name: str, source: str) -> Path:
    nb = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    nb.cells.append(new_code_cell(source))
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_notebook_that_kills_its_worker_fails_alone(tmp_path: Path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(SAMPLES / "correct.ipynb", subs / "honest.ipynb")
    _with_cell(subs, "killer", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    settings = Settings(sandbox="process", cell_timeout=120)
    grades = {g.name: g for g in grade_batch([subs], tmp_path / "out", spec=load_spec(), settings=settings, workers=2)}
    assert grades["honest"].score == grades["honest"].max_score and grades["honest"].error is None
    assert grades["killer"].error and "worker failed twice" in grades["killer"].error
    assert (tmp_path / "out" / "grades.csv").read_text().count("\n") == 3  # header + both students


def test_weights_edited_in_place_are_named_rebuilt_and_harm_no_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SDVERIFY_CACHE", str(tmp_path / "cache"))  # a zoo of its own, built here
    weights = zoo.weights_dir("tiny", 0)
    target = weights / "vae" / "diffusion_pytorch_model.safetensors"
    poison = (
        "import os\n"
        f"p = {str(target)!r}\n"
        "st = os.stat(p)\n"
        "with open(p, 'r+b') as f:\n    f.seek(st.st_size // 2)\n    f.write(b'\\x7f' * 4096)\n"
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    subs = tmp_path / "subs"
    subs.mkdir()
    _with_cell(subs, "a_poisoner", poison)
    shutil.copy(SAMPLES / "correct.ipynb", subs / "b_honest.ipynb")
    settings = Settings(sandbox="process", cell_timeout=120)
    grades = {g.name: g for g in grade_batch([subs], tmp_path / "out", spec=load_spec(), settings=settings, workers=1)}
    assert grades["b_honest"].score == grades["b_honest"].max_score
    assert grades["a_poisoner"].error and "changed the grader's weights" in grades["a_poisoner"].error
    assert zoo.verify(weights) == []
