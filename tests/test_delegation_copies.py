"""Run-time copies of the reference (issue 21), graded end to end at each isolation level: at the
process level the tripwire records them, under bwrap the sandbox's reference is empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdverify.checker import check_submission

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["delegating_runtime_copy", "delegating_fresh_module"])
def test_a_run_time_copy_of_the_reference_earns_nothing(name: str, sandbox_level: str):
    report = check_submission(str(CATALOG / f"{name}.py"))
    assert report.isolation == sandbox_level and report.score == 0
    gates = [c for c in report.checks if c.id.endswith(".own_work")]
    assert gates and not any(c.passed for c in gates)
