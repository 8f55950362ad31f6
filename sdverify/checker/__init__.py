"""Checking student implementations of the reference API (``sdverify check``).

``check_submission(target)`` grades a ``.py`` file or importable module: every API
function it defines is run in a sandboxed child process (see :mod:`.sandbox`) and its
raw outputs are judged here, against the reference and the property suite.
"""

from __future__ import annotations

import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any

from sdverify import contract as C
from sdverify.checker.submission import Target, resolve_target
from sdverify.contract import API_NAMES
from sdverify.errors import UsageError
from sdverify.grading.model import SubmissionGrade, grouped
from sdverify.settings import CHECK, Settings

if TYPE_CHECKING:
    from sdverify.checker.checks import CheckContext
    from sdverify.results import CheckResult

__all__ = ["API_NAMES", "Target", "check_submission", "resolve_target"]


def check_submission(target: str | Target | None, settings: Settings = CHECK, **options: Any) -> SubmissionGrade:
    """Grade ``target`` (path, module name or resolved :class:`Target`; empty/None: the bundled reference).

    Several calls in one process share the sandbox's forkserver and the reference
    expectations (built once per settings), so each further submission costs only its own run.

    Raises ``FileNotFoundError``/``ValueError`` for an unusable target (a usage error);
    everything the submission itself does wrong — syntax errors included — is graded.
    ``settings`` (:mod:`sdverify.settings`; ``sdverify check``'s limits by default), with
    ``options`` replacing its fields (``sandbox="process"``, ``call_timeout=30``...):
    ``call_timeout`` bounds each call of a student function, ``timeout`` the whole submission,
    ``child_memory_mb`` what the child may allocate beyond the loaded components (CPU only),
    ``seed`` the zoo weights of the child and of the expected values alike.  ``sandbox`` is the
    isolation level (:mod:`sdverify.isolation`); a bwrap child sees the submission's source, not
    its folder (nor siblings, nor any user data).  ``allow`` adds names to every function's
    delegation policy (``--allow``; :mod:`sdverify.delegation`).  ``probe_seed`` draws the run's
    drawn cases (:mod:`.cases`; None: a new seed, in the report).
    """
    from sdverify import isolation
    from sdverify.checker import cases, checks, own_work, parent
    from sdverify.delegation import CHECK_POLICY, watch_lists
    from sdverify.grading import points

    settings = with_options(settings, options)
    start = time.perf_counter()
    level = isolation.resolve(settings.sandbox)
    device = settings.device
    if level == "bwrap" and device.startswith("cuda"):
        raise UsageError(
            f"--device {device}: the bwrap sandbox passes no GPU into student code; check on --device cpu, "
            "or choose --sandbox process on a runner you trust"
        )
    device = _canonical_device(device)
    isolation.warn_once(level)
    resolved = target if isinstance(target, Target) else resolve_target(target)
    fixed = checks.context(settings.preset, settings.seed, device, settings.weights)
    ctx = checks.with_drawn(fixed, cases.new_seed() if settings.probe_seed is None else settings.probe_seed)
    policies = {f: CHECK_POLICY[f].relaxed(settings.allow) for f in API_NAMES}
    watch = None if resolved.bundled else watch_lists(policies.values())
    result = parent.run_submission(
        resolved,
        ctx.plan,
        weights=ctx.weights,
        device=device,
        dtype=ctx.env.dtype,
        timeout=settings.call_timeout,
        memory_limit_mb=settings.child_memory_mb,
        level=level,
        total_timeout=settings.timeout,
        watch=watch,
    )
    uses, notes = own_work.uses(resolved, result, watch.names) if watch else ([], [])
    entries = []
    for function in API_NAMES:
        graded = checks.function_checks(ctx, function, result.outcomes)
        if watch:
            gate = own_work.gate(function, uses, policies[function], result, ctx.plan.of(function))
            graded.insert(0, points.Graded(gate, "gate"))
        entries += [g.entry(function) for g in graded]
    entries.append(points.Graded(_weights_unchanged(fixed), "gate", scope="submission").entry(C.SANDBOX_GROUP))
    notes += own_work.unused(uses, policies)
    return SubmissionGrade(
        resolved.display,
        resolved.display,
        "module",
        grouped(points.withhold(entries)),
        notes=notes,
        error=result.import_error,
        seconds=time.perf_counter() - start,
        isolation=level,
        output=result.log_tail,
        probe_seed=ctx.plan.seed,
    )


def with_options(settings: Settings, options: dict[str, Any]) -> Settings:
    """``settings`` with ``options`` (field names of :class:`Settings`) replaced; a ValueError names
    an unknown one and the fields there are (``timeout`` is per submission, ``call_timeout`` per call)."""
    known = [f.name for f in fields(Settings)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; expected fields of sdverify.settings.Settings: {known}")
    return replace(settings, **options) if options else settings


def _canonical_device(device: str) -> str:
    """``cuda`` as the ``cuda:N`` it means: tensors report their index, and the checks compare
    devices (``torch.device("cuda") != torch.device("cuda:0")``)."""
    import torch

    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return str(d)


def _weights_unchanged(ctx: CheckContext) -> CheckResult:
    """Verify the weights folder against its sha256 manifest after a submission ran.

    A change is this submission's failure, named; a zoo snapshot is rebuilt at once so that
    no later submission (nor the grader) sees it.  Real weights cannot be rebuilt: the check
    names the files and every later run in this process keeps failing it.
    """
    from sdverify import zoo
    from sdverify.results import fail, ok

    clause = "a submission leaves the grader's files (the weights folder) unchanged"
    changed, ctx.weights, unrepaired = zoo.verify_after_run(ctx.weights)
    if not changed:
        return ok("sandbox.grader_files", clause)
    message = "the submission changed the grader's weights: " + ", ".join(changed[:10])
    message += f" ({unrepaired})" if unrepaired else ""
    return fail("sandbox.grader_files", message, clause, files=changed)
