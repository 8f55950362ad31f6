"""Checking student implementations of the reference API (``sdverify check``).

``check_submission(target)`` grades a ``.py`` file or importable module: every API
function it defines is run in a sandboxed child process (see :mod:`.sandbox`) and its
raw outputs are judged here, against the reference and the property suite.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sdverify import contract as C
from sdverify.checker.report import CheckEntry, SubmissionReport, summary_table, to_json, to_junit, to_text
from sdverify.checker.submission import API_NAMES, Target, resolve_target

__all__ = [
    "API_NAMES",
    "CheckEntry",
    "SubmissionReport",
    "Target",
    "check_submission",
    "resolve_target",
    "summary_table",
    "to_json",
    "to_junit",
    "to_text",
]


def check_submission(
    target: str | Target | None,
    *,
    preset: str = "tiny",
    device: str = "cpu",
    timeout: float = C.CHECK_TIMEOUT_S,
    weights: str | None = None,
    memory_limit_mb: int | None = C.CHECK_MEMORY_LIMIT_MB,
) -> SubmissionReport:
    """Grade ``target`` (path, module name or resolved :class:`Target`; empty/None: the bundled reference).

    Several calls in one process share the sandbox's forkserver and the reference
    expectations (built once per settings), so each further submission costs only its own run.

    Raises ``FileNotFoundError``/``ValueError`` for an unusable target (a usage error);
    everything the submission itself does wrong — syntax errors included — is graded.
    ``timeout`` bounds each call of a student function, ``memory_limit_mb`` what the
    child may allocate beyond the loaded components (CPU only).
    """
    from sdverify.checker import checks, sandbox
    from sdverify.results import fail, ok

    start = time.perf_counter()
    resolved = target if isinstance(target, Target) else resolve_target(target)
    ctx = checks.context(preset, device, weights)
    result = sandbox.run_submission(
        resolved,
        ctx.plan,
        weights=ctx.weights,
        device=device,
        dtype=ctx.env.dtype,
        timeout=timeout,
        memory_limit_mb=memory_limit_mb,
        watch=[ctx.weights],
    )
    entries = [
        CheckEntry.from_result(function, r)
        for function in API_NAMES
        for r in checks.function_checks(ctx, function, result.outcomes)
    ]
    clause = "a submission leaves the grader's files (the weights folder) unchanged"
    if result.modified_files:
        message = "the submission changed the grader's files: " + ", ".join(result.modified_files[:10])
        files = fail("sandbox.grader_files", message, clause, files=result.modified_files)
        if any(Path(f).is_relative_to(ctx.weights) for f in result.modified_files):
            ctx.weights = _restore_weights(ctx)
    else:
        files = ok("sandbox.grader_files", clause)
    entries.append(CheckEntry.from_result("sandbox", files))
    return SubmissionReport(resolved.display, entries, result.import_error, time.perf_counter() - start)


def _restore_weights(ctx) -> Path:
    """Rewrite the components from the grader's own (untouched) copies into a fresh folder."""
    folder = Path(tempfile.mkdtemp(prefix="sdverify-weights-"))
    c = ctx.env.components
    for name in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
        getattr(c, name).save_pretrained(folder / name)
    return folder
