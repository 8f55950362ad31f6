"""Every catalog module keeps the score, total and per API function, that the code before the
grading core computed (fixtures/recorded_scores.json; tests/recorded_scores.py says how it was
recorded and how a change on purpose is written down).  The sample notebooks' are compared in
tests/test_grade_samples.py, on the batch it grades anyway.

The slow tier: every catalog module is checked, in one process (~1 s each after the first).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from recorded_scores import PROBE_SEED, RECORDED, expected, scores

from sdverify.checker import check_submission
from sdverify.grading.model import SubmissionGrade

pytestmark = pytest.mark.slow

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"
# No catalog module timed out when recorded (none hangs), so a generous limit per call changes no
# score, and a loaded machine cannot turn one red: generate() took over 60 s once, on 2 shared cores.
CALL_TIMEOUT_S = 600.0


@pytest.fixture(scope="module")
def catalog() -> dict[str, SubmissionGrade]:
    return {
        p.stem: check_submission(str(p), probe_seed=PROBE_SEED, call_timeout=CALL_TIMEOUT_S)
        for p in sorted(CATALOG.glob("*.py"))
    }


def test_every_catalog_module_was_recorded(catalog: dict[str, SubmissionGrade]):
    assert sorted(catalog) == sorted(RECORDED["catalog"])


@pytest.mark.parametrize("name", sorted(RECORDED["catalog"]))
def test_a_catalog_module_keeps_its_recorded_score(catalog: dict[str, SubmissionGrade], name: str):
    assert scores(catalog[name]) == expected("catalog", name)
