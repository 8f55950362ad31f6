"""``sdverify grade --roster --canvas-csv``: roster ids in grades.csv, Canvas' gradebook import CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from synthetic_class import module_grade

from sdverify.cli import main
from sdverify.grading.model import CheckEntry, ExerciseGrade, SubmissionGrade
from sdverify.notebooks.lms import CANVAS_HEADER, CANVAS_POINTS_ROW, LmsExport, Roster, Student, load_roster
from sdverify.notebooks.reports import write_class


def _grade(path: str, score: float, max_score: float = 30.0) -> SubmissionGrade:
    check = CheckEntry("x", "ex1", score == max_score, score, max_score, "")
    return SubmissionGrade(Path(path).stem, path, "notebook", [ExerciseGrade("ex1", "Exercise 1", [check])])


def _roster(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_roster_reads_required_and_optional_columns_whatever_their_case(tmp_path):
    path = _roster(tmp_path, "\ufeffFile, Student_ID ,Email,Name\nalice.ipynb,S1,alice@uni.edu,Alice A\n\nbob,S2,,\n")
    roster = load_roster(path)
    assert roster.students == (
        Student("alice.ipynb", "S1", "alice@uni.edu", "Alice A"),
        Student("bob", "S2", ""),
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "file,email\na.ipynb,a@x\n",
            "no column(s) ['student_id']; expected a header with ['file', 'student_id', 'email']",
        ),
        ("file,student_id,email\n,S1,a@x\n", "line 2: empty file"),
        ("file,student_id,email\na.ipynb,,\n", "line 2: 'a.ipynb' has neither student_id nor email"),
        ("file,student_id,email\na.ipynb,S1,\na.ipynb,S2,\n", "files listed more than once: ['a.ipynb']"),
    ],
)
def test_bad_rosters_are_rejected_with_the_row_and_the_fix(tmp_path, text, words):
    with pytest.raises(ValueError) as info:
        load_roster(_roster(tmp_path, text))
    assert words in str(info.value)


def test_a_roster_row_names_a_file_by_name_stem_or_path_end_and_only_unambiguously():
    roster = Roster(
        (
            Student("alice.ipynb", "S1", ""),
            Student("bob", "S2", ""),
            Student("carol/lesson.ipynb", "S3", ""),
            Student("lesson.ipynb", "S4", ""),  # names carol's and dan's: no one gets it
        )
    )
    grades = [
        _grade("/subs/alice.ipynb", 1),
        _grade("/subs/bob.py", 1),
        _grade("/subs/carol/lesson.ipynb", 1),  # named by two rows
        _grade("/subs/dan/lesson.ipynb", 1),
        _grade("/subs/erin.ipynb", 1),
    ]
    assert [s and s.student_id for s in roster.match(grades)] == ["S1", "S2", None, None, None]
    problems = roster.problems(grades)
    assert "/subs/carol/lesson.ipynb: several roster rows name it: ['carol/lesson.ipynb', 'lesson.ipynb']" in problems
    assert "/subs/erin.ipynb: no roster row names it" in problems
    assert any("file 'lesson.ipynb' names several submissions" in p for p in problems)


def test_grades_csv_gains_the_ids_and_canvas_gets_its_import_format(tmp_path):
    roster = load_roster(
        _roster(
            tmp_path, "file,student_id,email,name,section\nalice.ipynb,S1,alice@uni.edu,Alice A,L01\nbob,S2,b@u,,\n"
        )
    )
    grades = [_grade("/subs/alice.ipynb", 27.5), _grade("/subs/bob.py", 30), _grade("/subs/zed.py", 3, 37)]
    canvas = tmp_path / "canvas.csv"
    write_class(grades, tmp_path / "out", "Lesson 3", lms=LmsExport(roster, canvas))
    with open(tmp_path / "out" / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["total"], r["student_id"], r["email"]) for r in rows] == [
        ("alice", "27.5", "S1", "alice@uni.edu"),
        ("bob", "30", "S2", "b@u"),
        ("zed", "3", "", ""),
    ]
    with open(canvas, newline="") as f:
        table = list(csv.reader(f))
    assert table == [
        [*CANVAS_HEADER, "Lesson 3"],
        [CANVAS_POINTS_ROW, "", "", "", "", "30"],  # the exported rows' (zed is not in the roster)
        ["Alice A", "", "S1", "alice@uni.edu", "L01", "27.5"],
        ["bob", "", "S2", "b@u", "", "30"],
    ]


def test_without_a_roster_grades_csv_is_unchanged(tmp_path):
    write_class([_grade("/subs/alice.ipynb", 1)], tmp_path, "Lesson")
    assert (tmp_path / "grades.csv").read_text().splitlines()[0] == "student,file,ex1,total,max_total,error,isolation"
    assert not list(tmp_path.glob("*canvas*"))


def test_canvas_without_a_roster_is_a_usage_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path), "--canvas-csv", str(tmp_path / "c.csv")]) == 2
    assert "--canvas-csv needs --roster" in capsys.readouterr().err


def test_grade_cli_exports_for_canvas_and_warns_about_unmatched_files(monkeypatch, tmp_path, capsys):
    from sdverify import checker

    def fake_check_submission(target, **options):
        passed = Path(target).stem == "alice"
        return module_grade(
            target, [CheckEntry("t.reference", "tokenize", passed, float(passed), 1.0, "")], seconds=0.1
        )

    monkeypatch.setattr(checker, "check_submission", fake_check_submission)
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("alice", "bob"):
        (subs / f"{name}.py").write_text("x = 1\n")
    roster = _roster(tmp_path, "file,student_id,email\nalice.py,S1,a@u\n")
    canvas = tmp_path / "canvas.csv"
    argv = ["grade", str(subs), "--out", str(tmp_path / "out"), "--workers", "1", "--sandbox", "process", "--quiet"]
    assert main([*argv, "--roster", str(roster), "--canvas-csv", str(canvas), "--canvas-assignment", "Lab (12)"]) == 0
    captured = capsys.readouterr()
    assert f"Canvas gradebook import: {canvas}" in captured.out
    assert f"warning: roster: {(subs / 'bob.py').resolve()}: no roster row names it" in captured.err
    rows = list(csv.reader(canvas.open()))
    assert rows[0][-1] == "Lab (12)" and rows[2] == ["alice", "", "S1", "a@u", "", "1"] and len(rows) == 3
