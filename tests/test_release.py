"""``sdverify release``: the student version of a solved lesson (no kernel runs here).

Marked solution regions become stubs; without marks the spec's read variables do; hidden tests,
outputs and metadata never reach the student.  Grading the released and solved lesson is in
tests/test_draft_release_grades.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from sdverify.cli import main
from sdverify.notebooks.release import MARKDOWN_STUB, release
from sdverify.notebooks.spec import load_spec

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
KERNEL = {"name": "python3", "display_name": "Python 3"}


def _marked() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNEL, "nbgrader": {"secret": "grade-ids"}, "otter": {"tests": "x"}}
    code = nbformat.v4.new_code_cell(
        "import torch\n"
        "def embed(text):\n"
        "    ids = tokenize(text)\n"
        "    ### BEGIN SOLUTION\n"
        "    out = encoder(ids).last_hidden_state\n"
        "    ### END SOLUTION\n"
        "    return out\n"
        "# BEGIN SOLUTION\n"
        "print('side effect only')\n"
        "# END SOLUTION\n"
    )
    code.metadata = {"nbgrader": {"solution": True, "grade_id": "embed", "points": 3}}
    code.outputs = [nbformat.v4.new_output("stream", text="the answer is 42\n")]
    code.execution_count = 7
    tests = nbformat.v4.new_code_cell(
        "assert embed('a').shape == (1, 77, 768)\n"
        "### BEGIN HIDDEN TESTS\nassert secret_check(embed)\n### END HIDDEN TESTS"
    )
    answer = nbformat.v4.new_markdown_cell("Why?\n# BEGIN SOLUTION\nBecause CFG.\n# END SOLUTION")
    nb.cells = [code, tests, answer]
    return nb


def test_marked_regions_become_stubs_and_nothing_hidden_remains() -> None:
    released = release(_marked())
    code, tests, answer = released.notebook.cells
    assert "    out = None  # TODO" in code.source and "encoder(ids)" not in code.source
    assert "raise NotImplementedError" in code.source and "side effect only" not in code.source
    assert "    return out" in code.source  # the scaffolding around a region stays
    assert "secret_check" not in tests.source and "assert embed('a')" in tests.source
    assert answer.source == f"Why?\n{MARKDOWN_STUB}"
    assert code.outputs == [] and code.execution_count is None and code.metadata == {}
    assert dict(released.notebook.metadata) == {"kernelspec": KERNEL}
    text = nbformat.writes(released.notebook)
    for leak in ("grade-ids", "grade_id", "secret_check", "Because CFG", "the answer is 42", "otter"):
        assert leak not in text
    assert released.stubbed == (0, 2) and released.hidden_removed == (1,)
    nbformat.validate(released.notebook)


def test_without_marks_the_spec_read_variables_are_stubbed() -> None:
    spec = load_spec()
    solved = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    released = release(solved, spec)
    sources = [c.source for c in released.notebook.cells]
    read = {name for e in spec.exercises for name in e.snapshot().names}
    for stub in ("clip_params = None  # TODO", "token_ids = None  # TODO", "image = None  # TODO", "z = None  # TODO"):
        assert any(stub in s for s in sources), stub
    assert "text_encoder(token_ids).last_hidden_state" not in "".join(sources)
    assert any("CLIPTokenizer.from_pretrained" in s for s in sources)  # not read by a check: kept
    assert sources[1] == solved.cells[1].source  # before the first exercise: untouched
    text, original = nbformat.writes(released.notebook), nbformat.writes(solved)
    spec_only = [
        json.dumps(word)[1:-1]
        for word in {c.check for e in spec.exercises for c in e.checks} | {e.heading for e in spec.exercises}
        if json.dumps(word)[1:-1] not in original
    ]
    assert spec_only and not [word for word in spec_only if word in text]  # no check kind or heading pattern
    assert all(not c.get("outputs") for c in released.notebook.cells)
    assert read and released.stubbed and solved.cells[6].source != released.notebook.cells[6].source


def test_nothing_to_stub_is_an_error() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    with pytest.raises(ValueError, match=r"BEGIN SOLUTION.*no spec"):
        release(nb)


def test_release_command_writes_the_student_notebook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    solved = tmp_path / "solved.ipynb"
    nbformat.write(_marked(), str(solved))
    out = tmp_path / "student.ipynb"
    assert main(["release", str(solved), "--out", str(out)]) == 0
    assert "stubbed" in capsys.readouterr().out
    assert "out = None  # TODO" in nbformat.read(str(out), as_version=4).cells[0].source
    assert main(["release", str(solved), "--out", str(solved)]) == 2
