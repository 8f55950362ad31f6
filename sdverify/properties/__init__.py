"""Reusable property checks: each returns :class:`~sdverify.results.CheckResult` objects.

The pytest suite, the student checker and the notebook grader call the same functions
on the reference or on any implementation handed in; a check never raises because the
implementation misbehaves, it reports what was expected and what was seen.
"""

from __future__ import annotations

from collections.abc import Iterable

from sdverify.results import CheckResult


def failures(results: Iterable[CheckResult]) -> dict[str, str]:
    """Property id -> message of every failed result: what a test asserts is empty."""
    return {r.id: r.message for r in results if not r.passed}
