"""Gradescope's autograder ``results.json``, made from one graded submission.

Format: https://gradescope-autograders.readthedocs.io/en/latest/specs/ (``score``,
``execution_time``, ``output``, ``output_format``, ``stdout_visibility``, and ``tests``
with ``name``, ``score``, ``max_score``, ``status``, ``output``, ``visibility``).

One test per check, with the points the grade holds (never recomputed here).  An exercise's
``visibility`` is spec data and becomes its tests': ``visible``, ``after_due_date``, or
``hidden`` (instructors only; the points still count).  Students still learn what went wrong in
a hidden exercise: one visible test per hidden exercise, without points, says how many of its
checks passed and names the mistakes its failed checks recognised — never a check's id,
clause or expected values, which would teach the hidden test instead of the lesson.
"""

from __future__ import annotations

from typing import Any

from sdverify.grading.model import CheckEntry, ExerciseGrade, SubmissionGrade, failure_text
from sdverify.isolation import describe


def to_gradescope(grade: SubmissionGrade) -> dict[str, Any]:
    """``grade`` as Gradescope's ``results.json`` object."""
    tests: list[dict[str, Any]] = []
    for exercise in grade.exercises:
        tests += [_test(exercise, check) for check in exercise.checks]
        if exercise.visibility == "hidden":
            tests.append(_hidden_summary(exercise))
    notes = [describe(grade.isolation)] + ([grade.error] if grade.error else []) + grade.notes
    notes += [f"{e.title}: {n}" for e in grade.exercises for n in e.notes]
    return {
        "score": grade.score,
        "execution_time": round(grade.seconds),
        "output": "\n".join(notes),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def _test(exercise: ExerciseGrade, check: CheckEntry) -> dict[str, Any]:
    return {
        "name": f"{exercise.title}: {check.id}",
        "score": check.points,
        "max_score": check.max_points,
        "status": "passed" if check.passed else "failed",
        "output": check.clause if check.passed else failure_text(check.clause, check.message),
        "visibility": exercise.visibility,
    }


def _hidden_summary(exercise: ExerciseGrade) -> dict[str, Any]:
    """What a student sees of a hidden exercise: the count passed and the mistakes named."""
    failed = [c for c in exercise.checks if not c.passed]
    named = list(dict.fromkeys(m for c in failed if (m := c.named_mistake)))
    unnamed = sum(c.named_mistake is None for c in failed)
    lines = [f"{len(exercise.checks) - len(failed)}/{len(exercise.checks)} hidden checks passed"]
    lines += [f"mistake found: {words}" for words in named]
    if unnamed:
        lines.append(f"{unnamed} failed check(s) recognise no known mistake; their details are not shown")
    return {
        "name": f"{exercise.title} (hidden checks)",
        "status": "failed" if failed else "passed",
        "output": "\n".join(lines),
        "visibility": "visible",
    }


def failure_results(message: str) -> dict[str, Any]:
    """A ``results.json`` for a submission that could not be graded: no points, and why."""
    return {
        "score": 0.0,
        "output": message,
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": [{"name": "grading", "status": "failed", "output": message, "visibility": "visible"}],
    }
