"""The ``sdverify check`` renderings of a grade: text, JSON and JUnit.

The renderers take one grade or several (``sdverify check a.py b.py``): one gives the
single report's format unchanged; several give a JSON object listing each report and a
JUnit ``<testsuites>`` with a suite each.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sdverify.grading.model import SubmissionGrade, failure_text
from sdverify.sanitise import xml_tree

# The ``sdverify check --json`` report.  2: each check's typed fields (``group``, ``mistake``,
# ``status``, ``case``, ``failed_cases``, ``withheld_by``, ``scope``) beside ``details``, which no
# longer repeats them; ``function`` stays, equal to ``group``, for readers of schema 1.
REPORT_SCHEMA = 2


def report_dict(grade: SubmissionGrade) -> dict[str, Any]:
    """The JSON report of one checked submission (schema in docs/checker.md): its checks flat."""
    return {
        "schema": REPORT_SCHEMA,
        "submission": grade.name,
        "passed": grade.passed,
        "score": grade.score,
        "max_score": grade.max_score,
        "error": grade.error,
        "seconds": round(grade.seconds, 3),
        "isolation": grade.isolation,
        "probe_seed": grade.probe_seed,
        "notes": grade.notes,
        "output": grade.output,
        "checks": [{**asdict(c), "function": c.group} for c in grade.checks],
    }


def _listed(reports: SubmissionGrade | Sequence[SubmissionGrade]) -> list[SubmissionGrade]:
    return [reports] if isinstance(reports, SubmissionGrade) else list(reports)


def to_json(reports: SubmissionGrade | Sequence[SubmissionGrade]) -> str:
    """One report's object; several: ``{"schema": 2, "submissions": [report, ...]}``."""
    listed = _listed(reports)
    if len(listed) == 1:
        data = report_dict(listed[0])
    else:
        data = {"schema": REPORT_SCHEMA, "submissions": [report_dict(r) for r in listed]}
    return json.dumps(data, indent=2, ensure_ascii=False)


def to_text(report: SubmissionGrade) -> str:
    """Readable per-stage report: a line per check, failures explained below their line."""
    lines = [f"sdverify check: {report.name}  (isolation: {report.isolation})"]
    if report.probe_seed is not None:
        seed = report.probe_seed
        lines.append(f"  drawn cases: probe seed {seed} (--probe-seed {seed} draws them again)")
    if report.error:
        lines.append(f"  SUBMISSION ERROR: {report.error}")
    lines.extend(f"  note: {note}" for note in report.notes)
    for group in report.exercises:
        lines.append(f"\n{group.id}  ({group.score:g}/{group.max_score:g})")
        for c in group.checks:
            lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.id}  {c.label()}")
            if not c.passed:
                lines.extend(f"         {text}" for text in failure_text(c.clause, c.message).splitlines())
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(
        f"\n{verdict}: {report.score:g}/{report.max_score:g} points, "
        f"{len(report.failed())} failing check(s), {report.seconds:.1f} s"
    )
    return "\n".join(lines)


def summary_table(reports: Sequence[SubmissionGrade]) -> str:
    """One row per submission: score, failing checks, seconds; then the count that passed."""
    width = max(len("submission"), *(len(r.name) for r in reports))
    lines = [f"{'submission':{width}s}  {'score':>9s}  {'failing':>7s}  {'seconds':>7s}  isolation"]
    for r in reports:
        score = f"{r.score:g}/{r.max_score:g}"
        failing = "error" if r.error else str(len(r.failed()))
        lines.append(f"{r.name:{width}s}  {score:>9s}  {failing:>7s}  {r.seconds:7.1f}  {r.isolation}")
    passed = sum(r.passed for r in reports)
    lines.append(f"{passed}/{len(reports)} submission(s) passed every check")
    return "\n".join(lines)


def to_junit(reports: SubmissionGrade | Sequence[SubmissionGrade]) -> str:
    """JUnit XML: a ``<testsuite>`` per submission (wrapped in ``<testsuites>`` when several),
    one testcase per check, classname = its group (the API function)."""
    suites = [xml_tree(_suite(r)) for r in _listed(reports)]  # a student's control characters: escaped
    if len(suites) == 1:
        return ET.tostring(suites[0], encoding="unicode", xml_declaration=True)
    root = ET.Element("testsuites")
    root.extend(suites)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _suite(report: SubmissionGrade) -> ET.Element:
    suite = ET.Element(
        "testsuite",
        name=f"sdverify check {report.name}",
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
        case = ET.SubElement(suite, "testcase", classname=f"sdverify.{c.group}", name=c.id)
        if not c.passed:
            failure = ET.SubElement(case, "failure", message=(c.message.splitlines() or [""])[0])
            failure.text = failure_text(c.clause, c.message)
    if report.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(report.notes)
    return suite
