"""Outputs of ``sdverify grade``: grades.csv, Gradescope results.json, JUnit XML, HTML.

Layout under ``--out``::

    grades.csv  junit.xml  index.html
    submissions/<name>/grade.json     (ours: resume + every report is built from it)
    submissions/<name>/results.json   (Gradescope)
    submissions/<name>/report.html    (+ image.png, executed.ipynb for notebooks)

Every string that came from a submission is escaped: a notebook's error message is
data, never markup.  Every format names the isolation level student code ran under.
"""

from __future__ import annotations

import csv
import html
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from sdverify.notebooks.grading import ExerciseGrade, SubmissionGrade

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
.pass{color:#176f2c}.fail{color:#b00020}.note{color:#7a5b00}pre{white-space:pre-wrap;margin:0}
img.thumb{width:96px;height:96px}img.full{width:384px;height:384px}
"""


def submission_dir(out: Path, name: str) -> Path:
    return out / "submissions" / name


def load_grade(folder: Path) -> SubmissionGrade | None:
    """The stored grade in ``folder``, or None when absent or unreadable (then: regrade)."""
    try:
        return SubmissionGrade.from_dict(json.loads((folder / "grade.json").read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _fmt(x: float) -> str:
    return f"{x:g}"


def isolation_text(level: str) -> str:
    """What a level means, for a reader of the reports."""
    meaning = {
        "bwrap": "bubblewrap sandbox: no network, no access to other submissions or the grader's files",
        "process": "child process only: the code could use the network and read the grader's files",
        "checker": "the checker's sandbox",
    }
    return f"isolation: {level or 'unknown'}" + (f" ({meaning[level]})" if level in meaning else "")


GRADE_FILES = ("grade.json", "results.json", "report.html")


def write_submission(grade: SubmissionGrade, folder: Path) -> None:
    """grade.json, Gradescope results.json and report.html of one submission, each written
    atomically (a reader, or a batch killed mid-write, never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    page = _page(f"{grade.name}: {_fmt(grade.score)}/{_fmt(grade.max_score)}", _submission_body(grade))
    texts = (json.dumps(grade.to_dict(), indent=1), json.dumps(gradescope(grade), indent=1), page)
    for name, text in zip(GRADE_FILES, texts, strict=True):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(folder / name)


def gradescope(grade: SubmissionGrade) -> dict:
    """Gradescope autograder ``results.json``: one test per check."""
    tests = []
    for exercise in grade.exercises:
        for check in exercise.checks:
            output = (
                check.clause
                if check.passed
                else f"{check.message}\n({check.clause})"
                if check.clause
                else check.message
            )
            tests.append(
                {
                    "name": f"{exercise.title}: {check.id}",
                    "score": check.points,
                    "max_score": check.max_points,
                    "status": "passed" if check.passed else "failed",
                    "output": output,
                    "visibility": "visible",
                }
            )
    notes = [isolation_text(grade.isolation)] + ([grade.error] if grade.error else []) + grade.notes
    notes += [f"{e.title}: {n}" for e in grade.exercises for n in e.notes]
    return {
        "score": grade.score,
        "execution_time": round(grade.seconds),
        "output": "\n".join(notes),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _columns(grades: list[SubmissionGrade]) -> list[str]:
    columns: dict[str, None] = {}
    for grade in grades:
        columns.update(dict.fromkeys(e.id for e in grade.exercises))
    return list(columns)


def write_class(grades: list[SubmissionGrade], out: Path, title: str) -> None:
    """grades.csv, junit.xml and index.html over ``grades`` (one row/suite per submission)."""
    out.mkdir(parents=True, exist_ok=True)
    columns = _columns(grades)
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *columns, "total", "max_total", "error", "isolation"])
        for g in grades:
            scores = {e.id: _fmt(e.score) for e in g.exercises}
            totals = [_fmt(g.score), _fmt(g.max_score), g.error or "", g.isolation]
            writer.writerow([g.name, *(scores.get(c, "") for c in columns), *totals])
    (out / "junit.xml").write_text(junit(grades))
    (out / "index.html").write_text(_page(title, _class_body(grades, columns)))


def junit(grades: list[SubmissionGrade]) -> str:
    """JUnit XML: a testsuite per submission, a testcase per check."""
    root = ET.Element("testsuites", name="sdverify grade")
    for g in grades:
        checks = [(e, c) for e in g.exercises for c in e.checks]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=g.name,
            tests=str(len(checks)),
            failures=str(sum(not c.passed for _, c in checks)),
            errors=str(int(g.error is not None)),
            time=f"{g.seconds:.2f}",
        )
        ET.SubElement(ET.SubElement(suite, "properties"), "property", name="isolation", value=g.isolation)
        if g.error:
            ET.SubElement(ET.SubElement(suite, "testcase", classname=g.name, name="grading"), "error", message=g.error)
        for exercise, check in checks:
            case = ET.SubElement(suite, "testcase", classname=f"{g.name}.{exercise.id}", name=check.id)
            if not check.passed:
                ET.SubElement(case, "failure", message=check.message).text = check.clause
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _exercise_html(e: ExerciseGrade) -> str:
    rows = "".join(
        f"<tr><td class='{'pass' if c.passed else 'fail'}'>{'✔' if c.passed else '✘'}</td>"
        f"<td>{html.escape(c.id)}</td><td>{html.escape(c.label())}</td>"
        f"<td>{html.escape(c.clause)}"
        f"{'' if c.passed else '<pre class=fail>' + html.escape(c.message) + '</pre>'}</td></tr>"
        for c in e.checks
    )
    notes = "".join(f"<li class='note'>{html.escape(n)}</li>" for n in e.notes)
    return (
        f"<h2>{html.escape(e.title)} — {_fmt(e.score)}/{_fmt(e.max_score)}</h2>"
        f"{'<ul>' + notes + '</ul>' if notes else ''}"
        f"<table><tr><th></th><th>check</th><th>points</th><th>feedback</th></tr>{rows}</table>"
    )


