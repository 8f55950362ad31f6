"""Grade one submission — a notebook run offline, or a ``.py`` module via the checker.

The verdict is computed here, in the grader's process, from values extracted from the
kernel; nothing the notebook printed is read.  Any failure of the submission (or of
the machinery on it) becomes a graded error, never an exception out of the batch.
"""

from __future__ import annotations

import hashlib
import json
import re
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import nbformat
import torch

from sdverify import contract as C
from sdverify import isolation, zoo
from sdverify import reference as R
from sdverify.checker import points
from sdverify.checker.report import CheckEntry
from sdverify.delegation.policy import Policy, Use, own_work, watch_lists
from sdverify.notebooks import device_map
from sdverify.notebooks.exercises import CHECKS, ExerciseContext
from sdverify.notebooks.kernel_launcher import MEMORY_VARIABLE
from sdverify.notebooks.output_caps import cap_notebook
from sdverify.notebooks.runner import RunResult, run_notebook
from sdverify.notebooks.spec import ExerciseSpec, Spec
from sdverify.notebooks.uses import notebook_uses, outside_exercises
from sdverify.presets import get_preset
from sdverify.results import fail
from sdverify.untrusted.value import UntrustedValue


@dataclass(frozen=True)
class Settings:
    """How to grade: which weights the kernel sees, the limits and the isolation level."""

    preset: str = "tiny"
    seed: int = 0  # zoo weight seed
    weights: str | None = None  # a local diffusers folder with real weights
    cell_timeout: float = C.GRADE_CELL_TIMEOUT_S
    notebook_timeout: float = C.GRADE_NOTEBOOK_TIMEOUT_S
    threads: int = 1  # torch threads in the kernel and the grader (same count: same rounding)
    sandbox: str | None = None  # one of isolation.CHOICES (None: $SDVERIFY_SANDBOX, else auto)
    kernel_memory_mb: int = C.GRADE_KERNEL_MEMORY_MB  # address space a kernel may add (0: no limit)
    allow: tuple[str, ...] = ()  # names every exercise (or function) may use after all (--allow)
    probe_seed: int | None = None  # a .py module's drawn cases (sdverify.checker.cases; None: one per module)


def resolve_settings(settings: Settings) -> Settings:
    """``settings`` with its sandbox resolved to the level used (once per batch: workers inherit it)."""
    return replace(settings, sandbox=isolation.resolve(settings.sandbox))


@dataclass
class ExerciseGrade:
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


@dataclass
class SubmissionGrade:
    """Everything the reports need about one submission (JSON round-trips for resuming)."""

    name: str
    path: str
    kind: str  # "notebook" | "module"
    exercises: list[ExerciseGrade]
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    digest: str = ""
    image: str | None = None  # file name of the generated image, next to the reports
    isolation: str = ""  # the level student code ran under ("bwrap" | "process"; modules: "checker")
    file: str = ""  # the file as found, below the folder given (what grades.csv and a roster call it)

    @property
    def score(self) -> float:
        return sum(e.score for e in self.exercises)

    @property
    def max_score(self) -> float:
        return sum(e.max_score for e in self.exercises)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmissionGrade:
        exercises = [
            ExerciseGrade(**{**e, "checks": [CheckEntry(**c) for c in e["checks"]]}) for e in data["exercises"]
        ]
        return cls(**{**data, "exercises": exercises})


def digest(path: Path, settings: Settings) -> str:
    """What every stored exercise depends on: submission bytes, weights settings and isolation
    level (the spec counts per exercise: ``ExerciseGrade.definition``)."""
    h = hashlib.sha256(path.read_bytes())
    h.update(repr((settings.preset, settings.seed, settings.weights, settings.sandbox, settings.allow)).encode())
    return h.hexdigest()


class Submission(NamedTuple):
    """One file to grade and everything its runner needs (the same for every kind)."""

    path: Path
    name: str
    spec: Spec
    settings: Settings  # resolved: its sandbox is the level used
    folder: Path  # where artefacts go (image, executed notebook)
    hidden: tuple[Path, ...]  # folders a bwrap sandbox must not show


