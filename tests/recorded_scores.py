"""The scores recorded before the grading core was merged (issue 18), for the tests that
grade the same files now: fixtures/recorded_scores.json (``scripts/record_scores.py`` wrote
it, at the commit and with the commands it names), with the changes made since on purpose.

A score is ``{"score", "max_score", "groups": {group: [points, max_points]}}``: a group is an
API function (or ``sandbox``) of a catalog module, an exercise of a sample notebook.  A
change is ``{"kind", "submission", "group", "recorded", "now", "reason"}``: that group's
score moved from ``recorded`` to ``now`` for ``reason`` (a documented change of the checks).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from sdverify.grading.model import SubmissionGrade

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "recorded_scores.json"
RECORDED: dict[str, Any] = json.loads(FIXTURE.read_text())
PROBE_SEED = RECORDED["probe_seed"]  # the catalog's drawn cases, as recorded


def scores(grade: SubmissionGrade) -> dict[str, Any]:
    """``grade`` in the fixture's form."""
    groups = {e.id: [e.score, e.max_score] for e in grade.exercises}
    return {"score": grade.score, "max_score": grade.max_score, "groups": groups}


def expected(kind: str, name: str) -> dict[str, Any]:
    """What ``name`` (a stem under ``kind``: ``catalog`` or ``notebooks``) scored before the move,
    with the fixture's changes since applied, its totals summed again."""
    want = copy.deepcopy(RECORDED[kind][name])
    for change in RECORDED["changes"]:
        if (change["kind"], change["submission"]) == (kind, name):
            assert want["groups"][change["group"]] == change["recorded"], change
            want["groups"][change["group"]] = change["now"]
    want["score"] = sum(points for points, _ in want["groups"].values())
    want["max_score"] = sum(worth for _, worth in want["groups"].values())
    return want
