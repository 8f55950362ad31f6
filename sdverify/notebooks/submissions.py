"""What a batch grades: every file under the paths given is a submission or skipped, with why.

A submission is a regular file of a kind a runner grades (``.ipynb``, ``.py``) inside the
folder it was found in (a file named alone: its own folder).  Such a file that cannot be
graded is still that student's: a symbolic link (GitHub Classroom clones keep them), a path
resolving outside the folder, something other than a regular file, an unreadable file, or
a file named alone of another kind becomes a row graded 0 whose error says why, never an
exit of the batch.  Every other file is skipped with its reason: other kinds, dot-files,
symbolic links of other kinds, and folders not searched (dot-folders, caches, linked
folders, the report folder), each such folder listed once.

Names are file stems made safe for folders, spreadsheets and shells (letters, digits,
``_ . -``; no leading ``-`` or ``.``; at most ``NAME_CHARS`` characters).  Every member of a
set of colliding stems gets a short hash of its path as suffix, so a name depends on the set
of files, never on their order, and a late file cannot take an earlier student's name.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sdverify.notebooks.grading import RUNNERS

SUFFIXES = tuple(RUNNERS)  # every kind a runner grades
NAME_CHARS = 40  # a name's stem part: 40 four-byte characters and a suffix fit a 255-byte file name
_NOT_SEARCHED = {"__pycache__": "a Python cache"}  # beside dot-folders (.git, .ipynb_checkpoints)


@dataclass(frozen=True)
class Entry:
    """One submission: ``path`` is the resolved folder it was found in joined with the file's
    own path below it (the file itself never resolved); ``file`` is that path below the folder."""

    path: Path
    file: str
    refusal: str | None = None  # why it is graded 0 without running (None: it is graded)


class Skipped(NamedTuple):
    """A file (or a folder, with a trailing ``/``) that is not a submission, and why."""

    file: str
    reason: str


@dataclass
class Survey:
    """Every file under the paths given: a submission (graded, or refused in its row) or skipped."""

    submissions: list[Entry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def survey(paths: Sequence[str | Path], *, exclude: Iterable[Path] = ()) -> Survey:
    """Every file under ``paths`` (files, or folders searched recursively without following
    links), as a submission or skipped; ``exclude``: folders listed as skipped, unsearched.

    Raises FileNotFoundError for a path that does not exist (a usage error: nothing to grade).
    """
    found = Survey()
    excluded = {Path(p).resolve() for p in exclude}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():  # a folder given may be a link (the instructor's choice); links below it are not
            root = path.resolve()
            _walk(root, root, excluded, found)
        elif path.is_symlink() or path.exists():
            root = path.absolute().parent.resolve()
            found.submissions.append(_entry(root / path.name, root, alone=True))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    unique = {e.path: e for e in found.submissions}  # a file named alone and inside a folder given: once
    found.submissions = list(unique.values())
    return found


def collect(paths: Sequence[str | Path]) -> list[Path]:
    """The submissions' paths under ``paths`` (those graded 0 without running included)."""
    return [entry.path for entry in survey(paths).submissions]


def _walk(folder: Path, root: Path, excluded: set[Path], found: Survey) -> None:
    try:
        items = sorted(os.scandir(folder), key=lambda item: item.name)
    except OSError as exc:
        found.skipped.append(Skipped(f"{folder.relative_to(root).as_posix()}/", f"cannot be listed: {exc.strerror}"))
        return
    for item in items:
        path = Path(item.path)
        file = path.relative_to(root).as_posix()
        is_dir = item.is_dir(follow_symlinks=False)
        if is_dir and path in excluded:
            found.skipped.append(Skipped(file + "/", "the report folder (--out): not searched"))
        elif is_dir and (item.name.startswith(".") or item.name in _NOT_SEARCHED):
            what = _NOT_SEARCHED.get(item.name, "a hidden folder (its name starts with '.')")
            found.skipped.append(Skipped(file + "/", f"{what}: not searched"))
        elif is_dir:
            _walk(path, root, excluded, found)
        elif item.name.startswith("."):
            found.skipped.append(Skipped(file, "a hidden file (its name starts with '.')"))
        elif path.suffix in SUFFIXES:
            found.submissions.append(_entry(path, root, alone=False))
        elif item.is_symlink():
            found.skipped.append(Skipped(file, "a symbolic link: not followed"))
        else:
            found.skipped.append(Skipped(file, f"not a {' or '.join(SUFFIXES)} file"))


def _entry(path: Path, root: Path, *, alone: bool) -> Entry:
    """``path`` as a submission, with the reason it is graded 0 if it cannot be graded."""
    file = path.relative_to(root).as_posix()
    return Entry(path, file, _refusal(path, root, alone))


def _refusal(path: Path, root: Path, alone: bool) -> str | None:
    rule = "only regular .ipynb and .py files inside the submission folder are graded"
    if path.is_symlink():
        return f"{path.name} is a symbolic link (to {os.readlink(path)}); {rule}"
    if root not in path.resolve().parents:  # a folder swapped for a link while the batch ran
        return f"{path.name} resolves outside the submission folder; {rule}"
    if alone and path.suffix not in SUFFIXES:
        return f"{path.name}: cannot grade a {path.suffix or 'suffix-less'} file; {rule}"
    if not stat.S_ISREG(path.stat().st_mode):
        return f"{path.name} is not a regular file; {rule}"
    if not os.access(path, os.R_OK):
        return f"{path.name} is not readable (permission denied)"
    return None


def unique_names(entries: Sequence[Entry]) -> list[str]:
    """One safe name per submission, the same whatever the order of ``entries`` (see the module doc)."""
    files = Counter(e.file for e in entries)
    keys = [e.file if files[e.file] == 1 else str(e.path) for e in entries]  # same file under two folders
    hashes = [hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest() for key in keys]
    names = [_safe(Path(e.file).stem) for e in entries]
    digits = 8
    while len(set(names)) < len(names):  # again when a file is named like a hashed name: longer hashes
        counts = Counter(names)
        names = [f"{n}-{h[:digits]}" if counts[n] > 1 else n for n, h in zip(names, hashes)]
        digits *= 2
    return names


def _safe(stem: str) -> str:
    """``stem`` as a folder name that a spreadsheet or shell takes literally."""
    return re.sub(r"[^\w.-]", "_", stem).lstrip("-.")[:NAME_CHARS] or "submission"