@dataclass(frozen=True)
class Runner:
    """How one kind of submission is graded: same settings, isolation, offline environment and
    limits for every kind (otter-grader's one runner per language); a new kind is one entry."""

    kind: str  # as stored in SubmissionGrade.kind
    grade: Callable[[Submission, Mapping[str, ExerciseGrade]], SubmissionGrade]
    spec_exercises: bool  # graded against the spec's exercises (else: the checker's API functions)

    def failed(self, spec: Spec, keep: Mapping[str, ExerciseGrade]) -> list[ExerciseGrade]:
        """What stands when grading itself failed: kept results, and the spec's exercises at 0."""
        if not self.spec_exercises:
            return list(keep.values())
        return [keep.get(e.id, e) for e in _zero(spec)]


def runner_for(path: Path) -> Runner:
    """The runner of ``path``'s kind; a ValueError names the kinds there are."""
    try:
        return RUNNERS[path.suffix]
    except KeyError:
        kind = path.suffix or "suffix-less"
        raise ValueError(f"{path.name}: cannot grade a {kind} file; expected one of {list(RUNNERS)}") from None


NOT_RUN = "not run"  # the isolation of a file refused before anything ran


def refused(path: Path, name: str, spec: Spec, reason: str) -> SubmissionGrade:
    """The grade of a file that is not run (a link, an unreadable or unsupported file): 0, ``reason`` its error."""
    runner = RUNNERS.get(path.suffix)
    kind = runner.kind if runner else "unsupported"
    exercises = runner.failed(spec, {}) if runner else _zero(spec)
    return SubmissionGrade(name, str(path), kind, exercises, error=reason, isolation=NOT_RUN)


def grade_submission(
    path: Path,
    name: str,
    spec: Spec,
    settings: Settings,
    folder: Path,
    *,
    hidden: tuple[Path, ...] = (),
    keep: Mapping[str, ExerciseGrade] | None = None,
) -> SubmissionGrade:
    """Grade ``path`` (``.ipynb`` or ``.py``); artefacts (image, executed notebook) go to ``folder``.

    Under bwrap the kernel sees neither ``hidden`` (the batch's submissions and report
    folders) nor the folders of ``path`` and ``folder``.  Exercises in ``keep`` (stored
    results still valid: a targeted regrade) are taken as they are, not checked again.
    """
    keep = keep or {}
    runner = runner_for(path)
    folder.mkdir(parents=True, exist_ok=True)
    settings = resolve_settings(settings)
    job = Submission(path, name, spec, settings, folder, _outermost((*hidden, path.resolve().parent, folder.resolve())))
    try:
        grade = runner.grade(job, keep)
    except Exception as exc:
        grade = SubmissionGrade(
            name,
            str(path),
            runner.kind,
            runner.failed(spec, keep),
            error=f"grading failed: {type(exc).__name__}: {exc}",
            notes=[traceback.format_exc(limit=5)],
        )
    grade.isolation = isolation.resolve(settings.sandbox)
    grade.digest = digest(path, settings)
    return grade


def _outermost(paths: tuple[Path, ...]) -> tuple[Path, ...]:
    """``paths`` without those inside another: hiding a folder inside a hidden one would
    recreate its parents in the empty one (an ``out/submissions`` the kernel could see)."""
    unique = tuple(dict.fromkeys(paths))
    return tuple(p for p in unique if not any(q in p.parents for q in unique))


def _zero(spec: Spec) -> list[ExerciseGrade]:
    return [
        ExerciseGrade(
            e.id,
            e.title,
            [CheckEntry(c.check, e.id, False, 0.0, c.points, "not graded") for c in e.checks],
            visibility=e.visibility,
        )
        for e in spec.exercises
    ]


# --- notebooks ---------------------------------------------------------------------


@lru_cache(maxsize=8)
def _context(folder: str, contract_params: bool, lesson, version: int) -> ExerciseContext:
    # One per worker process, weights and facts (a v2 exercise may have its own): references
    # (embeddings, replays) are shared by every notebook that worker grades.  Loading bars
    # would interleave with ours.
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return ExerciseContext(lesson, Path(folder), contract_params, version)


