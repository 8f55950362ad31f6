"""One Gradescope submission: what the bundle's ``run_autograder`` runs (``sdverify autograder run``).

Gradescope puts the student's files in ``<root>/submission`` (``root`` is ``$AUTOGRADER_ROOT``,
``/autograder`` on Gradescope) and shows ``<root>/results/results.json``.  The submission is
the one notebook there, else the one ``.py`` module (sub-folders searched, checkpoints
ignored).  It is graded as ``sdverify grade`` grades a batch of one — the weights checked
against their manifest, every failure of the submission a graded error, a timed-out exercise
costing only its own points — and converted by :func:`~sdverify.grading.gradescope.to_gradescope`.

Before grading starts, a provisional ``results.json`` says grading did not finish: a grader
killed mid-way (the container's time limit, a submission that kills its parent at the process
level) still leaves the student a result that says so, not none.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from sdverify.grading.gradescope import failure_results, to_gradescope
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.spec import Spec
from sdverify.notebooks.submissions import collect
from sdverify.settings import Settings

UNFINISHED = (
    "The autograder started grading this submission but did not finish (a time limit, or the "
    "submission stopped the grader). Resubmit; if this persists, tell your instructor."
)


def find_submission(folder: Path) -> Path:
    """The file to grade in ``folder``: its one notebook, else its one ``.py`` module.

    Raises ValueError naming what was found and what is expected.
    """
    found = collect([folder]) if folder.is_dir() else []
    notebooks = [p for p in found if p.suffix == ".ipynb"]
    candidates = notebooks or found
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        raise ValueError(
            f"no .ipynb notebook or .py module in the submission (found {present or 'no files'}); "
            "submit your notebook (or your .py module)"
        )
    kind = "notebooks" if notebooks else ".py modules"
    names = [p.relative_to(folder.resolve()).as_posix() for p in candidates]
    raise ValueError(f"several {kind} in the submission: {names}; submit exactly one")


def run(root: Path, spec: Spec, settings: Settings) -> dict[str, Any]:
    """Grade ``root/submission`` and write ``root/results/results.json``; return what was written."""
    results = root / "results" / "results.json"
    _write(results, failure_results(UNFINISHED))
    try:
        path = find_submission(root / "submission")
    except ValueError as exc:
        data = failure_results(f"Nothing was graded: {exc}.")
    else:
        with tempfile.TemporaryDirectory(prefix="sdverify-gradescope-") as out:
            [grade] = grade_batch([path], Path(out), spec=spec, settings=settings, workers=1)
        data = to_gradescope(grade)
    _write(results, data)
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Atomically: Gradescope never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
