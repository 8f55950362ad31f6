"""Which files a batch grades, what it calls them, and that a hostile folder cannot stop it or
break its class files (issue 21: symlinks, dot-files, colliding names, control characters).

The checker is replaced here by one that reports what a real child reports for a module that
raises at import (tests/test_grade_batch_robustness.py grades it for real, in the slow tier)."""

from __future__ import annotations

import csv
import json
import os
import re
import xml.etree.ElementTree as ET
from itertools import permutations
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from synthetic_class import module_grade

from sdverify import checker
from sdverify.checker.submission import resolve_target
from sdverify.cli import main
from sdverify.notebooks.submissions import NAME_CHARS, Entry, survey, unique_names

KIT_REFERENCE = Path(checker.__file__).resolve().parents[1] / "reference.py"
# What a module raising RuntimeError(...) at import reports: the raw message, control characters and all.
HOSTILE_ERROR = "raised RuntimeError: nul\x00 clear\x1b[2J title\x1b]0;pwned\x07 (at a b.py:1, in <module>)"
TERMINAL_SEQUENCE = re.compile("[\x00\x07\x1b]")


def _hostile_folder(root: Path) -> Path:
    subs = root / "subs"
    (subs / ".git").mkdir(parents=True)
    (subs / ".git" / "config").write_text("[core]\n")
    (subs / "a b.py").write_text("raise RuntimeError('nul\\x00 clear\\x1b[2J title\\x1b]0;pwned\\x07')\n")
    os.mkfifo(subs / "a_b.py")  # collides with "a b.py"; not a regular file (reading it would block)
    (subs / "b.py").symlink_to("/etc/passwd")
    (subs / "carol.py").symlink_to(KIT_REFERENCE)
    (subs / ".dot.py").write_text("def tokenize(): ...\n")
    (subs / "notes.txt").write_text("not a submission\n")
    return subs


def test_a_hostile_folder_is_graded_to_the_end_with_well_formed_class_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    graded = []

    def fake_check_submission(target, **options):
        graded.append(Path(target).name)
        return module_grade(target, [], HOSTILE_ERROR, 0.5)

    monkeypatch.setattr(checker, "check_submission", fake_check_submission)
    subs, out = _hostile_folder(tmp_path), tmp_path / "out"
    argv = ["grade", str(subs), "--out", str(out), "--workers", "1", "--quiet", "--sandbox", "process"]
    assert main(argv) == 0
    shown = capsys.readouterr()
    assert graded == ["a b.py"]  # the only file that runs; the others are refused before
    assert not TERMINAL_SEQUENCE.search(shown.out + shown.err)
    assert "\\x1b[2J" in shown.out and "notes.txt: not a .ipynb or .py file" in shown.err

    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["a b.py", "a_b.py", "b.py", "carol.py"]
    assert rows["b.py"]["student"] == "b" and rows["carol.py"]["student"] == "carol"  # not "reference", not "passwd"
    assert rows["a b.py"]["student"] != rows["a_b.py"]["student"]
    assert all(re.fullmatch(r"a_b-[0-9a-f]{8}", rows[f]["student"]) for f in ("a b.py", "a_b.py"))
    assert all(row["total"] == "0" and row["error"] for row in rows.values())
    assert "symbolic link (to /etc/passwd)" in rows["b.py"]["error"]
    assert "symbolic link" in rows["carol.py"]["error"] and "not a regular file" in rows["a_b.py"]["error"]
    assert not TERMINAL_SEQUENCE.search((out / "grades.csv").read_text(encoding="utf-8"))

    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")  # parses: well-formed
    assert sorted(s.get("name", "") for s in suites) == sorted(row["student"] for row in rows.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["students"] == 4 and len(summary["errors"]) == 4
    expected_skipped = [".dot.py", ".git/", "notes.txt"]
    assert [s["file"] for s in summary["skipped"]] == expected_skipped
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Files not graded" in page and all(f"<code>{s}</code>" in page for s in expected_skipped)
    assert not TERMINAL_SEQUENCE.search(page) and "\\x1b]0;pwned\\x07" in page

    assert main(argv) == 0  # again: the refused files are refused again, the graded one is up to date
    assert graded == ["a b.py"] and "3 refused" in capsys.readouterr().err


def test_subfolders_name_their_files_and_a_file_named_alone_of_another_kind_is_its_students_error(tmp_path: Path):
    for student in ("alice", "bob"):
        (tmp_path / student).mkdir()
        (tmp_path / student / "lesson.ipynb").write_text("{}")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "alice")
    found = survey([tmp_path])
    assert [e.file for e in found.submissions] == ["alice/lesson.ipynb", "bob/lesson.ipynb"]
    assert [(s.file, s.reason) for s in found.skipped] == [
        ("__pycache__/", "a Python cache: not searched"),
        ("linked", "a symbolic link: not followed"),
    ]
    [alone] = survey([tmp_path / "alice" / "lesson.ipynb", tmp_path / "alice"]).submissions  # the same file: once
    assert alone.file == "lesson.ipynb" and alone.refusal is None
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        survey([tmp_path / "missing"])


@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=6, unique=True), st.randoms())
def test_names_are_unique_safe_and_independent_of_the_order(stems: list[str], random):
    stems = [s.replace("/", "_").replace("\x00", "_") for s in stems]
    entries = list({f"{s}.py": Entry(Path("/class", f"{s}.py"), f"{s}.py") for s in stems}.values())
    names = dict(zip(entries, unique_names(entries)))
    assert len(set(names.values())) == len(entries)
    for name in names.values():
        assert re.fullmatch(r"[\w.-]+", name) and not name.startswith(("-", ".", "=", "+", "@"))
        assert len(name) <= NAME_CHARS + 1 + 64 * 2
    shuffled = random.sample(entries, len(entries))
    assert dict(zip(shuffled, unique_names(shuffled))) == names


def test_a_file_named_like_a_hashed_name_cannot_take_it():
    files = ["a b.py", "a_b.py"]
    first = unique_names([Entry(Path("/c", f), f) for f in files])
    impostor = f"{first[0]}.py"  # someone names their file after the first student's name
    named = [
        dict(zip(order, unique_names([Entry(Path("/c", f), f) for f in order])))
        for order in permutations([*files, impostor])
    ]
    assert all(n == named[0] for n in named) and len(set(named[0].values())) == 3
    assert named[0][impostor] != first[0]


def test_only_check_without_a_target_is_exempt_from_delegation(tmp_path: Path):
    link = tmp_path / "mine.py"
    link.symlink_to(KIT_REFERENCE)
    assert resolve_target(None).bundled and resolve_target("").bundled
    for named in ("sdverify.reference", str(KIT_REFERENCE), str(link)):
        assert not resolve_target(named).bundled, named


def test_gradescope_grades_a_link_to_the_kits_reference_0_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setattr(checker, "check_submission", lambda target, **options: pytest.fail("a link must not run"))
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "lesson.py").symlink_to(KIT_REFERENCE)
    assert main(["autograder", "run", "--root", str(tmp_path), "--sandbox", "process"]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and "lesson.py is a symbolic link" in json.dumps(results)