def kernel_env(hub_cache: Path, settings: Settings) -> dict[str, str]:
    """What the lesson needs on top of the allow-listed environment: offline hub cache,
    headless matplotlib, CPU only, N threads, the memory limit (never the grader's own variables)."""
    threads = str(settings.threads)
    return {
        **zoo.offline_env(hub_cache),
        "MPLBACKEND": "Agg",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "PYTHONHASHSEED": "0",
        MEMORY_VARIABLE: str(settings.kernel_memory_mb),
    }


NO_HEADING_MATCHED = (
    "no exercise heading of the spec matched any markdown heading of this notebook; is it the right lesson?"
)
# A cell error that says the kernel has no GPU (torch without CUDA, or no device visible).
_NO_CUDA = re.compile(r"CUDA|NVIDIA|cuda")


def _grade_notebook(job: Submission, keep: Mapping[str, ExerciseGrade]) -> SubmissionGrade:
    path, name, spec, settings, folder, hidden = job
    spec.setup.require_packages()
    torch.set_num_threads(settings.threads)
    weights = zoo.weights_dir(settings.preset, settings.seed, settings.weights)
    contract_params = settings.weights is not None or get_preset(settings.preset).expected_params is not None
    hub_cache = zoo.hub_cache_for(weights.resolve())
    policies = {e.id: e.policy.relaxed(settings.allow) for e in spec.exercises}
    watch = watch_lists(policies.values())
    run = run_notebook(
        path,
        [e.snapshot() for e in spec.exercises],
        env=kernel_env(hub_cache, settings),
        cell_timeout=settings.cell_timeout,
        notebook_timeout=settings.notebook_timeout,
        level=isolation.resolve(settings.sandbox),
        readable=(hub_cache, weights.resolve()),
        hidden=hidden,
        watch=watch.to_json(),
        files=dict(spec.setup.files),
        map_device=spec.setup.map_device,
    )
    uses, notes = notebook_uses(run, watch, lambda index: _section(run, index))
    notes += outside_exercises(uses, lambda u: any(p.broken_by(u) for p in policies.values()))
    cleared = cap_notebook(run.executed)
    nbformat.write(run.executed, folder / "executed.ipynb")
    # Every section is still located and extracted (the sections bound each other); only the
    # checks of exercises not kept run.
    definitions = spec.definitions()
    exercises = [
        replace(keep[e.id], title=e.title, visibility=e.visibility)
        if e.id in keep
        else _grade_exercise(
            _context(str(weights), contract_params, e.lesson, spec.format),
            run,
            e,
            uses,
            policies[e.id],
            definitions[e.id],
            spec.setup.map_device,
        )
        for e in spec.exercises
    ]
    notes += _device_notes(run, spec.setup.map_device)
    notes += [f"cell {e.index}: {e.message}" for e in run.events if _section(run, e.index) is None]
    if cleared:
        notes.append(
            f"executed.ipynb: outputs of cells {cleared} dropped to keep it under {C.GRADE_NOTEBOOK_BYTES >> 20} MiB"
        )
    if not run.starts:
        notes.append(NO_HEADING_MATCHED)
    notes += [f"segmentation: {note}" for note in run.segmentation]
    grade = SubmissionGrade(name, str(path), "notebook", exercises, notes, seconds=run.seconds)
    for exercise in exercises:
        for check in exercise.checks:
            grade.timings.update(check.details.get("timings", {}))
    image = _image(run, spec)
    if image is not None:
        R.to_pil(image).save(folder / "image.png")
        grade.image = "image.png"
    return grade


def _section(run: RunResult, index: int) -> str | None:
    """The exercise whose cells include ``index`` (None: before the first heading, or past an
    exercise's explicit end)."""
    before = [(start, id) for id, start in run.starts.items() if start <= index]
    if not before:
        return None
    id = max(before)[1]
    return None if run.ends.get(id, len(run.executed.cells)) <= index else id


