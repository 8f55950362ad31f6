"""The one result model (issue 18, item 1): what a check's role, case, gate scope and mistake are
is typed data, read by the points model and every report; its stored form is versioned."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from sdverify.checker.probes import Probe, is_case
from sdverify.errors import UsageError
from sdverify.grading.model import SCHEMA_VERSION, CheckEntry, Scope, SubmissionGrade, grouped
from sdverify.grading.points import Graded, withhold
from sdverify.grading.render import report_dict
from sdverify.results import fail, ok


def _points(group: str, case: str) -> CheckEntry:
    return Graded(replace(ok(f"{group}.reference[{case}]"), case=case), "points", 2.0).entry(group)


def _gate(group: str, failed_cases: tuple[str, ...] | None = None, scope: Scope = "group") -> CheckEntry:
    result = replace(fail(f"{group}.gate", "bad"), failed_cases=failed_cases)
    return Graded(result, "gate", scope=scope).entry(group)


def test_a_gate_withholds_only_the_cases_it_failed_on():
    graded = withhold([_gate("f", ("b",)), _points("f", "a"), _points("f", "b")])
    assert [(e.case, e.points, e.withheld_by) for e in graded[1:]] == [("a", 2.0, []), ("b", 0.0, ["f.gate"])]


def test_a_gate_naming_no_case_withholds_its_group_only():
    graded = withhold([_gate("f"), _points("f", "a"), _points("g", "a")])
    assert [(e.points, e.withheld_by) for e in graded[1:]] == [(0.0, ["f.gate"]), (2.0, [])]


def test_a_gate_of_submission_scope_withholds_every_group_whatever_its_name():
    graded = withhold([_points("f", "a"), _points("g", "a"), _gate("files", scope="submission")])
    assert [(e.points, e.withheld_by) for e in graded[:2]] == [(0.0, ["files.gate"])] * 2
    assert withhold([_points("f", "a"), _gate("sandbox")])[0].points == 2.0  # a group name means nothing


def test_what_a_probe_is_for_is_data_not_its_id():
    assert is_case(Probe("f[x,again]", "f")) and is_case(Probe("cfg_combine[call 0]", "cfg_combine"))
    assert not is_case(Probe("f[x]", "f", kind="repeat")) and not is_case(Probe("f[x]", "f", kind="replay"))


SCHEMA_1 = {
    "name": "alice",
    "path": "alice.py",
    "kind": "module",
    "exercises": [
        {
            "id": "cfg_combine",
            "title": "cfg_combine()",
            "checks": [
                {
                    "id": "cfg_combine.reference[w=7.5]",
                    "function": "cfg_combine",
                    "passed": False,
                    "points": 0.0,
                    "max_points": 2.0,
                    "message": "the two predictions are swapped",
                    "clause": "",
                    "details": {"mistake": "cfg_swapped", "case": "cfg_combine[w=7.5]", "max_abs_diff": 3.0},
                    "role": "points",
                },
            ],
        },
        {
            "id": "sandbox",
            "title": "sandbox()",
            "checks": [
                {
                    "id": "sandbox.grader_files",
                    "function": "sandbox",
                    "passed": True,
                    "points": 0.0,
                    "max_points": 0.0,
                    "message": "",
                    "details": {},
                    "role": "gate",
                }
            ],
        },
    ],
    "notes": [],
    "error": None,
    "seconds": 1.5,
}


def test_a_grade_stored_before_the_typed_fields_reads_into_them_and_round_trips():
    grade = SubmissionGrade.from_dict(SCHEMA_1)
    swapped, files = grade.checks
    assert (swapped.group, swapped.mistake, swapped.case) == ("cfg_combine", "cfg_swapped", "cfg_combine[w=7.5]")
    assert swapped.details == {"max_abs_diff": 3.0} and swapped.named_mistake == "the two predictions are swapped"
    assert (files.group, files.scope) == ("sandbox", "submission")
    stored = json.loads(json.dumps(grade.to_dict()))
    assert stored["schema"] == SCHEMA_VERSION and SubmissionGrade.from_dict(stored) == grade


def test_a_grade_of_a_newer_schema_is_refused_by_name():
    with pytest.raises(ValueError, match="grade schema 99"):
        SubmissionGrade.from_dict({**SCHEMA_1, "schema": 99})


def test_the_check_report_is_schema_2_and_keeps_function_for_schema_1_readers():
    report = report_dict(SubmissionGrade("s.py", "s.py", "module", grouped([_points("f", "a")])))
    check = report["checks"][0]
    assert report["schema"] == 2 and check["function"] == check["group"] == "f" and check["case"] == "a"


def test_only_a_usage_error_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from sdverify import checker
    from sdverify.cli import main

    def raising(error: Exception):
        def check_submission(*args, **kwargs):
            raise error

        return check_submission

    monkeypatch.setattr(checker, "check_submission", raising(UsageError("--thing: expected a thing")))
    assert main(["check"]) == 2 and "error: --thing: expected a thing" in capsys.readouterr().err
    monkeypatch.setattr(checker, "check_submission", raising(ValueError("a fault of the grader")))
    with pytest.raises(ValueError, match="a fault of the grader"):
        main(["check"])
