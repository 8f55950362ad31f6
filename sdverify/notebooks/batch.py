"""Grade many submissions: parallel workers, a progress bar, resumable, crash-proof.

Each worker process grades one submission at a time (its notebook runs in yet another
process, the kernel) and keeps its reference components between submissions.  The
grader's own process writes each grade, atomically, as soon as it is known, so an
interrupted batch resumes where it stopped; a stored result is reused while the
submission, weights and isolation level are unchanged, exercise by exercise while its
spec definition is (``regrade``).  A batch may be one shard of the class (``shards``),
or a few of its students or exercises (``only``, ``exercises``).  The isolation level is
resolved once, here, and every report names it.  Which files are submissions, which are
skipped and why, and how students are named: ``submissions``.

A batch always finishes: a worker that dies (a submission that kills it) fails only the
submissions it had, and each is retried once alone in a fresh worker; the zoo snapshot is
verified against its sha256 manifest before the batch and once after every submission (a
``.py``'s by the checker's own ``sandbox.grader_files`` gate, a notebook's here; a
change is rebuilt at once, what was graded since the last good check is regraded one by
one, and the submission after which it changed is named); after the batch the written
grade files are checked against what was written, and restored if anything changed them.

The batch prints nothing: it reports what happens as events (:data:`Event`) to the caller's
``on_event``, and the command line renders them (pypa/build's thin CLI over a library).  What
stops nothing but the user should know (``sdverify.errors.SdverifyWarning``: the process level,
a root grader) is a Python warning, raised in the caller's process even when a worker met it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from sdverify import isolation, zoo
from sdverify.errors import SdverifyWarning, UsageError
from sdverify.notebooks.grading import (
    NOT_RUN,
    SubmissionGrade,
    grade_submission,
    refused,
    resolve_settings,
    runner_for,
)
from sdverify.notebooks.lms import LmsExport
from sdverify.notebooks.regrade import Job, check_exercises, check_students, plan
from sdverify.notebooks.reports import GRADE_FILES, load_grade, submission_dir, write_class, write_submission
from sdverify.notebooks.shards import Shard, in_shard
from sdverify.notebooks.spec import Spec
from sdverify.notebooks.submissions import Entry, Skipped, survey, unique_names
from sdverify.settings import Settings

SKIPPED_SHOWN = 20  # skipped files named in an error (all of them are in summary.json and index.html)


# --- events: what the batch reports; the CLI renders them ------------------------------


@dataclass(frozen=True)
class FilesSkipped:
    """Files under the given paths that are not submissions, and why."""

    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class NeverGraded:
    """``only`` left these students to their stored grades, and they have none: not in the class files."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Started:
    """``total`` submissions are about to be graded (the others are up to date)."""

    total: int


@dataclass(frozen=True)
class Stored:
    """A grade was written (``graded``: a new grade, not a stored one brought up to date)."""

    name: str
    graded: bool


@dataclass(frozen=True)
class Finished:
    """The counts of the batch, before the class files are written."""

    graded: int
    partly: int  # of ``graded``: only some exercises, the others kept
    refused: int  # graded 0 without running
    up_to_date: int


@dataclass(frozen=True)
class Restored:
    """A submission's grade files changed after they were written (by what?); they were written again."""

    name: str


Event = FilesSkipped | NeverGraded | Started | Stored | Finished | Restored  # what ``on_event`` receives


# --- plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """What every step of a batch needs: the choice of files, the spec, resolved settings, hidden folders."""

    out: Path
    spec: Spec
    settings: Settings  # resolved: its sandbox is the level used
    chosen: list[tuple[Entry, str]]  # (file, student name) of this shard, in input order
    files: dict[str, str]  # student name -> the file as found (grades.csv, rosters)
    hidden: tuple[Path, ...]  # folders no bwrap kernel sees: the submissions and the reports
    skipped: list[Skipped]


@dataclass
class _Plan:
    """What the stored grades leave to do."""

    grades: dict[str, SubmissionGrade] = field(default_factory=dict)  # up to date, or refused
    updated: list[str] = field(default_factory=list)  # of ``grades``: to write again (refused, retitled)
    todo: list[Job] = field(default_factory=list)
    never: list[str] = field(default_factory=list)


def _prepare(
    paths: Sequence[str | Path], out: Path, spec: Spec, settings: Settings, shard: Shard | None
) -> tuple[_Batch, list[str]]:
    """The batch's files and settings, and every student's name (of the whole class: shards name alike)."""
    found = survey(paths, exclude=(out,))
    if not found.submissions:
        raise UsageError(
            f"no .ipynb or .py submissions found in {[str(p) for p in paths]}"
            + "".join(f"\n  skipped {s.file}: {s.reason}" for s in found.skipped[:SKIPPED_SHOWN])
        )
    entries = found.submissions
    names = unique_names(entries)
    chosen = [(entry, name) for entry, name in zip(entries, names) if shard is None or in_shard(name, shard)]
    # Under bwrap no kernel sees the submissions (its own included: it runs a copy) or the reports.
    hidden = tuple(dict.fromkeys([*(Path(p).resolve() for p in paths), *(e.path.parent for e in entries)]))
    hidden = tuple(p for p in hidden if p.is_dir()) + (out.resolve(),)
    files = {name: entry.file for entry, name in chosen}
    batch = _Batch(out, spec, resolve_settings(settings), chosen, files, hidden, found.skipped)
    return batch, names


