"""The graded result of one submission, of any kind: checks in groups, groups in a grade.

A group is what a report totals: an exercise of the spec for a notebook, an API function
(or the submission-wide ``sandbox`` checks) for a module.  Everything a grader or a report
acts on is a typed field; ``details`` is free-form evidence only.  ``to_dict``/``from_dict``
are the stored form (``grade.json``, versioned by :data:`SCHEMA_VERSION`; a grade stored
before the version, with its control data in ``details``, still reads).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from sdverify.results import CheckResult, _jsonable

# 2: typed check fields (group, mistake, status, case, failed_cases, withheld_by, scope)
# instead of ``function`` and control keys in ``details``; a grade without ``schema`` is 1.
SCHEMA_VERSION = 2

Role = Literal["points", "gate", "diagnostic"]
# What a failing gate withholds: the points of its own group, or of the whole submission.
Scope = Literal["group", "submission"]


@dataclass
class CheckEntry:
    """One graded check of group ``group``; ``role`` says how it counts (:mod:`sdverify.grading.points`).

    ``mistake``, ``status``, ``case`` and ``failed_cases`` are the result's
    (:class:`sdverify.results.CheckResult`); ``withheld_by`` names the failed gates that took a
    passed case's points; ``scope`` is how far a failed gate reaches.
    """

    id: str
    group: str
    passed: bool
    points: float
    max_points: float
    message: str
    clause: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    role: Role = "points"
    mistake: str | None = None
    status: str | None = None
    case: str | None = None
    failed_cases: list[str] | None = None
    withheld_by: list[str] = field(default_factory=list)
    scope: Scope = "group"

    @property
    def named_mistake(self) -> str | None:
        """The recognised mistake a failed check names, in words (``mistakes.named`` opens the
        message with them)."""
        if self.passed or not self.mistake:
            return None
        return (self.message.splitlines() or [""])[0] or None

    @classmethod
    def from_result(
        cls, group: str, result: CheckResult, max_points: float = 1.0, role: Role = "points", scope: Scope = "group"
    ) -> CheckEntry:
        worth = max_points if role == "points" else 0.0
        return cls(
            result.id,
            group,
            result.passed,
            worth if result.passed else 0.0,
            worth,
            result.message,
            result.clause,
            _jsonable(result.details),
            role,
            result.mistake,
            result.status,
            result.case,
            None if result.failed_cases is None else list(result.failed_cases),
            scope=scope,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckEntry:
        """A stored check, of this schema or of schema 1 (``function``, control keys in ``details``)."""
        data = dict(data)
        if "function" in data:
            details = dict(data.get("details") or {})
            data["group"] = data.pop("function")
            for key in ("mistake", "status", "case", "failed_cases", "withheld_by"):
                if key in details:
                    data[key] = details.pop(key)
            data["details"] = details
            data.setdefault("scope", "submission" if data["group"] == "sandbox" else "group")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def label(self) -> str:
        """What the check is worth, for a report line: ``2/2``, ``0/2 (withheld: ...)``, ``gate``."""
        if self.role != "points":
            return self.role
        text = f"{self.points:g}/{self.max_points:g}"
        return f"{text} (withheld: {', '.join(self.withheld_by)} failed)" if self.withheld_by else text


def failure_text(clause: str, message: str) -> str:
    """What a failed check says, wherever it is shown: the clause, then expected vs seen and the mistake."""
    return f"contract: {clause}\n{message}" if clause else message


@dataclass
class ExerciseGrade:
    """One group's checks: an exercise of the spec, or one API function of a module."""

    id: str
    title: str
    checks: list[CheckEntry]
    notes: list[str] = field(default_factory=list)
    definition: str = ""  # the spec's hash of what this verdict depends on (Spec.definitions); "" for modules
    visibility: str = "visible"  # the spec's (spec.VISIBILITIES); a module's functions are visible

    @property
    def score(self) -> float:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> float:
        return sum(c.max_points for c in self.checks)


def grouped(checks: Iterable[CheckEntry]) -> list[ExerciseGrade]:
    """``checks`` in one group per ``group``, in order of first appearance, titled as a module's
    API functions (``tokenize()``)."""
    groups: dict[str, list[CheckEntry]] = {}
    for check in checks:
        groups.setdefault(check.group, []).append(check)
    return [ExerciseGrade(group, f"{group}()", entries) for group, entries in groups.items()]


@dataclass
class SubmissionGrade:
    """Everything the reports need about one submission, ``.py`` or ``.ipynb`` alike."""

    name: str
    path: str
    kind: str  # "notebook" | "module"
    exercises: list[ExerciseGrade]
    notes: list[str] = field(default_factory=list)  # what the teacher should know that costs no points
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    digest: str = ""
    image: str | None = None  # file name of the generated image, next to the reports
    isolation: str = ""  # the level student code ran under (sdverify.isolation)
    file: str = ""  # the file as found, below the folder given (what grades.csv and a roster call it)
    output: str = ""  # the last bytes a module's processes printed (a crash's traceback)
    probe_seed: int | None = None  # what a module's drawn cases came from (--probe-seed reproduces them)

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    @property
    def checks(self) -> list[CheckEntry]:
        """Every check, group after group."""
        return [c for e in self.exercises for c in e.checks]

    @property
    def passed(self) -> bool:
        return self.error is None and all(c.passed for c in self.checks)

    def failed(self) -> list[CheckEntry]:
        return [c for c in self.checks if not c.passed]

    def points_by_group(self) -> dict[str, tuple[float, float]]:
        """``group -> (points, max_points)``, in report order."""
        return {e.id: (e.score, e.max_score) for e in self.exercises}

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA_VERSION, **json.loads(json.dumps(asdict(self), default=str))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionGrade:
        """A stored grade (:data:`SCHEMA_VERSION` or older); a newer schema raises ValueError."""
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise ValueError(f"grade schema {schema!r}: this sdverify reads schemas 1 to {SCHEMA_VERSION}")
        exercises = [
            ExerciseGrade(**{**e, "checks": [CheckEntry.from_dict(c) for c in e["checks"]]}) for e in data["exercises"]
        ]
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in known}, "exercises": exercises})
