"""The graded result of one submission, and its text / JSON / JUnit renderings.

The renderers take one report or several (``sdverify check a.py b.py``): one gives the
single report's format unchanged; several give a JSON object listing each report and a
JUnit ``<testsuites>`` with a suite each.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sdverify.results import CheckResult, _jsonable
from sdverify.sanitise import xml_tree

SCHEMA_VERSION = 1


@dataclass
class CheckEntry:
    """One graded check: ``function`` is the API name (or exercise) it grades, or ``sandbox``;
    ``role`` is ``points``, ``gate`` or ``diagnostic`` (:mod:`sdverify.checker.points`)."""

    id: str
    function: str
    passed: bool
    points: float
    max_points: float
    message: str
    clause: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    role: str = "points"

    @property
    def named_mistake(self) -> str | None:
        """The recognised mistake a failed check names, in words: checks that recognise one set
        ``details['mistake']`` to its id and open the message with its words."""
        if self.passed or not self.details.get("mistake"):
            return None
        return (self.message.splitlines() or [""])[0] or None

    @classmethod
    def from_result(
        cls, function: str, result: CheckResult, max_points: float = 1.0, role: str = "points"
    ) -> CheckEntry:
        worth = max_points if role == "points" else 0.0
        return cls(
            result.id,
            function,
            result.passed,
            worth if result.passed else 0.0,
            worth,
            result.message,
            result.clause,
            _jsonable(result.details),
            role,
        )

    def label(self) -> str:
        """What the check is worth, for a report line: ``2/2``, ``0/2 (withheld: ...)``, ``gate``."""
        if self.role != "points":
            return self.role
        text = f"{self.points:g}/{self.max_points:g}"
        withheld = self.details.get("withheld_by")
        return f"{text} (withheld: {', '.join(withheld)} failed)" if withheld else text


@dataclass
class SubmissionReport:
    submission: str
    checks: list[CheckEntry]
    error: str | None
    seconds: float
    isolation: str = "process"  # the level student code ran under (sdverify.isolation)
    notes: list[str] = field(default_factory=list)  # what the teacher should know that costs no points
    output: str = ""  # the last bytes the submission's processes printed (a crash's traceback)
    probe_seed: int | None = None  # what the run's drawn cases came from (--probe-seed reproduces them)

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.checks)

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    def failed(self) -> list[CheckEntry]:
        return [c for c in self.checks if not c.passed]

    def points_by_function(self) -> dict[str, tuple[float, float]]:
        """``function -> (points, max_points)``, in report order."""
        out: dict[str, tuple[float, float]] = {}
        for c in self.checks:
            points, most = out.get(c.function, (0.0, 0.0))
            out[c.function] = (points + c.points, most + c.max_points)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON report (schema in docs/checker.md)."""
        return {
            "schema": SCHEMA_VERSION,
            "submission": self.submission,
            "passed": self.passed,
            "score": self.score,
            "max_score": self.max_score,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "isolation": self.isolation,
            "probe_seed": self.probe_seed,
            "notes": self.notes,
            "output": self.output,
            "checks": [
                {
                    "id": c.id,
                    "function": c.function,
                    "passed": c.passed,
                    "role": c.role,
                    "points": c.points,
                    "max_points": c.max_points,
                    "message": c.message,
                    "clause": c.clause,
                    "mistake": c.details.get("mistake"),
                    "details": _jsonable(c.details),
                }
                for c in self.checks
            ],
        }


def _listed(reports: SubmissionReport | Sequence[SubmissionReport]) -> list[SubmissionReport]:
    return [reports] if isinstance(reports, SubmissionReport) else list(reports)


def to_json(reports: SubmissionReport | Sequence[SubmissionReport]) -> str:
    """One report's object; several: ``{"schema": 1, "submissions": [report, ...]}``."""
    listed = _listed(reports)
    if len(listed) == 1:
        data = listed[0].to_dict()
    else:
        data = {"schema": SCHEMA_VERSION, "submissions": [r.to_dict() for r in listed]}
    return json.dumps(data, indent=2, ensure_ascii=False)


def failure_text(clause: str, message: str) -> str:
    """What a failed check says, wherever it is shown: the clause, then expected vs seen and the mistake."""
    return f"contract: {clause}\n{message}" if clause else message


def to_text(report: SubmissionReport) -> str:
    """Readable per-stage report: a line per check, failures explained below their line."""
    lines = [f"sdverify check: {report.submission}  (isolation: {report.isolation})"]
    if report.probe_seed is not None:
        seed = report.probe_seed
        lines.append(f"  drawn cases: probe seed {seed} (--probe-seed {seed} draws them again)")
    if report.error:
        lines.append(f"  SUBMISSION ERROR: {report.error}")
    lines.extend(f"  note: {note}" for note in report.notes)
    function = None
    totals = report.points_by_function()
    for c in report.checks:
        if c.function != function:
            function = c.function
            lines.append(f"\n{function}  ({totals[function][0]:g}/{totals[function][1]:g})")
        lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.id}  {c.label()}")
        if not c.passed:
            lines.extend(f"         {text}" for text in failure_text(c.clause, c.message).splitlines())
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(
        f"\n{verdict}: {report.score:g}/{report.max_score:g} points, "
        f"{len(report.failed())} failing check(s), {report.seconds:.1f} s"
    )
    return "\n".join(lines)


def summary_table(reports: Sequence[SubmissionReport]) -> str:
    """One row per submission: score, failing checks, seconds; then the count that passed."""
    width = max(len("submission"), *(len(r.submission) for r in reports))
    lines = [f"{'submission':{width}s}  {'score':>9s}  {'failing':>7s}  {'seconds':>7s}  isolation"]
    for r in reports:
        score = f"{r.score:g}/{r.max_score:g}"
        failing = "error" if r.error else str(len(r.failed()))
        lines.append(f"{r.submission:{width}s}  {score:>9s}  {failing:>7s}  {r.seconds:7.1f}  {r.isolation}")
    passed = sum(r.passed for r in reports)
    lines.append(f"{passed}/{len(reports)} submission(s) passed every check")
    return "\n".join(lines)


def to_junit(reports: SubmissionReport | Sequence[SubmissionReport]) -> str:
    """JUnit XML: a ``<testsuite>`` per submission (wrapped in ``<testsuites>`` when several),
    one testcase per check, classname = the API function."""
    suites = [xml_tree(_suite(r)) for r in _listed(reports)]  # a student's control characters: escaped
    if len(suites) == 1:
        return ET.tostring(suites[0], encoding="unicode", xml_declaration=True)
    root = ET.Element("testsuites")
    root.extend(suites)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _suite(report: SubmissionReport) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=f"sdverify check {report.submission}",
        tests=str(len(report.checks)),
        failures=str(len(report.failed())),
        errors="1" if report.error else "0",
        time=f"{report.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="isolation", value=report.isolation)
    if report.error:
        ET.SubElement(suite, "system-err").text = report.error
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"sdverify.{c.function}", name=c.id)
        if not c.passed:
            failure = ET.SubElement(case, "failure", message=(c.message.splitlines() or [""])[0])
            failure.text = failure_text(c.clause, c.message)
    if report.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(report.notes)
    return suite
