"""Class analytics: what ``summary.json`` and the class page say about the whole class.

Score distribution, per-exercise and per-check pass rates, how many students made each
named mistake (and who), the slowest submissions, the isolation levels used and the files
of the folder that were not graded (with the reason).  Points
are read from the result objects (each check's ``points``/``max_points``, summed by
``ExerciseGrade``/``SubmissionGrade``), never recomputed here.  Everything follows the
students' names, so the same grades give the same bytes however they were batched.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdverify.grading.model import SubmissionGrade

SCHEMA = 1
SLOWEST = 5  # submissions listed as the slowest
BINS = 10  # score histogram: bins of 10 % of the maximum


def summary(
    grades: Sequence[SubmissionGrade],
    title: str,
    shard: tuple[int, int] | None = None,
    skipped: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The class summary (``summary.json``); ``shard``: the ``(K, N)`` these grades are, if one;
    ``skipped``: ``(file, reason)`` of each file that is not a submission."""
    ordered = sorted(grades, key=lambda g: g.name)
    return {
        "schema": SCHEMA,
        "title": title,
        "shard": list(shard) if shard else None,
        "students": len(ordered),
        "isolation": dict(sorted(Counter(g.isolation for g in ordered).items())),
        "errors": [{"student": g.name, "error": g.error} for g in ordered if g.error],
        "score": _distribution(ordered),
        "exercises": _exercises(ordered),
        "checks": _checks(ordered),
        "mistakes": _mistakes(ordered),
        "slowest": [
            {"student": g.name, "seconds": round(g.seconds, 2), "timings": g.timings}
            for g in sorted(ordered, key=lambda g: (-g.seconds, g.name))[:SLOWEST]
        ],
        "skipped": [{"file": file, "reason": reason} for file, reason in sorted(skipped)],
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _distribution(grades: list[SubmissionGrade]) -> dict[str, Any]:
    scores = [g.score for g in grades]
    shares = [g.score / g.max_score if g.max_score else 0.0 for g in grades]
    counts = [0] * BINS
    for share in shares:
        counts[min(int(share * BINS), BINS - 1)] += 1
    return {
        "max_points": sorted({g.max_score for g in grades}),
        "mean": round(statistics.fmean(scores), 4) if scores else None,
        "median": statistics.median(scores) if scores else None,
        "min": min(scores, default=None),
        "max": max(scores, default=None),
        "full_marks": sum(g.max_score > 0 and g.score == g.max_score for g in grades),
        "histogram": {"percent_edges": [100 * i // BINS for i in range(BINS + 1)], "counts": counts},
    }


def _exercises(grades: list[SubmissionGrade]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for g in grades:
        for e in g.exercises:
            row = found.setdefault(
                e.id, {"id": e.id, "title": e.title, "max_points": e.max_score, "graded": 0, "full_marks": 0}
            )
            row["graded"] += 1
            row["full_marks"] += e.score == e.max_score
            row.setdefault("scores", []).append(e.score)
    for row in found.values():
        row["mean"] = round(statistics.fmean(row.pop("scores")), 4)
        row["pass_rate"] = _rate(row["full_marks"], row["graded"])
    return list(found.values())


def _checks(grades: list[SubmissionGrade]) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for g in grades:
        for e in g.exercises:
            for c in e.checks:
                row = found.setdefault(
                    (e.id, c.id),
                    {"exercise": e.id, "check": c.id, "max_points": c.max_points, "graded": 0, "passed": 0},
                )
                row["graded"] += 1
                row["passed"] += c.passed
    for row in found.values():
        row["pass_rate"] = _rate(row["passed"], row["graded"])
    return list(found.values())


def _mistakes(grades: list[SubmissionGrade]) -> list[dict[str, Any]]:
    """Each named mistake (a failed check's ``mistake``): who made it, and where."""
    found: dict[str, dict[str, Any]] = {}
    for g in grades:
        for e in g.exercises:
            for c in e.checks:
                mistake = None if c.passed else c.mistake
                if not mistake:
                    continue
                row = found.setdefault(
                    mistake, {"id": mistake, "example": c.message.splitlines()[0], "students": [], "checks": []}
                )
                row["students"] += [] if g.name in row["students"] else [g.name]
                row["checks"] += [] if f"{e.id}/{c.id}" in row["checks"] else [f"{e.id}/{c.id}"]
    rows = [{**row, "count": len(row["students"])} for row in found.values()]
    return sorted(rows, key=lambda r: (-r["count"], r["id"]))


def plot_distribution(summary: dict[str, Any], path: Path) -> None:
    """The score histogram as a PNG (same summary, same bytes: no date or version stamped)."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to pick
    from matplotlib.ticker import MaxNLocator

    histogram = summary["score"]["histogram"]
    edges = histogram["percent_edges"]
    fig = Figure(figsize=(6, 2.6), dpi=100)
    ax = fig.subplots()
    ax.bar(edges[:-1], histogram["counts"], width=100 / BINS, align="edge", color="#3b6ea5", edgecolor="white")
    ax.set_xlim(0, 100)
    ax.set_xlabel("score (% of the maximum)")
    ax.set_ylabel("students")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Score distribution ({summary['students']} students)")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})
