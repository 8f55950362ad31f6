"""The renderings of a grade, for every submission kind: text, JSON, JUnit and the HTML page.

The text and JSON renderers take one grade or several (``sdverify check a.py b.py``): one
gives the single report's format unchanged; several give a JSON object listing each report.
JUnit is one writer for ``check --junit`` and ``grade``'s junit.xml, in the names each file
has always had (:class:`JUnitLayout`).  Gradescope's is :mod:`.gradescope`; the class files
(index.html, grades.csv...) are the batch application's (``sdverify.notebooks.reports``).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sdverify.grading.model import ExerciseGrade, SubmissionGrade, failure_text
from sdverify.isolation import describe as isolation_text
from sdverify.sanitise import html as escape
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


@dataclass(frozen=True)
class JUnitLayout:
    """The names one JUnit file gives things: the files users already read differ only there.

    ``suite`` is formatted with ``name`` (the submission's), ``classname`` with ``name`` and
    ``group``.  ``wrap_one``: one submission is a ``<testsuites>`` too (``grade``'s junit.xml),
    not its suite alone (``check --junit``).
    """

    title: str
    suite: str
    classname: str
    wrap_one: bool


CHECK_JUNIT = JUnitLayout("sdverify check", "sdverify check {name}", "sdverify.{group}", wrap_one=False)
CLASS_JUNIT = JUnitLayout("sdverify grade", "{name}", "{name}.{group}", wrap_one=True)


def to_junit(reports: SubmissionGrade | Sequence[SubmissionGrade], layout: JUnitLayout = CHECK_JUNIT) -> str:
    """JUnit XML, for modules and notebooks alike: a ``<testsuite>`` per submission (wrapped in
    ``<testsuites>`` when several, or always with ``layout.wrap_one``), a testcase per check; a
    submission's error is an errored testcase ``grading`` and its ``system-err``, its notes the
    ``system-out``.  A student's control characters are escaped (the file always parses)."""
    listed = _listed(reports)
    if len(listed) == 1 and not layout.wrap_one:
        root = _suite(listed[0], layout)
    else:
        root = ET.Element("testsuites", name=layout.title)
        root.extend(_suite(r, layout) for r in listed)
    return ET.tostring(xml_tree(root), encoding="unicode", xml_declaration=True)


def _first_line(text: str) -> str:
    return (text.splitlines() or [""])[0]


def _suite(report: SubmissionGrade, layout: JUnitLayout) -> ET.Element:
    name = layout.suite.format(name=report.name)
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(len(report.checks) + bool(report.error)),
        failures=str(len(report.failed())),
        errors="1" if report.error else "0",
        time=f"{report.seconds:.3f}",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="isolation", value=report.isolation)
    if report.error:
        grading = ET.SubElement(suite, "testcase", classname=name, name="grading")
        ET.SubElement(grading, "error", message=_first_line(report.error)).text = report.error
    for group in report.exercises:
        classname = layout.classname.format(name=report.name, group=group.id)
        for c in group.checks:
            case = ET.SubElement(suite, "testcase", classname=classname, name=c.id)
            if not c.passed:
                failure = ET.SubElement(case, "failure", message=_first_line(c.message))
                failure.text = failure_text(c.clause, c.message)
    if report.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(report.notes)
    if report.error:
        ET.SubElement(suite, "system-err").text = report.error
    return suite


# One stylesheet for the submission page and the class page (sdverify.notebooks.reports).
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
.pass{color:#176f2c}.fail{color:#b00020}.note{color:#7a5b00}pre{white-space:pre-wrap;margin:0}
img.thumb{width:96px;height:96px}img.full{width:384px;height:384px}
th[data-type]{cursor:pointer}th[aria-sort=ascending]::after{content:" ▲"}th[aria-sort=descending]::after{content:" ▼"}
"""


def html_page(title: str, body: str, script: str = "") -> str:
    """A self-contained page (it loads nothing from the network): ``title``, then ``body`` (markup)."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{body}"
        f"{f'<script>{script}</script>' if script else ''}</body></html>"
    )


def to_html(grade: SubmissionGrade) -> str:
    """A submission's report.html: per-group feedback with the named mistake, its image, timings
    and notes; it links to the class overview two folders up (``--out``'s index.html)."""
    return html_page(f"{grade.name}: {grade.score:g}/{grade.max_score:g}", _submission_body(grade))


def _exercise_html(e: ExerciseGrade) -> str:
    rows = "".join(
        f"<tr><td class='{'pass' if c.passed else 'fail'}'>{'✔' if c.passed else '✘'}</td>"
        f"<td>{escape(c.id)}</td><td>{escape(c.label())}</td>"
        f"<td>{escape(c.clause)}"
        f"{'' if c.passed else '<pre class=fail>' + escape(c.message) + '</pre>'}</td>"
        f"<td class='mistake'>{'' if c.passed else escape(c.mistake or '')}</td></tr>"
        for c in e.checks
    )
    notes = "".join(f"<li class='note'>{escape(n)}</li>" for n in e.notes)
    return (
        f"<h2>{escape(e.title)} — {e.score:g}/{e.max_score:g}</h2>"
        f"{'<ul>' + notes + '</ul>' if notes else ''}"
        f"<table><tr><th></th><th>check</th><th>points</th><th>feedback</th><th>named mistake</th></tr>"
        f"{rows}</table>"
    )


def _submission_body(g: SubmissionGrade) -> str:
    """The markup of :func:`to_html`'s page, below its title."""
    parts = [
        "<p><a href='../../index.html'>class overview</a></p>",
        f"<p>{escape(g.kind)} <code>{escape(g.path)}</code>, graded in {g.seconds:.1f} s</p>",
        f"<p class='isolation'>{escape(isolation_text(g.isolation))}</p>",
    ]
    if g.error:
        parts.append(f"<p class='fail'>{escape(g.error)}</p>")
    if g.image:
        parts.append(f"<img class='full' src='{escape(g.image)}' alt='generated image'>")
    if g.timings:
        rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:.3f} s</td></tr>" for k, v in g.timings.items())
        parts.append(f"<h2>Stage timings (as the notebook measured them)</h2><table>{rows}</table>")
    if g.notes:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li class='note'><pre>{escape(n)}</pre></li>" for n in g.notes) + "</ul>"
        )
    parts += [_exercise_html(e) for e in g.exercises]
    return "".join(parts)
