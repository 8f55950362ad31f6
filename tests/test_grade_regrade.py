"""Targeted regrades: stored results are kept per exercise (`--only`, `--exercise`, a spec
edit regrades exactly what it changes), and a timeout in one exercise keeps the others' points.

Planning is tested on made-up grades, the batch options with a stand-in checker
(tests/synthetic_class.py), and the notebook path on a three-cell notebook whose checks
need no model (`stage_timings`), in a real kernel.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from synthetic_class import fake_checker, module_class

from sdverify import zoo
from sdverify.notebooks.batch import Event, Finished, NeverGraded, grade_batch
from sdverify.notebooks.exercises import CHECKS
from sdverify.notebooks.grading import ExerciseGrade, Settings, SubmissionGrade, digest, resolve_settings
from sdverify.notebooks.regrade import Job, check_exercises, check_students, plan
from sdverify.notebooks.reports import submission_dir
from sdverify.notebooks.spec import Spec, load_spec

SPEC = """title = "Three timed parts"
[lesson]
prompt = "a fox"
[[exercises]]
id = "a"
title = "Part A"
heading = '^#+.*Part A'
checks = [{ check = "stage_timings", points = 2, names = ["a_time"] }]
[[exercises]]
id = "b"
title = "Part B"
heading = '^#+.*Part B'
checks = [{ check = "stage_timings", points = 3, names = ["b_time"] }]
[[exercises]]
id = "c"
title = "Part C"
heading = '^#+.*Part C'
checks = [{ check = "stage_timings", points = 1, names = ["c_time"] }]
"""
D_PART = """[[exercises]]
id = "d"
heading = '^#+.*Part D'
checks = [{ check = "stage_timings", points = 1, names = ["d_time"] }]
"""
SETTINGS = resolve_settings(Settings(sandbox="process", call_timeout=1, timeout=120))


def _spec(tmp_path: Path, text: str) -> Spec:
    path = tmp_path / f"spec{abs(hash(text))}.toml"
    path.write_text(text)
    return load_spec(path)


def _stored(path: Path, spec: Spec) -> SubmissionGrade:
    definitions = spec.definitions()
    exercises = [ExerciseGrade(e.id, e.title, [], definition=definitions[e.id]) for e in spec.exercises]
    return SubmissionGrade("amy", str(path), "notebook", exercises, digest=digest(path, SETTINGS))


@pytest.fixture
def notebook_file(tmp_path: Path) -> Path:
    path = tmp_path / "amy.ipynb"
    path.write_text("{}")
    return path


@pytest.mark.parametrize(
    ("edit", "kept"),
    [
        (("points = 1,", "points = 4,"), {"a", "b"}),  # Part C's points
        (('names = ["b_time"]', 'names = ["b_seconds"]'), {"a", "c"}),  # a variable of Part B renamed
        (('prompt = "a fox"', 'prompt = "a cat"'), set()),  # the lesson: every check compares against it
        (("'^#+.*Part B'", "'^#+.*Part 2'"), set()),  # a heading: the sections move
        (("", D_PART), {"a", "b"}),  # a part appended: Part C's section now ends at its heading
        ((SPEC[SPEC.index('[[exercises]]\nid = "c"') :], ""), {"a"}),  # Part C removed: Part B runs to the end
    ],
    ids=["points", "variable", "lesson", "heading", "appended", "removed"],
)
def test_a_spec_edit_regrades_exactly_the_exercises_it_changes(tmp_path, notebook_file, edit, kept):
    stored = _stored(notebook_file, _spec(tmp_path, SPEC))
    edited = _spec(tmp_path, SPEC.replace(*edit) if edit[0] else SPEC + edit[1])
    job = plan(notebook_file, "amy", stored, edited, SETTINGS)
    assert isinstance(job, Job) and set(job.keep) == kept
    assert all(job.keep[x] is next(e for e in stored.exercises if e.id == x) for x in kept)


def test_an_unchanged_spec_or_a_new_title_regrades_nothing(tmp_path, notebook_file):
    spec = _spec(tmp_path, SPEC)
    stored = _stored(notebook_file, spec)
    assert plan(notebook_file, "amy", stored, spec, SETTINGS) is stored
    relabelled = plan(
        notebook_file, "amy", stored, _spec(tmp_path, SPEC.replace('"Part B"', '"Part B: noise"')), SETTINGS
    )
    assert isinstance(relabelled, SubmissionGrade) and relabelled.exercises[1].title == "Part B: noise"


def test_a_changed_file_settings_or_an_explicit_exercise_regrade(tmp_path, notebook_file):
    spec = _spec(tmp_path, SPEC)
    stored = _stored(notebook_file, spec)
    assert set(plan(notebook_file, "amy", stored, spec, SETTINGS, regrade=["b"]).keep) == {"a", "c"}
    bwrap = replace(SETTINGS, sandbox="bwrap")
    assert plan(notebook_file, "amy", stored, spec, bwrap) == Job(notebook_file, "amy")
    notebook_file.write_text('{"cells": []}')
    assert plan(notebook_file, "amy", stored, spec, SETTINGS) == Job(notebook_file, "amy")
    assert plan(notebook_file, "amy", None, spec, SETTINGS) == Job(notebook_file, "amy")


def test_a_module_is_regraded_only_for_its_own_functions(tmp_path):
    path = tmp_path / "amy.py"
    path.write_text("def tokenize(tokenizer, prompt): ...\n")
    exercises = [ExerciseGrade("tokenize", "tokenize()", []), ExerciseGrade("cfg_combine", "cfg_combine()", [])]
    stored = SubmissionGrade("amy", str(path), "module", exercises, digest=digest(path, SETTINGS))
    spec = load_spec()
    assert plan(path, "amy", stored, spec, SETTINGS) is stored
    assert plan(path, "amy", stored, _spec(tmp_path, SPEC), SETTINGS) is stored  # the spec is the notebooks'
    assert plan(path, "amy", stored, spec, SETTINGS, regrade=["ex1"]) is stored
    assert set(plan(path, "amy", stored, spec, SETTINGS, regrade=["tokenize"]).keep) == {"cfg_combine"}


def test_unknown_students_and_exercises_are_named():
    with pytest.raises(ValueError, match=r"--only: no submission named 'zed'.*: amy, bob"):
        check_students(["amy", "bob"], ["bob", "zed"])
    with pytest.raises(ValueError, match=r"--exercise: unknown 'ex9'; expected exercise ids .*\(ex1, ex2, ex3, ex4\)"):
        check_exercises(load_spec(), ["ex2", "ex9", "tokenize"])


def _batch(folder: Path, out: Path, **options) -> dict[str, SubmissionGrade]:
    grades = grade_batch([folder], out, spec=load_spec(), settings=SETTINGS, workers=1, **options)
    return {g.name: g for g in grades}


def test_only_regrades_those_students_and_keeps_the_class(tmp_path, monkeypatch):
    checked = fake_checker(monkeypatch)
    folder = module_class(tmp_path / "subs")
    out = tmp_path / "out"
    first = _batch(folder, out)
    stamps = {n: (submission_dir(out, n) / "grade.json").stat().st_mtime_ns for n in first}
    (folder / "hal.py").write_text("cfg_combine = pass\n")  # a late file, never graded
    checked.clear()
    events: list[Event] = []
    again = _batch(folder, out, only=["ben", "dan"], on_event=events.append)
    assert checked == ["ben", "dan"] and sorted(again) == sorted(first)
    untouched = [n for n in first if n not in ("ben", "dan")]
    assert all((submission_dir(out, n) / "grade.json").stat().st_mtime_ns == stamps[n] for n in untouched)
    assert NeverGraded(("hal",)) in events and Finished(graded=2, partly=0, refused=0, up_to_date=5) in events
    assert "hal" not in (out / "grades.csv").read_text() and "gus" in (out / "grades.csv").read_text()


def test_exercise_regrades_those_and_keeps_the_other_stored_results(tmp_path, monkeypatch):
    fake_checker(monkeypatch)
    folder = module_class(tmp_path / "subs")
    out = tmp_path / "out"
    first = _batch(folder, out)
    assert {e.id for g in first.values() for e in g.exercises if e.score < e.max_score} == {
        "cfg_combine",
        "decode_latents",
    }
    fake_checker(monkeypatch, corrected=True)  # a fixed checker: every function passes now
    events: list[Event] = []
    again = _batch(folder, out, exercises=["cfg_combine"], on_event=events.append)
    assert Finished(graded=7, partly=7, refused=0, up_to_date=0) in events
    for name, grade in again.items():
        now, before = ({e.id: e for e in g.exercises} for g in (grade, first[name]))
        assert now["cfg_combine"].score == now["cfg_combine"].max_score
        assert now["decode_latents"] == before["decode_latents"]  # kept as stored


def _notebook(folder: Path, *, hang_in: str) -> Path:
    """Three timed parts; the cell of part ``hang_in`` loops forever before it sets its time."""
    cells = []
    for part in "ABC":
        cells.append(new_markdown_cell(f"## Part {part}"))
        loop = "while True:\n    pass\n" if part == hang_in else ""
        cells.append(new_code_cell(f"{loop}{part.lower()}_time = 1.5"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "amy.ipynb"
    nbformat.write(new_notebook(cells=cells), str(path))
    return path


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """The variables of every `stage_timings` check the grader runs (in this process: one worker)."""
    calls: list[tuple[str, ...]] = []
    definition = CHECKS["stage_timings"]

    @functools.wraps(definition.fn)
    def stage_timings(ctx, var, **params):
        calls.append(tuple(params["names"]))
        return definition.fn(ctx, var, **params)

    monkeypatch.setitem(CHECKS, "stage_timings", replace(definition, fn=stage_timings))
    monkeypatch.setattr(zoo, "verify", lambda folder: [])  # these notebooks load no weights: no need to hash them
    return calls


def test_a_timeout_keeps_the_other_exercises_and_a_spec_edit_rechecks_one(tmp_path, counted):
    folder, out = tmp_path / "subs", tmp_path / "out"
    _notebook(folder, hang_in="B")
    spec = _spec(tmp_path, SPEC)
    [grade] = grade_batch([folder], out, spec=spec, settings=SETTINGS, workers=1)
    scores = {e.id: e.score for e in grade.exercises}
    assert scores == {"a": 2, "b": 0, "c": 1} and grade.score == 3
    assert any("exceeded its 1 s limit" in n for n in grade.exercises[1].notes)
    assert counted == [("a_time",), ("b_time",), ("c_time",)]
    counted.clear()
    edited = _spec(tmp_path, SPEC.replace("points = 1,", "points = 4,"))
    [again] = grade_batch([folder], out, spec=edited, settings=SETTINGS, workers=1)
    assert counted == [("c_time",)]  # the notebook ran again, but only Part C was checked
    assert again.exercises[:2] == grade.exercises[:2] and again.exercises[2].score == 4


@pytest.mark.slow
def test_exercise_option_rechecks_only_that_notebook_exercise(tmp_path, counted):
    folder, out = tmp_path / "subs", tmp_path / "out"
    _notebook(folder, hang_in="")
    spec = _spec(tmp_path, SPEC)
    [grade] = grade_batch([folder], out, spec=spec, settings=SETTINGS, workers=1)
    counted.clear()
    [again] = grade_batch([folder], out, spec=spec, settings=SETTINGS, workers=1, exercises=["b"])
    assert counted == [("b_time",)] and again.score == grade.score == 6
    [same] = grade_batch([folder], out, spec=spec, settings=SETTINGS, workers=1)
    assert counted == [("b_time",)] and same == again  # up to date: nothing ran


@pytest.mark.slow
def test_a_notebook_timeout_keeps_the_points_earned_before_it(tmp_path):
    folder, out = tmp_path / "subs", tmp_path / "out"
    _notebook(folder, hang_in="C")
    settings = replace(SETTINGS, call_timeout=60, timeout=20)
    [grade] = grade_batch([folder], out, spec=_spec(tmp_path, SPEC), settings=settings, workers=1)
    assert {e.id: e.score for e in grade.exercises} == {"a": 2, "b": 3, "c": 0}
