"""The batch reports events and prints nothing; the command line renders them."""

from __future__ import annotations

from sdverify.cli import _BatchProgress
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
