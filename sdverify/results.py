"""Result objects shared by property checks, the student checker and the graders.

A check is a plain function returning :class:`CheckResult`; the pytest layer asserts
on it, the CLI prints it, the graders serialise it to JSON/HTML.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

# How a sandboxed probe ended (``sdverify.checker.protocol.Outcome.status``); defined here,
# away from the sandbox's heavy imports, so reports and checks can name it too.
OutcomeStatus = Literal["ok", "error", "missing", "timeout", "crashed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one contract clause.

    ``clause`` names the promise that was checked; ``message`` explains a failure the
    way a teacher would (expected vs seen, and the named mistake when recognised).
    Frozen: results are shared between reports, so a variant is made with
    ``dataclasses.replace``; ``details`` is never mutated after construction either.
    ``details`` is free-form evidence for a reader (differences, seeds, timings); what the
    graders act on is typed: ``mistake`` (the catalog id a failure was recognised as,
    set by ``sdverify.mistakes.named``), ``status`` (how a probe ended when it did not
    return), ``case`` (the probe case a correctness check grades) and ``failed_cases``
    (the cases a failed check failed on; None: not per case, so all of them).
    """

    id: str
    passed: bool
    message: str = ""
    clause: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    mistake: str | None = None
    status: OutcomeStatus | None = None
    case: str | None = None
    failed_cases: tuple[str, ...] | None = None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        text = f"[{mark}] {self.id}"
        if self.clause:
            text += f" — {self.clause}"
        if self.message and not self.passed:
            text += "\n    " + self.message.replace("\n", "\n    ")
        return text

    def to_dict(self) -> dict[str, Any]:
        return {key: _jsonable(value) for key, value in asdict(self).items()}


def ok(id: str, clause: str = "", **details: Any) -> CheckResult:
    return CheckResult(id, True, "", clause, details)


def fail(
    id: str, message: str, clause: str = "", *, status: OutcomeStatus | None = None, **details: Any
) -> CheckResult:
    """A failed clause; ``status`` says how the probe ended when it did not return (a typed
    field the points model reads, never evidence in ``details``)."""
    return CheckResult(id, False, message, clause, details, status=status)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return repr(value)


def describe_mismatch(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0) -> dict[str, Any]:
    """Summarise how two same-shaped tensors differ: share mismatched, worst index and values.

    Computed in float64 on CPU so the summary itself adds no rounding.
    """
    a = actual.detach().to("cpu", torch.float64)
    e = expected.detach().to("cpu", torch.float64)
    diff = (a - e).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    bad = diff > atol + rtol * e.abs()
    flat = int(diff.argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), diff.shape)) if diff.numel() else ()
    return {
        "max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
        "mismatched": int(bad.sum()),
        "total": diff.numel(),
        "worst_index": list(index),
        "worst_actual": float(a.reshape(-1)[flat]) if diff.numel() else None,
        "worst_expected": float(e.reshape(-1)[flat]) if diff.numel() else None,
        "atol": atol,
        "rtol": rtol,
    }


def compare_tensors(
    id: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    atol: float,
    rtol: float = 0.0,
    clause: str = "",
) -> CheckResult:
    """Shape, then values: a readable verdict instead of a bare ``allclose``."""
    if tuple(actual.shape) != tuple(expected.shape):
        return fail(id, f"shape {list(actual.shape)} but expected {list(expected.shape)}", clause)
    d = describe_mismatch(actual, expected, atol, rtol)
    if d["mismatched"] == 0:
        return ok(id, clause, max_abs_diff=d["max_abs_diff"])
    message = (
        f"{d['mismatched']}/{d['total']} elements ({100 * d['mismatched'] / max(d['total'], 1):.1f}%) differ by more "
        f"than atol={atol:g} rtol={rtol:g}; max |diff| {d['max_abs_diff']:.3g} at {d['worst_index']} "
        f"(got {d['worst_actual']:.6g}, expected {d['worst_expected']:.6g})"
    )
    return fail(id, message, clause, **d)
