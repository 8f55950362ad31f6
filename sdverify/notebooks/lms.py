"""Exports of a graded batch for the course's gradebook: roster ids and Canvas' import CSV.

``grades.csv`` stays the canonical file: one row per submission, named by its file.  A roster
CSV maps those files to students — columns ``file``, ``student_id``, ``email`` (``name`` and
``section`` optional) — and adds ``student_id`` and ``email`` columns to ``grades.csv``.
``file`` is a submission's file name (``alice.ipynb``), its stem (``alice``) or the end of its
path (``alice/lesson.ipynb``, when every student's file has the same name).

Canvas' gradebook import (Grades → Import) reads ``Student, ID, SIS User ID, SIS Login ID,
Section`` then one column per assignment, a ``Points Possible`` row, and one row per student,
matched by ``ID`` (Canvas' own, left empty here), ``SIS User ID`` (the roster's
``student_id``) or ``SIS Login ID`` (its ``email``).  A new column name creates an assignment;
an existing assignment is updated when the column is named as Canvas exports it
(``Lesson 3 (12345)``).  Scores are the grades' own totals, never recomputed.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sdverify.errors import UsageError
from sdverify.grading.model import SubmissionGrade
from sdverify.sanitise import csv_cell

_REQUIRED = ("file", "student_id", "email")
_OPTIONAL = ("name", "section")
ROSTER_COLUMNS = ("student_id", "email")  # what grades.csv gains
CANVAS_HEADER = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_POINTS_ROW = "    Points Possible"  # Canvas' own spelling, leading spaces included


@dataclass(frozen=True)
class Student:
    file: str
    student_id: str
    email: str
    name: str = ""
    section: str = ""

    def names(self, path: Path) -> bool:
        """Whether this roster row names the submission at ``path``."""
        want = PurePosixPath(self.file.replace("\\", "/")).parts
        if path.parts[-len(want) :] == want:
            return True
        return len(want) == 1 and "." not in self.file and path.stem == self.file


@dataclass(frozen=True)
class Roster:
    students: tuple[Student, ...]
    source: str = "roster"

    def match(self, grades: list[SubmissionGrade]) -> list[Student | None]:
        """Each grade's student: the roster row that names its file and no other (else None)."""
        rows = self._rows(grades)
        uses = Counter(s for found in rows for s in found)
        return [found[0] if len(found) == 1 and uses[found[0]] == 1 else None for found in rows]

    def problems(self, grades: list[SubmissionGrade]) -> list[str]:
        """Why grades stay without a student: no row names them, several do, or a row names several."""
        problems = []
        rows = self._rows(grades)
        for grade, found in zip(grades, rows):
            if len(found) != 1:
                what = (
                    "no roster row names it" if not found else f"several roster rows name it: {[s.file for s in found]}"
                )
                problems.append(f"{grade.path}: {what}")
        for student, n in Counter(s for found in rows for s in found).items():
            if n > 1:
                named = [g.path for g, found in zip(grades, rows) if student in found]
                problems.append(f"{self.source}: file {student.file!r} names several submissions: {named}")
        return problems

    def _rows(self, grades: list[SubmissionGrade]) -> list[list[Student]]:
        return [[s for s in self.students if s.names(Path(g.path))] for g in grades]


def load_roster(path: str | Path) -> Roster:
    """Read and validate a roster CSV (UTF-8, an Excel BOM allowed); errors name the row and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"roster {path} not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [(h or "").strip().lower() for h in reader.fieldnames or []]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise UsageError(
                f"roster {path}: no column(s) {missing}; expected a header with {list(_REQUIRED)} "
                f"(and optionally {list(_OPTIONAL)}), got {header}"
            )
        students = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str)}
            if not any(row.values()):
                continue
            if not row["file"]:
                raise UsageError(f"roster {path}, line {line}: empty file; expected the submission's file name")
            if not row["student_id"] and not row["email"]:
                raise UsageError(f"roster {path}, line {line}: {row['file']!r} has neither student_id nor email")
            students.append(Student(**{k: row.get(k, "") for k in (*_REQUIRED, *_OPTIONAL)}))
    files = [s.file for s in students]
    repeated = sorted({f for f in files if files.count(f) > 1})
    if repeated:
        raise UsageError(f"roster {path}: files listed more than once: {repeated}")
    return Roster(tuple(students), str(path))


@dataclass(frozen=True)
class LmsExport:
    """What ``write_class`` adds to ``grades.csv`` and writes beside it."""

    roster: Roster
    canvas_csv: Path | None = None
    canvas_assignment: str | None = None  # column name in Canvas (default: the spec's title)

    def columns(self, grades: list[SubmissionGrade]) -> list[list[str]]:
        """Each grade's ``ROSTER_COLUMNS`` cells (empty where no single roster row names it)."""
        return [[csv_cell(s.student_id), csv_cell(s.email)] if s else ["", ""] for s in self.roster.match(grades)]

    def write(self, grades: list[SubmissionGrade], title: str) -> None:
        """Canvas' gradebook CSV of the matched grades, if asked for."""
        if self.canvas_csv is None:
            return
        self.canvas_csv.parent.mkdir(parents=True, exist_ok=True)
        self.canvas_csv.write_text(self.canvas_text(grades, title), encoding="utf-8", newline="")

    def canvas_text(self, grades: list[SubmissionGrade], title: str) -> str:
        """Canvas' gradebook CSV: every text cell ``csv_cell``-safe (a name students chose included)."""
        rows = [(g, s) for g, s in zip(grades, self.roster.match(grades)) if s is not None]
        points = max((g.max_score for g, _ in rows), default=0.0)
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow([*CANVAS_HEADER, csv_cell(self.canvas_assignment or title)])
        writer.writerow([CANVAS_POINTS_ROW, "", "", "", "", f"{points:g}"])
        for g, s in rows:
            cells = [s.name or g.name, "", s.student_id, s.email, s.section]
            writer.writerow([*map(csv_cell, cells), f"{g.score:g}"])
        return text.getvalue()
