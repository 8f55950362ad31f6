"""The batch reports events and the library warns, printing nothing; the command line renders them."""

from __future__ import annotations

import warnings

import pytest

from sdverify import isolation
from sdverify.cli import _BatchProgress, _show_warning
from sdverify.errors import SdverifyWarning
from sdverify.grading.model import SubmissionGrade
from sdverify.notebooks import batch
from sdverify.notebooks.batch import FilesSkipped, Finished, NeverGraded, Restored, Started, Stored
from sdverify.notebooks.submissions import Skipped


def test_the_cli_renders_every_event_and_sanitises_names(capsys):
    with _BatchProgress(bar=False) as progress:
        progress(FilesSkipped((Skipped("notes.txt", "not a submission"),)))
        progress(NeverGraded(("hal",)))
        progress(Started(1))
        progress(Stored("ann\x1b[2J", graded=True))
        progress(Finished(graded=1, partly=1, refused=2, up_to_date=3))
        progress(Restored("ann\x1b[2J"))
    out, err = capsys.readouterr()
    assert out == "" and "\x1b" not in err
    assert "not graded, 1 file(s):\n  notes.txt: not a submission" in err
    assert "never graded, left out of the class files: hal" in err
    assert "graded 1 submission(s) (1 in part: their other exercises kept), 2 refused" in err and "3 up to date" in err
    assert "grade files changed after they were written; restored" in err


def test_warnings_are_the_librarys_and_the_cli_prints_their_message(capsys, monkeypatch):
    """The library warns (nothing on stderr); a pool worker's warning is warned again in the
    caller's process; the CLI prints a SdverifyWarning as its message alone, sanitised."""
    isolation.warn_once.cache_clear()
    with pytest.warns(SdverifyWarning) as warned:
        isolation.warn_once("process")
        isolation.warn_once("process")  # once per process
        isolation.warn_once("bwrap")
    assert [str(w.message) for w in warned] == [isolation.PROCESS_WARNING]
    assert capsys.readouterr().err == ""
    grade = SubmissionGrade("ann", "ann.py", "module", [])

    def warning_grade(job: object, b: object) -> SubmissionGrade:
        warnings.warn("contained\x1b[2J", SdverifyWarning, stacklevel=1)
        return grade

    monkeypatch.setattr(batch, "_grade", warning_grade)
    with warnings.catch_warnings(record=True) as escaped:
        assert batch._in_worker(None, None) == (grade, ["contained\x1b[2J"])  # type: ignore[arg-type]
    assert not escaped
    with pytest.warns(SdverifyWarning, match="contained"):
        assert batch._relayed((grade, ["contained\x1b[2J"])) is grade
    _show_warning(SdverifyWarning("contained\x1b[2J"), SdverifyWarning, "x.py", 1)
    assert capsys.readouterr().err == "contained\\x1b[2J\n"
