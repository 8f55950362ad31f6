"""Outputs of ``sdverify grade``: grades.csv, Gradescope results.json, JUnit XML, HTML.

Layout under ``--out``::

    grades.csv  junit.xml  index.html  summary.json  score_distribution.png
    submissions/<name>/grade.json     (ours: resume + every report is built from it)
    submissions/<name>/results.json   (Gradescope)
    submissions/<name>/report.html    (+ image.png, executed.ipynb for notebooks)

Every string that came from a submission passes through ``sdverify.sanitise`` for its
format: a notebook's error message is data, never markup, a formula or a terminal sequence,
and junit.xml always parses.  Every format names the isolation level student code ran under.
The class files list students by name, so the same grades give the same bytes however
they were batched (one run, or shards merged).  The pages load nothing from the network.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from sdverify.grading.gradescope import to_gradescope
from sdverify.grading.model import SubmissionGrade
from sdverify.grading.render import CLASS_JUNIT, html_page, to_html, to_junit
from sdverify.isolation import describe as isolation_text
from sdverify.notebooks import analytics
from sdverify.notebooks.lms import ROSTER_COLUMNS, LmsExport
from sdverify.notebooks.submissions import Skipped
from sdverify.sanitise import csv_cell
from sdverify.sanitise import html as escape

# Click a header of a sortable table to sort by that column (again: the other way).
_SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    if (!th.dataset.type) return;
    th.addEventListener("click", function () {
      var numeric = th.dataset.type === "num", body = table.tBodies[0];
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      var key = function (row) {
        var cell = row.cells[col], v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent.trim();
        return numeric ? (v === "" || isNaN(+v) ? -Infinity : +v) : v.toLowerCase();
      };
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) { var x = key(a), y = key(b); return (x < y ? -1 : x > y ? 1 : 0) * dir; });
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""
SUMMARY = "summary.json"
PLOT = "score_distribution.png"


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


GRADE_FILES = ("grade.json", "results.json", "report.html")


def write_submission(grade: SubmissionGrade, folder: Path) -> None:
    """grade.json, Gradescope results.json and report.html of one submission, each written
    atomically (a reader, or a batch killed mid-write, never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = (json.dumps(grade.to_dict(), indent=1), json.dumps(to_gradescope(grade), indent=1), to_html(grade))
    for name, text in zip(GRADE_FILES, texts, strict=True):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(folder / name)


def _columns(grades: list[SubmissionGrade]) -> list[str]:
    columns: dict[str, None] = {}
    for grade in grades:
        columns.update(dict.fromkeys(e.id for e in grade.exercises))
    return list(columns)


def write_class(
    grades: list[SubmissionGrade],
    out: Path,
    title: str,
    shard: tuple[int, int] | None = None,
    lms: LmsExport | None = None,
    skipped: Sequence[Skipped] = (),
) -> None:
    """grades.csv, junit.xml, summary.json (+ its plot) and index.html over ``grades`` (one
    row/suite per submission, by name); ``shard``: the ``(K, N)`` share these grades are;
    with ``lms``, the roster's columns in grades.csv and its exports (sdverify/notebooks/lms.py);
    ``skipped``: the files that are not submissions, listed with their reasons."""
    out.mkdir(parents=True, exist_ok=True)
    grades = sorted(grades, key=lambda g: g.name)
    (out / "grades.csv").write_text(grades_csv(grades, lms), encoding="utf-8", newline="")
    (out / "junit.xml").write_text(to_junit(grades, CLASS_JUNIT), encoding="utf-8")
    summary = analytics.summary(grades, title, shard, skipped)
    (out / SUMMARY).write_text(json.dumps(summary, indent=1) + "\n")
    analytics.plot_distribution(summary, out / PLOT)
    page = html_page(title, _class_body(grades, _columns(grades), summary), script=_SORT_JS)
    (out / "index.html").write_text(page, encoding="utf-8")
    if lms:
        lms.write(grades, title)


def grades_csv(grades: list[SubmissionGrade], lms: LmsExport | None = None) -> str:
    """grades.csv: a row per submission (its name and the file it was, as found), a score column
    per exercise; every text cell ``csv_cell``-safe (no formula, no control character)."""
    columns = _columns(grades)
    roster = lms.columns(grades) if lms else [[] for _ in grades]
    text = io.StringIO()
    writer = csv.writer(text)
    extra = list(ROSTER_COLUMNS) if lms else []
    writer.writerow(["student", "file", *columns, "total", "max_total", "error", "isolation", *extra])
    for g, ids in zip(grades, roster, strict=True):
        scores = {e.id: _fmt(e.score) for e in g.exercises}
        totals = [_fmt(g.score), _fmt(g.max_score), csv_cell(g.error or ""), csv_cell(g.isolation)]
        writer.writerow([csv_cell(g.name), csv_cell(g.file), *(scores.get(c, "") for c in columns), *totals, *ids])
    return text.getvalue()


def _link(name: str) -> str:
    return f"<a href='submissions/{escape(name)}/report.html'>{escape(name)}</a>"


def _table(heads: list[tuple[str, str]], rows: list[str], sortable: bool = False) -> str:
    """``heads``: (label, sort type: "num", "text" or "" for none)."""
    head = "".join(f"<th{f' data-type={kind}' if kind and sortable else ''}>{escape(h)}</th>" for h, kind in heads)
    return (
        f"<table{' class=sortable' if sortable else ''}><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _rate(rate: float | None) -> str:
    return "" if rate is None else f"{100 * rate:.0f}%"


def _class_body(grades: list[SubmissionGrade], columns: list[str], summary: dict) -> str:
    rows = []
    for g in grades:
        folder = f"submissions/{escape(g.name)}/"
        scores = {e.id: e for e in g.exercises}
        image = f"<img class='thumb' src='{folder}{escape(g.image)}' alt=''>" if g.image else ""
        cells = "".join(
            f"<td data-v='{_fmt(scores[c].score)}'>{_fmt(scores[c].score)}/{_fmt(scores[c].max_score)}</td>"
            if c in scores
            else "<td data-v=''></td>"
            for c in columns
        )
        error = f"<br><span class='fail'>{escape(g.error)}</span>" if g.error else ""
        rows.append(
            f"<tr><td data-v='{escape(g.name)}'>{_link(g.name)}{error}</td><td>{image}</td>{cells}"
            f"<td data-v='{_fmt(g.score)}'><b>{_fmt(g.score)}/{_fmt(g.max_score)}</b></td>"
            f"<td class='t' data-v='{g.seconds:.2f}'>{g.seconds:.1f}</td>"
            f"<td class='t'>{'<br>'.join(f'{escape(k)} {v:.2f} s' for k, v in g.timings.items())}</td></tr>"
        )
    students = _table(
        [
            ("student", "text"),
            ("image", ""),
            *((c, "num") for c in columns),
            ("total", "num"),
            ("seconds", "num"),
            ("stage timings", ""),
        ],
        rows,
        sortable=True,
    )
    levels = "; ".join(f"{isolation_text(level)}: {n}" for level, n in summary["isolation"].items())
    return "".join(
        [
            f"<p>{len(grades)} submission(s)</p><p class='isolation'>{escape(levels)}</p>",
            _distribution_html(summary),
            f"<h2>Students</h2><p>Click a column header to sort.</p>{students}",
            _rates_html(summary),
            _mistakes_html(summary),
            _slowest_html(summary),
            _skipped_html(summary),
        ]
    )


def _distribution_html(summary: dict) -> str:
    score = summary["score"]
    maxima = "/".join(_fmt(m) for m in score["max_points"])
    facts = (
        f"mean {_fmt(score['mean'])}, median {_fmt(score['median'])}, min {_fmt(score['min'])}, "
        f"max {_fmt(score['max'])} of {maxima}; full marks: {score['full_marks']}"
        if summary["students"]
        else "no submissions"
    )
    return f"<h2>Score distribution</h2><img src='{PLOT}' alt='histogram of the scores'><p>{escape(facts)}</p>"


def _rates_html(summary: dict) -> str:
    exercises = [
        f"<tr><td>{escape(e['id'])}</td><td>{escape(e['title'])}</td><td>{_fmt(e['mean'])}/"
        f"{_fmt(e['max_points'])}</td><td>{e['full_marks']}/{e['graded']}</td>"
        f"<td data-v='{e['pass_rate']}'>{_rate(e['pass_rate'])}</td></tr>"
        for e in summary["exercises"]
    ]
    checks = [
        f"<tr><td>{escape(c['exercise'])}</td><td>{escape(c['check'])}</td><td>{_fmt(c['max_points'])}</td>"
        f"<td>{c['passed']}/{c['graded']}</td><td data-v='{c['pass_rate']}'>{_rate(c['pass_rate'])}</td></tr>"
        for c in summary["checks"]
    ]
    return (
        "<h2>Exercises</h2>"
        + _table([("exercise", ""), ("title", ""), ("mean", ""), ("full marks", ""), ("pass rate", "")], exercises)
        + "<h2>Checks</h2>"
        + _table(
            [("exercise", "text"), ("check", "text"), ("points", "num"), ("passed", ""), ("pass rate", "num")],
            checks,
            sortable=True,
        )
    )


def _mistakes_html(summary: dict) -> str:
    if not summary["mistakes"]:
        return "<h2>Named mistakes</h2><p>No failed check named a known mistake.</p>"
    rows = [
        f"<tr><td><code>{escape(m['id'])}</code></td><td>{m['count']}</td>"
        f"<td>{', '.join(_link(n) for n in m['students'])}</td><td>{escape(', '.join(m['checks']))}</td>"
        f"<td>{escape(m['example'])}</td></tr>"
        for m in summary["mistakes"]
    ]
    heads = [("mistake", ""), ("students", ""), ("who", ""), ("where", ""), ("feedback (first student)", "")]
    return "<h2>Named mistakes</h2>" + _table(heads, rows)


def _slowest_html(summary: dict) -> str:
    rows = [
        f"<tr><td>{_link(s['student'])}</td><td>{s['seconds']:.1f}</td>"
        f"<td>{'<br>'.join(f'{escape(k)} {v:.2f} s' for k, v in s['timings'].items())}</td></tr>"
        for s in summary["slowest"]
    ]
    table = _table([("student", ""), ("seconds", ""), ("stage timings", "")], rows)
    return f"<section id='slowest'><h2>Slowest submissions</h2>{table}</section>"


def _skipped_html(summary: dict) -> str:
    rows = [
        f"<tr><td><code>{escape(s['file'])}</code></td><td>{escape(s['reason'])}</td></tr>" for s in summary["skipped"]
    ]
    table = _table([("file", ""), ("why it is not graded", "")], rows) if rows else "<p>None: every file is graded.</p>"
    return f"<section id='skipped'><h2>Files not graded</h2>{table}</section>"
