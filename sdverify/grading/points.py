"""The points model: only correctness earns points; gates withhold them; diagnostics explain.

Every check has a role:

* ``points`` — a correctness case (the submission's values equal the reference's on one probe
  case): it earns its weight (``contract.CHECK_POINTS_PER_CASE``) when it passes;
* ``gate`` — a clause without which a function's values are unusable or not its own (the
  contract's shape/dtype/device, the delegation policy, the grader's files): a failing gate
  withholds the points of the cases it failed on (``failed_cases``, probe ids), or, when it
  names none, every point of its group (a gate of ``scope="submission"``: of every group);
* ``diagnostic`` — a property that explains *why* a case failed (the CFG algebra, the token-id
  properties, reproducibility): no points of its own, so output that satisfies properties
  without being right (zeros, the input returned unchanged) earns nothing.

Modules and notebooks are graded by the same rules, with exercises for functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from sdverify.grading.model import CheckEntry, Role, Scope
from sdverify.results import CheckResult


@dataclass(frozen=True)
class Graded:
    """A check's result with its role, what it is worth when it passes (``points`` only) and,
    for a gate, how far its failure reaches."""

    result: CheckResult
    role: Role
    points: float = 0.0
    scope: Scope = "group"

    def entry(self, group: str) -> CheckEntry:
        return CheckEntry.from_result(group, self.result, self.points, role=self.role, scope=self.scope)


def withhold(entries: Iterable[CheckEntry]) -> list[CheckEntry]:
    """``entries`` with the points of each group set to 0 where one of its gates, or a gate of
    submission scope, failed on their case (``case``) or on every case; the gates are named in
    ``withheld_by``."""
    entries = list(entries)
    failed = [e for e in entries if e.role == "gate" and not e.passed]
    out = []
    for e in entries:
        gates = [g for g in failed if g.group == e.group or g.scope == "submission"]
        blocking = [g.id for g in gates if g.failed_cases is None or e.case in g.failed_cases]
        if e.role == "points" and blocking and e.points:
            e = replace(e, points=0.0, withheld_by=blocking)
        out.append(e)
    return out
