"""Grade many submissions: parallel workers, a progress bar, resumable, crash-proof.

Each worker process grades one submission at a time (its notebook runs in yet another
process, the kernel) and keeps its reference components between submissions.  A grade
is written to disk as soon as it is known, so an interrupted batch resumes where it
stopped; a stored grade is reused while the submission, spec, weights and isolation level
are unchanged.  The isolation level is resolved once, here, and every report names it.
"""

from __future__ import annotations

import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from sdverify import isolation
from sdverify.notebooks.grading import Settings, SubmissionGrade, digest, grade_submission, resolve_settings
from sdverify.notebooks.reports import load_grade, submission_dir, write_class, write_submission
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


def _grade_and_store(
    path: Path, name: str, spec: Spec, settings: Settings, out: Path, hidden: tuple[Path, ...]
) -> SubmissionGrade:
    folder = submission_dir(out, name)
    grade = grade_submission(path, name, spec, settings, folder, hidden=hidden)
    write_submission(grade, folder)
    return grade


def grade_batch(
    paths: list[str | Path],
    out: Path,
    *,
    spec: Spec,
    settings: Settings,
    workers: int,
    force: bool = False,
    progress: bool = True,
) -> list[SubmissionGrade]:
    """Grade every submission under ``paths`` into ``out``; return the grades in input order.

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
    if len(todo) == 1 or workers <= 1:
        for path, name in todo:
            bar.set_postfix_str(name)
            grades[name] = _grade_and_store(path, name, spec, settings, out, hidden)
            bar.update()
    elif todo:
        # spawn: workers import torch themselves rather than inherit a forked OpenMP state.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            futures = {
                pool.submit(_grade_and_store, path, name, spec, settings, out, hidden): (path, name)
                for path, name in todo
            }
            for future in as_completed(futures):
                path, name = futures[future]
                try:
                    grades[name] = future.result()
                except Exception as exc:
                    kind = "module" if path.suffix == ".py" else "notebook"
                    grades[name] = SubmissionGrade(
                        name, str(path), kind, [], error=f"worker failed: {exc!r}", isolation=level
                    )
                    write_submission(grades[name], submission_dir(out, name))
                bar.set_postfix_str(name)
                bar.update()
    bar.close()
    ordered = [grades[name] for name in names]
    write_class(ordered, out, spec.title)
    return ordered
