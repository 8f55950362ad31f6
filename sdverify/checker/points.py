"""The points model: only correctness earns points; gates withhold them; diagnostics explain.

Every check has a role:

* ``points`` — a correctness case (the submission's values equal the reference's on one probe
  case): it earns its weight (``contract.CHECK_POINTS_PER_CASE``) when it passes;
* ``gate`` — a clause without which a function's values are unusable or not its own (the
  contract's shape/dtype/device, the delegation policy, the grader's files): a failing gate
  withholds the points of the cases it failed on (``details["failed_cases"]``, probe ids),
  or, when it names none, every point of its function (a ``sandbox`` gate: of the whole
  submission);
* ``diagnostic`` — a property that explains *why* a case failed (the CFG algebra, the token-id
  properties, reproducibility): no points of its own, so output that satisfies properties
  without being right (zeros, the input returned unchanged) earns nothing.

The notebook grader uses the same rules with exercises for functions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from sdverify.checker.report import CheckEntry
from sdverify.results import CheckResult

Role = Literal["points", "gate", "diagnostic"]
EVERYWHERE = "sandbox"  # gates of this group withhold the points of every group


@dataclass(frozen=True)
class Graded:
    """A check's result with its role and what it is worth when it passes (``points`` only)."""

    result: CheckResult
    role: Role
    points: float = 0.0

    def entry(self, group: str) -> CheckEntry:
        return CheckEntry.from_result(group, self.result, self.points, role=self.role)


def withhold(entries: Iterable[CheckEntry], everywhere: str | None = EVERYWHERE) -> list[CheckEntry]:
    """``entries`` with the points of each group (``CheckEntry.function``) set to 0 where one of
    its gates, or one of the ``everywhere`` group's, failed on their case (``details["case"]``)
    or on the whole group; the gates are named in ``details["withheld_by"]``."""
    entries = list(entries)
    failed: dict[str, list[CheckEntry]] = {}
    for e in entries:
        if e.role == "gate" and not e.passed:
            failed.setdefault(e.function, []).append(e)
    out = []
    for e in entries:
        gates = list(failed.get(e.function, []))
        if everywhere and e.function != everywhere:
            gates += failed.get(everywhere, [])
        case = e.details.get("case")
        blocking = [g.id for g in gates if "failed_cases" not in g.details or case in g.details["failed_cases"]]
        if e.role == "points" and blocking and e.points:
            e = replace(e, points=0.0, details={**e.details, "withheld_by": blocking})
        out.append(e)
    return out
