"""Targeted regrades: what a batch takes from the stored grades, and what it grades again.

A stored grade (``submissions/<name>/grade.json``) is kept per exercise: the grade carries
the digest of the submission file and of the weights and isolation settings, each exercise
the hash of its definition in the spec (``Spec.definitions``).  So a batch grades

* a submission without a stored grade, or whose file or settings changed: whole;
* a submission whose spec exercises changed: only those (and new ones), keeping the rest;
* with ``exercises`` (``--exercise``): those again, keeping the rest;
* with ``only`` (``--only``): those students again; the others keep their stored grades.

A notebook is still run whole for a targeted regrade (its sections bound each other); what
is saved is the checking of the kept exercises (Exercise 4's reference replay is most of it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from sdverify.contract import API_NAMES
from sdverify.errors import UsageError
from sdverify.grading.model import ExerciseGrade, SubmissionGrade
from sdverify.notebooks.grading import Settings, digest, runner_for
from sdverify.notebooks.spec import Spec


@dataclass(frozen=True)
class Job:
    """One submission to grade; ``keep``: its stored exercise results that stay (empty: grade it whole)."""

    path: Path
    name: str
    keep: dict[str, ExerciseGrade] = field(default_factory=dict)


def plan(
    path: Path,
    name: str,
    stored: SubmissionGrade | None,
    spec: Spec,
    settings: Settings,
    *,
    regrade: Collection[str] = (),
) -> SubmissionGrade | Job:
    """The stored grade when it is up to date (a new object when the spec only retitled an
    exercise), else the job that brings it up to date.

    ``regrade``: exercise ids (or a module's API functions) checked again even when their
    stored result is valid.  ``settings`` must be resolved (``resolve_settings``).
    """
    if stored is None or stored.digest != digest(path, settings):
        return Job(path, name)
    if not runner_for(path).spec_exercises:  # a module: the checker's functions, not the spec's exercises
        if not set(regrade) & {e.id for e in stored.exercises}:
            return stored
        return Job(path, name, {e.id: e for e in stored.exercises if e.id not in regrade})
    definitions = spec.definitions()
    keep = {
        e.id: e
        for e in stored.exercises
        if e.definition and definitions.get(e.id) == e.definition and e.id not in regrade
    }
    if set(definitions) - set(keep):
        return Job(path, name, keep)
    exercises = [replace(keep[e.id], title=e.title) for e in spec.exercises]
    return stored if exercises == stored.exercises else replace(stored, exercises=exercises)


def check_exercises(spec: Spec, exercises: Sequence[str]) -> None:
    """Raise UsageError naming an ``--exercise`` id that is neither the spec's nor an API function."""
    known = [e.id for e in spec.exercises]
    unknown = [x for x in exercises if x not in known and x not in API_NAMES]
    if unknown:
        raise UsageError(
            f"--exercise: unknown {', '.join(map(repr, unknown))}; expected exercise ids of the spec "
            f"({', '.join(known)}) or, for .py submissions, API functions ({', '.join(API_NAMES)})"
        )


def check_students(names: Sequence[str], only: Sequence[str]) -> None:
    """Raise UsageError naming an ``--only`` student that is not among ``names`` (the batch's)."""
    unknown = [x for x in only if x not in names]
    if unknown:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        raise UsageError(
            f"--only: no submission named {', '.join(map(repr, unknown))}; names are the file stems "
            f"(the student column of grades.csv): {shown}"
        )
