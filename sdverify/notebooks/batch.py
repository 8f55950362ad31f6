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
verified against its sha256 manifest before the batch and after every submission (a
change is rebuilt at once, what was graded since the last good check is regraded one by
one, and the submission after which it changed is named); after the batch the written
grade files are checked against what was written, and restored if anything changed them.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from sdverify import isolation, zoo
from sdverify.errors import UsageError
from sdverify.notebooks.grading import (
    NOT_RUN,
    Settings,
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
from sdverify.sanitise import printable

SKIPPED_SHOWN = 20  # skipped files printed (all of them are in summary.json and index.html)


def _plan(
    entry: Entry, name: str, stored: SubmissionGrade | None, spec: Spec, settings: Settings, regrade: Sequence[str]
) -> SubmissionGrade | Job:
    """``plan``'s answer, or the grade of a file refused (unreadable since it was found included)."""
    if entry.refusal is not None:
        return refused(entry.path, name, spec, entry.refusal)
    try:
        return plan(entry.path, name, stored, spec, settings, regrade=regrade)
    except OSError as exc:
        return refused(entry.path, name, spec, f"{entry.path.name} cannot be read: {exc.strerror or exc}")


def _print_skipped(skipped: Sequence[Skipped]) -> None:
    """Name the files that are not submissions, and why (all of them: summary.json, index.html)."""
    if not skipped:
        return
    lines = [f"  {s.file}: {s.reason}" for s in skipped[:SKIPPED_SHOWN]]
    more = len(skipped) - len(lines)
    lines += [f"  ... and {more} more (summary.json lists them all)"] if more > 0 else []
    print(printable("\n".join([f"sdverify: not graded, {len(skipped)} file(s):", *lines])), file=sys.stderr)


def _grade(job: Job, spec: Spec, settings: Settings, out: Path, hidden: tuple[Path, ...]) -> SubmissionGrade:
    """In a worker: grade one submission (its executed notebook and image land in its folder)."""
    return grade_submission(
        job.path, job.name, spec, settings, submission_dir(out, job.name), hidden=hidden, keep=job.keep
    )


def _in_fresh_worker(job: Job, spec: Spec, settings: Settings, out: Path, hidden: tuple[Path, ...]) -> SubmissionGrade:
    """Grade one submission alone in a new worker process (a retry after a worker died)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_grade, job, spec, settings, out, hidden).result()


def _file_digests(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in GRADE_FILES if (folder / n).is_file()}


class _Zoo:
    """The weights every kernel and worker loads, checked against their sha256 manifest."""

    def __init__(self, settings: Settings) -> None:
        self.folder = zoo.weights_dir(settings.preset, settings.seed, settings.weights)
        self.check()

    def check(self) -> list[str]:
        """The files that changed since the last check (the snapshot is rebuilt at once)."""
        changed = zoo.verify(self.folder)
        if changed:
            try:
                self.folder = zoo.repair(self.folder)
            except ValueError:  # real weights: named, not rebuilt
                pass
        return changed


def grade_batch(
    paths: list[str | Path],
    out: Path,
    *,
    spec: Spec,
    settings: Settings,
    workers: int,
    force: bool = False,
    progress: bool = True,
    shard: Shard | None = None,
    only: Sequence[str] = (),
    exercises: Sequence[str] = (),
    lms: LmsExport | None = None,
) -> list[SubmissionGrade]:
    """Grade every submission under ``paths`` into ``out``; return the grades in input order.

    ``shard``: grade only that share of the submissions (the class files cover it alone).
    ``only``: regrade these students (names as in grades.csv); the others keep their stored
    grades (one never graded is left out of the class files, with a warning).
    ``exercises``: regrade these exercises (or a module's API functions), keeping the other
    stored results.  ``force`` regrades everything.  ``lms``: a roster's ids in grades.csv and
    the gradebook exports beside it.

    Raises ValueError for an unusable ``settings.sandbox`` (bwrap requested where it cannot
    run) and for ``only``/``exercises`` naming no student or exercise of the batch.
    """
    found = survey(paths, exclude=(out,))
    if not found.submissions:
        raise UsageError(
            f"no .ipynb or .py submissions found in {[str(p) for p in paths]}"
            + "".join(f"\n  skipped {s.file}: {s.reason}" for s in found.skipped[:SKIPPED_SHOWN])
        )
    entries = found.submissions
    names = unique_names(entries)  # of the whole class: every shard names everyone alike
    check_students(names, only)
    check_exercises(spec, exercises)
    spec.setup.require_packages()
    chosen = [(entry, name) for entry, name in zip(entries, names) if shard is None or in_shard(name, shard)]
    files = {name: entry.file for entry, name in chosen}
    settings = resolve_settings(settings)
    level = isolation.resolve(settings.sandbox)
    isolation.warn_once(level)
    # Under bwrap no kernel sees the submissions (its own included: it runs a copy) or the reports.
    hidden = tuple(dict.fromkeys([*(Path(p).resolve() for p in paths), *(e.path.parent for e in entries)]))
    hidden = tuple(p for p in hidden if p.is_dir()) + (out.resolve(),)
    grades: dict[str, SubmissionGrade] = {}
    updated: list[str] = []  # refused, or stored grades whose exercise titles the spec renamed: rewritten
    todo: list[Job] = []
    never: list[str] = []
    for entry, name in chosen:
        stored = load_grade(submission_dir(out, name))
        if only and name not in only:
            if stored is None:
                never.append(name)
            else:
                grades[name] = stored
            continue
        whole = force or (only and not exercises)
        outcome = _plan(entry, name, None if whole else stored, spec, settings, exercises)
        if isinstance(outcome, Job):
            todo.append(outcome)
        else:
            grades[name] = outcome
            updated += [] if outcome is stored else [name]
    _print_skipped(found.skipped)
    if never:
        print(f"sdverify: never graded, left out of the class files: {', '.join(never)}", file=sys.stderr)
    bar = tqdm(total=len(todo), desc="grading", unit="submission", disable=not progress or not todo)
    weights = _Zoo(settings)
    written: dict[str, dict[str, str]] = {}

    def store(name: str, grade: SubmissionGrade) -> None:
        grade.file = files[name]
        grades[name] = grade
        write_submission(grade, submission_dir(out, name))
        written[name] = _file_digests(submission_dir(out, name))
        bar.set_postfix_str(name)

    for name in updated:
        store(name, grades[name])

    def alone(job: Job) -> SubmissionGrade:
        """Grade on intact weights and check them after: a change here is this submission's."""
        grade = _grade(job, spec, settings, out, hidden)
        changed = weights.check()
        if changed:
            note = f"this submission changed the grader's weights ({', '.join(changed[:5])}); they were rebuilt"
            grade.notes.append(note)
            grade.error = grade.error or note
        return grade

    recheck: list[Job] = []  # graded while the weights changed: regraded alone at the end
    if len(todo) == 1 or workers <= 1:
        for job in todo:
            store(job.name, alone(job))
            bar.update()
    elif todo:
        failed: list[Job] = []
        suspects: set[str] = set()
        # spawn: workers import torch themselves rather than inherit a forked OpenMP state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            futures = {pool.submit(_grade, job, spec, settings, out, hidden): job for job in todo}
            for future in as_completed(futures):
                job = futures[future]
                try:
                    store(job.name, future.result())
                except Exception:  # its worker died (perhaps at another submission's hand): retried below
                    failed.append(job)
                    continue
                finally:
                    bar.update()
                if weights.check():  # changed by this one or by one still running
                    suspects |= {j.name for f, j in futures.items() if not f.done()}
                    recheck.append(job)
                elif job.name in suspects:
                    recheck.append(job)
        # Alone, in a fresh worker: a submission that kills its worker fails only itself.
        for job in failed:
            try:
                store(job.name, _in_fresh_worker(job, spec, settings, out, hidden))
            except Exception as exc:
                kind = runner_for(job.path).kind
                error = f"worker failed twice (does the submission end the process grading it?): {exc!r}"
                kept = list(job.keep.values())  # this same file's stored results stay
                store(job.name, SubmissionGrade(job.name, str(job.path), kind, kept, error=error, isolation=level))
            if weights.check():
                recheck.append(job)
    for job in recheck:
        store(job.name, alone(job))
    bar.close()
    partly = sum(bool(job.keep) for job in todo)
    refusals = sum(g.isolation == NOT_RUN for g in grades.values())
    print(
        f"sdverify: graded {len(todo)} submission(s)"
        + (f" ({partly} in part: their other exercises kept)" if partly else "")
        + (f", {refusals} refused (graded 0 without running: see their error)" if refusals else "")
        + f", {len(grades) - len(todo) - refusals} up to date",
        file=sys.stderr,
    )
    ordered = [grades[name] for _, name in chosen if name in grades]
    for grade in ordered:
        grade.file = files[grade.name]
    write_class(ordered, out, spec.title, shard, lms, found.skipped)
    for name, expected in written.items():  # nothing may have rewritten a grade since
        folder = submission_dir(out, name)
        if _file_digests(folder) != expected:
            print(f"sdverify: {name}'s grade files changed after they were written; restored", file=sys.stderr)
            write_submission(grades[name], folder)
    return ordered
