"""Any text a submission controls goes through every writer and parses back: junit.xml (both
graders), grades.csv and Canvas' CSV, the HTML pages, summary.json and the terminal (issue 21)."""

from __future__ import annotations

import csv
import io
import json
import re
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from sdverify.cli import _print_grades
from sdverify.grading.model import CheckEntry, ExerciseGrade, SubmissionGrade
from sdverify.grading.render import CLASS_JUNIT, html_page, to_html, to_junit, to_text
from sdverify.notebooks import analytics
from sdverify.notebooks.lms import LmsExport, Roster, Student
from sdverify.notebooks.reports import _class_body, grades_csv
from sdverify.sanitise import FORMULA_PREFIXES, csv_cell, printable

HOSTILE = "nul\x00 clear\x1b[2J title\x1b]0;pwned\x07 <b>&amp;</b> =SUM(A1) \r\n\udcff\ufffe"
TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _grade(text: str) -> SubmissionGrade:
    check = CheckEntry("ex1.check", "ex1", False, 0.0, 1.0, text, text, mistake=text)
    exercise = ExerciseGrade("ex1", text, [check], notes=[text])
    return SubmissionGrade(text, text, "module", [exercise], notes=[text], error=text, isolation=text, file=text)


def _survives(text: str, written: str) -> bool:
    """Every printable character of ``text`` is in ``written``, in order (escapes only add)."""
    rest = iter(written)
    return all(ch in rest for ch in text if ch.isprintable())


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def _parsed(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


@given(st.text())
@example(HOSTILE)
def test_junit_always_parses_and_keeps_the_printable_text(text: str):
    first_line = (text.splitlines() or [""])[0]  # a failure's message: the first line (the text: all of it)
    for document in (to_junit([_grade(text)], CLASS_JUNIT), to_junit(_grade(text))):
        root = ET.fromstring(document)
        failure = root.find(".//failure")
        assert failure is not None and failure.get("message") == printable(first_line)
        assert _survives(text, "".join(root.itertext()))


@given(st.text())
@example(HOSTILE)
def test_csv_cells_are_never_formulas_and_read_back(text: str):
    grade = _grade(text)
    grade.path = "/class/alice.py"  # named by the roster row (whose cells students may choose)
    lms = LmsExport(Roster((Student("alice.py", text, text, text, text),)), canvas_assignment=text)
    for document in (grades_csv([grade], lms), lms.canvas_text([grade], text)):
        rows = list(csv.reader(io.StringIO(document, newline="")))
        assert len(rows) >= 2 and len({len(r) for r in rows}) == 1
        cells = [cell for row in rows for cell in row]
        assert csv_cell(text) in cells
        assert not [c for c in cells if c.startswith(FORMULA_PREFIXES) or TERMINAL_UNSAFE.search(c)]
        assert _survives(text, document)


@given(st.text())
@example(HOSTILE)
def test_html_pages_show_the_text_and_gain_no_markup(text: str):
    plain = _grade("x")
    summary = analytics.summary([_grade(text)], text, skipped=[(text, text)])
    for page, same_page in (
        (to_html(_grade(text)), to_html(plain)),
        (
            html_page(text, _class_body([_grade(text)], ["ex1"], summary)),
            html_page("x", _class_body([plain], ["ex1"], analytics.summary([plain], "x", skipped=[("x", "x")]))),
        ),
    ):
        parsed = _parsed(page)
        assert parsed.tags <= _parsed(same_page).tags  # the text added no element
        assert printable(text) in "".join(parsed.data)


@given(st.text())
@example(HOSTILE)
def test_summary_json_keeps_the_text_exactly(text: str):
    summary = analytics.summary([_grade(text)], text, skipped=[(text, text)])
    loaded = json.loads(json.dumps(summary, indent=1))
    assert loaded["errors"] == ([{"student": text, "error": text}] if text else [])  # an error is never empty
    assert loaded["skipped"] == [{"file": text, "reason": text}] and loaded["title"] == text


@given(st.text())
@example(HOSTILE)
def test_terminal_text_has_no_control_sequence(text: str):
    shown = io.StringIO()
    with redirect_stdout(shown):
        _print_grades([_grade(text)], Path("out"))
        print(printable(to_text(_grade(text))))
    assert not TERMINAL_UNSAFE.search(shown.getvalue())
    assert printable(text) in shown.getvalue() and _survives(text, shown.getvalue())