def _submission_body(g: SubmissionGrade) -> str:
    parts = [
        f"<p>{html.escape(g.kind)} <code>{html.escape(g.path)}</code>, graded in {g.seconds:.1f} s</p>",
        f"<p class='isolation'>{html.escape(isolation_text(g.isolation))}</p>",
    ]
    if g.error:
        parts.append(f"<p class='fail'>{html.escape(g.error)}</p>")
    if g.image:
        parts.append(f"<img class='full' src='{html.escape(g.image)}' alt='generated image'>")
    if g.timings:
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.3f} s</td></tr>" for k, v in g.timings.items())
        parts.append(f"<h2>Stage timings (as the notebook measured them)</h2><table>{rows}</table>")
    if g.notes:
        parts.append(
            "<h2>Notes</h2><ul>"
            + "".join(f"<li class='note'><pre>{html.escape(n)}</pre></li>" for n in g.notes)
            + "</ul>"
        )
    parts += [_exercise_html(e) for e in g.exercises]
    return "".join(parts)


def _class_body(grades: list[SubmissionGrade], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for g in grades:
        link = f"submissions/{html.escape(g.name)}/"
        scores = {e.id: f"{_fmt(e.score)}/{_fmt(e.max_score)}" for e in g.exercises}
        image = f"<img class='thumb' src='{link}{html.escape(g.image)}' alt=''>" if g.image else ""
        cells = "".join(f"<td>{scores.get(c, '')}</td>" for c in columns)
        error = f"<br><span class='fail'>{html.escape(g.error)}</span>" if g.error else ""
        rows.append(
            f"<tr><td><a href='{link}report.html'>{html.escape(g.name)}</a>{error}</td><td>{image}</td>{cells}"
            f"<td><b>{_fmt(g.score)}/{_fmt(g.max_score)}</b></td>"
            f"<td>{'<br>'.join(f'{html.escape(k)} {v:.2f} s' for k, v in g.timings.items())}</td></tr>"
        )
    levels = "; ".join(isolation_text(level) for level in sorted({g.isolation for g in grades}))
    return (
        f"<p>{len(grades)} submission(s)</p><p class='isolation'>{html.escape(levels)}</p>"
        f"<table><tr><th>student</th><th>image</th>{head}<th>total</th>"
        f"<th>stage timings</th></tr>{''.join(rows)}</table>"
    )
