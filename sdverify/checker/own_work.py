"""The delegation gates of a checked module: what it used, charged to its API functions.

Uses come from the source (read here, never run) and from the sandboxed child's tripwire
(:mod:`sdverify.delegation`); each API function's ``own_work`` gate judges its own against
that function's policy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from sdverify.checker.probes import Probe
from sdverify.checker.protocol import SandboxResult
from sdverify.checker.submission import Target, source_of
from sdverify.contract import API_NAMES
from sdverify.delegation.policy import Policy, Use, covers, own_work
from sdverify.delegation.static import scan_module
from sdverify.results import CheckResult, fail

RELAX = "an instructor can allow a name: sdverify check --allow NAME"


def uses(target: Target, result: SandboxResult, watched: tuple[str, ...]) -> tuple[list[Use], list[str]]:
    """What the submission used of the watched names, and notes on what could not be read."""
    notes = []
    found: list[Use] = []
    source = source_of(target, os.getcwd())
    if source is None:
        notes.append("delegation: the source could not be read, only the run-time tripwire applied")
    else:
        try:
            found = scan_module(source, watched, API_NAMES)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass  # a module Python cannot compile ran nothing: its import error says so
    return list(dict.fromkeys(found + result.uses)), notes


def gate(function: str, used: list[Use], policy: Policy, result: SandboxResult, probes: list[Probe]) -> CheckResult:
    """``<function>.own_work``: failed, like every check, when the function is missing or the
    submission could not be imported; else the policy's verdict on the function's uses."""
    id = f"{function}.own_work"
    if result.import_error is not None:
        return fail(id, f"not checked: the submission could not be imported ({result.import_error})", status="error")
    outcomes = result.outcomes
    if probes and all(p.id in outcomes and outcomes[p.id].status == "missing" for p in probes):
        return fail(id, f"not implemented: the submission defines no {function}()", status="missing")
    return own_work(id, function, [u for u in used if u.where == function], policy, RELAX)


def unused(used: list[Use], policies: Mapping[str, Policy]) -> list[str]:
    """Notes for forbidden names the module's top level used that no API function was charged with."""
    charged = [n for u in used if u.where for n in u.names]
    notes = []
    for use in (u for u in used if not u.where):
        if any(p.broken_by(use) for p in policies.values()) and not any(
            covers(a, b) or covers(b, a) for a in use.names for b in charged
        ):
            notes.append(f"delegation: the module {use.describe()}; no API function was seen using it (no points lost)")
    return list(dict.fromkeys(notes))