def _plan_one(
    entry: Entry, name: str, stored: SubmissionGrade | None, batch: _Batch, regrade: Sequence[str]
) -> SubmissionGrade | Job:
    """``plan``'s answer, or the grade of a file refused (unreadable since it was found included)."""
    if entry.refusal is not None:
        return refused(entry.path, name, batch.spec, entry.refusal)
    try:
        return plan(entry.path, name, stored, batch.spec, batch.settings, regrade=regrade)
    except OSError as exc:
        return refused(entry.path, name, batch.spec, f"{entry.path.name} cannot be read: {exc.strerror or exc}")


def _plan(batch: _Batch, *, force: bool, only: Sequence[str], exercises: Sequence[str]) -> _Plan:
    """Which submissions to grade (whole or in part), and which stored grades stand."""
    result = _Plan()
    for entry, name in batch.chosen:
        stored = load_grade(submission_dir(batch.out, name))
        if only and name not in only:
            if stored is None:
                result.never.append(name)
            else:
                result.grades[name] = stored
            continue
        whole = force or (only and not exercises)
        outcome = _plan_one(entry, name, None if whole else stored, batch, exercises)
        if isinstance(outcome, Job):
            result.todo.append(outcome)
        else:
            result.grades[name] = outcome
            result.updated += [] if outcome is stored else [name]
    return result


# --- run: one worker, or a pool; then the retries -----------------------------------------


def _grade(job: Job, batch: _Batch) -> SubmissionGrade:
    """In a worker: grade one submission (its executed notebook and image land in its folder)."""
    folder = submission_dir(batch.out, job.name)
    return grade_submission(job.path, job.name, batch.spec, batch.settings, folder, hidden=batch.hidden, keep=job.keep)


def _in_worker(job: Job, batch: _Batch) -> tuple[SubmissionGrade, list[str]]:
    """:func:`_grade` in a pool's process, its :class:`SdverifyWarning` messages returned beside the
    grade: the caller warns them again in its own process, where the CLI shows them."""
    with warnings.catch_warnings(record=True) as caught:
        grade = _grade(job, batch)
    for w in caught:
        if not issubclass(w.category, SdverifyWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)  # as it would have been
    return grade, [str(w.message) for w in caught if issubclass(w.category, SdverifyWarning)]


def _relayed(result: tuple[SubmissionGrade, list[str]]) -> SubmissionGrade:
    """A worker's grade, its warnings warned here (once each: the default filter)."""
    grade, messages = result
    for message in messages:
        warnings.warn(message, SdverifyWarning, stacklevel=2)
    return grade


def _in_fresh_worker(job: Job, batch: _Batch) -> SubmissionGrade:
    """Grade one submission alone in a new worker process (a retry after a worker died)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return _relayed(pool.submit(_in_worker, job, batch).result())


class _Zoo:
    """The weights every kernel and worker loads, checked against their sha256 manifest: once
    before the batch, and once after each submission whose runner does not check them itself."""

    def __init__(self, settings: Settings) -> None:
        self.folder = zoo.weights_dir(settings.preset, settings.seed, settings.weights)
        self.check()

    def check(self) -> list[str]:
        """The files that changed since the last check (a zoo snapshot is rebuilt at once)."""
        changed, self.folder, _ = zoo.verify_after_run(self.folder)
        return changed

    def after(self, job: Job) -> list[str]:
        """:meth:`check` after ``job`` ran, unless its runner's grade already holds that check."""
        return [] if runner_for(job.path).checks_weights else self.check()


class _Writer:
    """Writes each grade as soon as it is known, and remembers what it wrote."""

    def __init__(self, batch: _Batch, grades: dict[str, SubmissionGrade], emit: Callable[[Event], None]) -> None:
        self.batch, self.grades, self.emit = batch, grades, emit
        self.written: dict[str, dict[str, str]] = {}

    def store(self, name: str, grade: SubmissionGrade, *, graded: bool = True) -> None:
        folder = submission_dir(self.batch.out, name)
        grade.file = self.batch.files[name]
        self.grades[name] = grade
        write_submission(grade, folder)
        self.written[name] = _file_digests(folder)
        self.emit(Stored(name, graded))

    def restore_changed(self) -> None:
        """Write again any grade whose files changed since they were written."""
        for name, expected in self.written.items():
            folder = submission_dir(self.batch.out, name)
            if _file_digests(folder) != expected:
                self.emit(Restored(name))
                write_submission(self.grades[name], folder)


def _file_digests(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in GRADE_FILES if (folder / n).is_file()}


def _alone(job: Job, batch: _Batch, weights: _Zoo) -> SubmissionGrade:
    """Grade on intact weights and check them after: a change here is this submission's."""
    grade = _grade(job, batch)
    changed = weights.after(job)
    if changed:
        note = f"this submission changed the grader's weights ({', '.join(changed[:5])}); they were rebuilt"
        grade.notes.append(note)
        grade.error = grade.error or note
    return grade


