"""Grade many submissions: parallel workers, a progress bar, resumable, crash-proof.

Each worker process grades one submission at a time (its notebook runs in yet another
process, the kernel) and keeps its reference components between submissions.  The
grader's own process writes each grade, atomically, as soon as it is known, so an
interrupted batch resumes where it stopped; a stored grade is reused while the
submission, spec, weights and isolation level are unchanged.  The isolation level is
resolved once, here, and every report names it.

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
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from sdverify import isolation, zoo
from sdverify.notebooks.grading import Settings, SubmissionGrade, digest, grade_submission, resolve_settings
from sdverify.notebooks.lms import LmsExport
from sdverify.notebooks.reports import GRADE_FILES, load_grade, submission_dir, write_class, write_submission
from sdverify.notebooks.spec import Spec

SUFFIXES = (".ipynb", ".py")
_SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}


def collect(paths: list[str | Path]) -> list[Path]:
    """Submissions named by ``paths``: notebooks/modules, or folders searched recursively."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.suffix in SUFFIXES
                and p.is_file()
                and not _SKIP_PARTS & set(p.parts)
                and not p.name.startswith(".")
            )
        elif path.is_file() and path.suffix in SUFFIXES:
            found.append(path)
        elif path.exists():
            raise ValueError(f"{path}: expected a .ipynb notebook, a .py module or a folder of them")
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in found))


def unique_names(paths: list[Path]) -> list[str]:
    """One safe folder name per submission: the file stem, suffixed when stems collide."""
    names: list[str] = []
    for path in paths:
        base = re.sub(r"[^\w.-]", "_", path.stem) or "submission"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _grade(
    path: Path, name: str, spec: Spec, settings: Settings, out: Path, hidden: tuple[Path, ...]
) -> SubmissionGrade:
    """In a worker: grade one submission (its executed notebook and image land in its folder)."""
    return grade_submission(path, name, spec, settings, submission_dir(out, name), hidden=hidden)


def _in_fresh_worker(
    path: Path, name: str, spec: Spec, settings: Settings, out: Path, hidden: tuple[Path, ...]
) -> SubmissionGrade:
    """Grade one submission alone in a new worker process (a retry after a worker died)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_grade, path, name, spec, settings, out, hidden).result()


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
    lms: LmsExport | None = None,
) -> list[SubmissionGrade]:
    """Grade every submission under ``paths`` into ``out``; return the grades in input order.
    ``lms``: a roster's ids in grades.csv and the gradebook exports beside it.

    Raises ValueError for an unusable ``settings.sandbox`` (bwrap requested where it cannot run).
    """
    submissions = collect(paths)
    if not submissions:
        raise ValueError(f"no .ipynb or .py submissions found in {[str(p) for p in paths]}")
    settings = resolve_settings(settings)
    level = isolation.resolve(settings.sandbox)
    isolation.warn_once(level)
    # Under bwrap no kernel sees the submissions (its own included: it runs a copy) or the reports.
    hidden = tuple(dict.fromkeys([*(Path(p).resolve() for p in paths), *(p.parent for p in submissions)]))
    hidden = tuple(p for p in hidden if p.is_dir()) + (out.resolve(),)
    names = unique_names(submissions)
    grades: dict[str, SubmissionGrade] = {}
    todo = []
    for path, name in zip(submissions, names):
        stored = None if force else load_grade(submission_dir(out, name))
        if stored is not None and stored.digest == digest(path, spec, settings):
            grades[name] = stored
        else:
            todo.append((path, name))
    bar = tqdm(total=len(todo), desc="grading", unit="submission", disable=not progress or not todo)
    weights = _Zoo(settings)
    written: dict[str, dict[str, str]] = {}

    def store(name: str, grade: SubmissionGrade) -> None:
        grades[name] = grade
        write_submission(grade, submission_dir(out, name))
        written[name] = _file_digests(submission_dir(out, name))
        bar.set_postfix_str(name)

    def alone(path: Path, name: str) -> SubmissionGrade:
        """Grade on intact weights and check them after: a change here is this submission's."""
        grade = _grade(path, name, spec, settings, out, hidden)
        changed = weights.check()
        if changed:
            note = f"this submission changed the grader's weights ({', '.join(changed[:5])}); they were rebuilt"
            grade.notes.append(note)
            grade.error = grade.error or note
        return grade

    recheck: list[tuple[Path, str]] = []  # graded while the weights changed: regraded alone at the end
    if len(todo) == 1 or workers <= 1:
        for path, name in todo:
            store(name, alone(path, name))
            bar.update()
    elif todo:
        failed: list[tuple[Path, str]] = []
        suspects: set[str] = set()
        # spawn: workers import torch themselves rather than inherit a forked OpenMP state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            futures = {pool.submit(_grade, p, n, spec, settings, out, hidden): (p, n) for p, n in todo}
            for future in as_completed(futures):
                path, name = futures[future]
                try:
                    store(name, future.result())
                except Exception:  # its worker died (perhaps at another submission's hand): retried below
                    failed.append((path, name))
                    continue
                finally:
                    bar.update()
                if weights.check():  # changed by this one or by one still running
                    suspects |= {n for f, (_, n) in futures.items() if not f.done()}
                    recheck.append((path, name))
                elif name in suspects:
                    recheck.append((path, name))
        # Alone, in a fresh worker: a submission that kills its worker fails only itself.
        for path, name in failed:
            try:
                store(name, _in_fresh_worker(path, name, spec, settings, out, hidden))
            except Exception as exc:
                kind = "module" if path.suffix == ".py" else "notebook"
                error = f"worker failed twice (does the submission end the process grading it?): {exc!r}"
                store(name, SubmissionGrade(name, str(path), kind, [], error=error, isolation=level))
            if weights.check():
                recheck.append((path, name))
    for path, name in recheck:
        store(name, alone(path, name))
    bar.close()
    ordered = [grades[name] for name in names]
    write_class(ordered, out, spec.title, lms)
    for name, expected in written.items():  # nothing may have rewritten a grade since
        folder = submission_dir(out, name)
        if _file_digests(folder) != expected:
            print(f"sdverify: {name}'s grade files changed after they were written; restored", file=sys.stderr)
            write_submission(grades[name], folder)
    return ordered