def _device_notes(run: RunResult, map_device: bool) -> list[str]:
    """Say what the device map did, or, without one, why cells that wanted a GPU failed."""
    if map_device:
        return [f"device map: {device_map.describe(run.mapped or {})}"]
    cells = [e.index for e in run.events if e.kind == "error" and _NO_CUDA.search(e.message)]
    if not cells:
        return []
    return [
        f"device: cells {cells} failed for want of a GPU (the grader has none); a spec may map the "
        "lesson's cuda and float16 code onto the CPU: [lesson] map_device = true (docs/grading.md)"
    ]


def _as_graded(variable: UntrustedValue) -> UntrustedValue:
    """A variable naming a device or dtype (``torch_device = "cuda"``), as the device map ran it."""
    if variable.kind != "value":
        return variable
    return replace(variable, desc={**variable.desc, "value": device_map.as_graded(variable.value)})


def _grade_exercise(
    ctx: ExerciseContext,
    run: RunResult,
    exercise: ExerciseSpec,
    uses: list[Use],
    policy: Policy,
    definition: str,
    map_device: bool,
) -> ExerciseGrade:
    def var(name: str):
        found = run.variable(exercise.id, name)
        return _as_graded(found) if map_device else found

    notes = [f"cell {e.index}: {e.message}" for e in run.events if _section(run, e.index) == exercise.id]
    if exercise.id in run.snapshot_errors:
        notes.append(f"variables not read: {run.snapshot_errors[exercise.id]}")
    if exercise.id not in run.starts:
        notes.append("heading not found (a markdown heading is needed); variables were read at the end of the notebook")
    mine = [u for u in uses if u.where == exercise.id]
    relax = "an instructor can allow a name: sdverify grade --allow NAME, or allow = [...] in the spec"
    gate = own_work("own_work", exercise.title, mine, policy, relax)
    checks = [CheckEntry.from_result(exercise.id, gate, 0, role="gate")]
    for spec in exercise.checks:
        try:
            result = CHECKS[spec.check].fn(ctx, var, **spec.params)
        except Exception as exc:
            result = fail(spec.check, f"could not be checked: {type(exc).__name__}: {exc}")
        checks.append(CheckEntry.from_result(exercise.id, result, spec.points))
    checks = points.withhold(checks, everywhere=None)
    return ExerciseGrade(exercise.id, exercise.title, checks, notes, definition, exercise.visibility)


def _image(run: RunResult, spec: Spec) -> torch.Tensor | None:
    """The notebook's generated image (the first extracted [1,3,512,512] tensor), if any."""
    for exercise in reversed(spec.exercises):
        for variable in run.snapshots.get(exercise.id, {}).values():
            x = variable.tensor
            if x is not None and tuple(x.shape) == C.IMAGE_SHAPE and bool(torch.isfinite(x).all()):
                return x.float()
    return None


# --- .py modules (the checker) ---------------------------------------------------------


def _grade_module(job: Submission, keep: Mapping[str, ExerciseGrade]) -> SubmissionGrade:
    """The checker runs the whole module in one sandbox; stored results in ``keep`` replace its new ones."""
    from sdverify.checker import check_submission

    path, name, settings = job.path, job.name, job.settings

    report = check_submission(
        str(path),
        preset=settings.preset,
        weights=settings.weights,
        timeout=settings.cell_timeout,
        total_timeout=settings.notebook_timeout,
        sandbox=settings.sandbox,
        allow=settings.allow,
        probe_seed=settings.probe_seed,
    )
    by_function: dict[str, list[CheckEntry]] = {}
    for entry in report.checks:
        by_function.setdefault(entry.function, []).append(entry)
    exercises = [
        keep.get(function) or ExerciseGrade(function, f"{function}()", checks)
        for function, checks in by_function.items()
    ]
    seed = report.probe_seed
    notes = [*report.notes, f"drawn cases: probe seed {seed} (sdverify grade --probe-seed {seed} draws them again)"]
    grade = SubmissionGrade(
        name, str(path), "module", exercises, notes=notes, error=report.error, seconds=report.seconds
    )
    return SubmissionGrade.from_dict(grade.to_dict())  # details made JSON-safe like a stored grade


RUNNERS: dict[str, Runner] = {
    ".ipynb": Runner("notebook", _grade_notebook, spec_exercises=True),
    ".py": Runner("module", _grade_module, spec_exercises=False),
}