def _run_pool(
    todo: list[Job], batch: _Batch, workers: int, weights: _Zoo, writer: _Writer
) -> tuple[list[Job], list[Job]]:
    """Grade ``todo`` in parallel workers; return (the jobs whose worker died, those to grade
    again alone: graded while the weights changed, by them or by one running beside them)."""
    failed: list[Job] = []
    recheck: list[Job] = []
    suspects: set[str] = set()
    # spawn: workers import torch themselves rather than inherit a forked OpenMP state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
        futures = {pool.submit(_in_worker, job, batch): job for job in todo}
        for future in as_completed(futures):
            job = futures[future]
            try:
                grade = _relayed(future.result())
            except Exception:  # its worker died (perhaps at another submission's hand): retried alone
                failed.append(job)
                continue
            writer.store(job.name, grade)
            if weights.after(job):  # changed by this one or by one still running
                suspects |= {j.name for f, j in futures.items() if not f.done()}
                recheck.append(job)
            elif job.name in suspects:
                recheck.append(job)
    return failed, recheck


def _retry(failed: list[Job], batch: _Batch, weights: _Zoo, writer: _Writer) -> list[Job]:
    """Grade each job whose worker died alone in a fresh worker (a submission that kills its
    worker fails only itself); return those to grade again alone (the weights changed)."""
    recheck: list[Job] = []
    for job in failed:
        try:
            writer.store(job.name, _in_fresh_worker(job, batch))
        except Exception as exc:
            kind = runner_for(job.path).kind
            error = f"worker failed twice (does the submission end the process grading it?): {exc!r}"
            kept = list(job.keep.values())  # this same file's stored results stay
            level = isolation.resolve(batch.settings.sandbox)
            writer.store(job.name, SubmissionGrade(job.name, str(job.path), kind, kept, error=error, isolation=level))
        if weights.after(job):
            recheck.append(job)
    return recheck


def _run(todo: list[Job], batch: _Batch, workers: int, writer: _Writer) -> None:
    """Grade every job: alone when there is one (or one worker), else in a pool with retries."""
    weights = _Zoo(batch.settings)
    recheck: list[Job] = []
    if len(todo) == 1 or workers <= 1:
        for job in todo:
            writer.store(job.name, _alone(job, batch, weights))
    elif todo:
        failed, recheck = _run_pool(todo, batch, workers, weights, writer)
        recheck += _retry(failed, batch, weights, writer)
    for job in recheck:
        writer.store(job.name, _alone(job, batch, weights))


# --- the batch ---------------------------------------------------------------------------


def grade_batch(
    paths: Sequence[str | Path],
    out: Path,
    *,
    spec: Spec,
    settings: Settings,
    workers: int,
    force: bool = False,
    shard: Shard | None = None,
    only: Sequence[str] = (),
    exercises: Sequence[str] = (),
    lms: LmsExport | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> list[SubmissionGrade]:
    """Grade every submission under ``paths`` into ``out``; return the grades in input order.

    ``shard``: grade only that share of the submissions (the class files cover it alone).
    ``only``: regrade these students (names as in grades.csv); the others keep their stored
    grades (one never graded is left out of the class files: a :class:`NeverGraded` event).
    ``exercises``: regrade these exercises (or a module's API functions), keeping the other
    stored results.  ``force`` regrades everything.  ``lms``: a roster's ids in grades.csv and
    the gradebook exports beside it.  ``on_event``: called with each :data:`Event`, in order.

    Raises ValueError for an unusable ``settings.sandbox`` (bwrap requested where it cannot
    run) and for ``only``/``exercises`` naming no student or exercise of the batch.
    """
    emit = on_event or (lambda event: None)
    batch, names = _prepare(paths, out, spec, settings, shard)
    check_students(names, only)
    check_exercises(spec, exercises)
    spec.setup.require_packages()
    isolation.warn_once(isolation.resolve(batch.settings.sandbox))
    todo = _plan(batch, force=force, only=only, exercises=exercises)
    if batch.skipped:
        emit(FilesSkipped(tuple(batch.skipped)))
    if todo.never:
        emit(NeverGraded(tuple(todo.never)))
    emit(Started(len(todo.todo)))
    writer = _Writer(batch, todo.grades, emit)
    for name in todo.updated:
        writer.store(name, todo.grades[name], graded=False)
    _run(todo.todo, batch, workers, writer)
    grades = todo.grades
    refusals = sum(g.isolation == NOT_RUN for g in grades.values())
    partly = sum(bool(job.keep) for job in todo.todo)
    emit(Finished(len(todo.todo), partly, refusals, len(grades) - len(todo.todo) - refusals))
    ordered = [grades[name] for _, name in batch.chosen if name in grades]
    for grade in ordered:
        grade.file = batch.files[grade.name]
    write_class(ordered, out, spec.title, shard, lms, batch.skipped)
    writer.restore_changed()  # nothing may have rewritten a grade since
    return ordered
