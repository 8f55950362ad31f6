"""Sharding a class over existing engines (a CI matrix, a Slurm array, a Kubernetes indexed Job).

``--shard K/N`` grades the submissions whose name hashes to ``K`` of ``N``: every shard
sees the same folder and names every submission alike, so the shares are disjoint, cover
the class, and a late file joins one shard without moving anyone else.  ``merge`` builds the
class files from the shards' outputs; they equal those of one unsharded run (the rows
follow the students' names, not the order they were graded in).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from sdverify.errors import UsageError
from sdverify.grading.model import SubmissionGrade
from sdverify.notebooks.reports import SUMMARY, load_grade, submission_dir, write_class
from sdverify.notebooks.submissions import Skipped

Shard = tuple[int, int]  # (K, N), 1 <= K <= N


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as ``(K, N)``; ValueError saying what was expected otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UsageError(f"--shard expects K/N with 1 <= K <= N (e.g. 2/4); got {text!r}")
    return int(match[1]), int(match[2])


def in_shard(name: str, shard: Shard) -> bool:
    """Is the submission ``name`` (its folder name under ``--out``) in ``shard``?"""
    k, n = shard
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n == k - 1


def merge(outs: list[Path], dest: Path) -> list[SubmissionGrade]:
    """Copy the submissions of the shard outputs ``outs`` into ``dest`` and write its class files.

    Raises ValueError when an output is unfinished (no class summary: its batch did not end),
    a shard of the set is missing, two outputs hold the same student, or they were graded
    with different titles or exercise definitions (different specs).
    """
    if not outs:
        raise UsageError("merge: name the shard outputs (the --out folders of the shard runs)")
    summaries = {out: _summary(out) for out in outs}
    titles = {s["title"] for s in summaries.values()}
    if len(titles) > 1:
        raise UsageError(f"merge: the outputs were graded with different specs (titles {sorted(titles)})")
    _check_shards({out: s.get("shard") for out, s in summaries.items()})
    found: dict[str, tuple[Path, SubmissionGrade]] = {}
    for out in outs:
        students = out / "submissions"  # absent in a shard that drew no one
        for folder in sorted(p for p in students.iterdir() if p.is_dir()) if students.is_dir() else []:
            grade = load_grade(folder)
            if grade is None:
                raise UsageError(f"merge: {folder} has no readable grade.json (rerun that shard: it resumes)")
            if grade.name in found:
                raise UsageError(f"merge: {grade.name} is in both {found[grade.name][0]} and {out}")
            found[grade.name] = (out, grade)
    _check_definitions({name: (out, grade) for name, (out, grade) in found.items()})
    dest.mkdir(parents=True, exist_ok=True)
    for name, (out, _grade) in found.items():
        source, target = submission_dir(out, name), submission_dir(dest, name)
        if source.resolve() != target.resolve():
            shutil.copytree(source, target, dirs_exist_ok=True)
    grades = [grade for _, grade in found.values()]
    # Every shard lists the whole folder's skipped files.
    skipped = {Skipped(s["file"], s["reason"]) for summary in summaries.values() for s in summary.get("skipped", [])}
    write_class(grades, dest, titles.pop(), skipped=sorted(skipped))
    return sorted(grades, key=lambda g: g.name)


def _summary(out: Path) -> dict:
    path = out / SUMMARY
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UsageError(
            f"merge: {path} is missing or unreadable: is {out} a grade output, and did its batch finish? "
            "(rerun it: it resumes)"
        ) from None


def _check_shards(shards: dict[Path, list[int] | None]) -> None:
    """Outputs of a sharded run must be all its shards, once each."""
    listed = {out: tuple(s) for out, s in shards.items() if s}
    if not listed:
        return
    if len(listed) != len(shards):
        plain = [str(out) for out in shards if out not in listed]
        raise UsageError(f"merge: {', '.join(plain)} graded unsharded; the other outputs are shards")
    counts = {n for _, n in listed.values()}
    if len(counts) > 1:
        raise UsageError(f"merge: the outputs are shards of different splits (N = {sorted(counts)})")
    n = counts.pop()
    have = sorted(k for k, _ in listed.values())
    missing = sorted(set(range(1, n + 1)) - set(have))
    if missing or len(have) != len(set(have)):
        raise UsageError(f"merge: shards {have} of {n} given; missing {missing or 'none'}, each once")


def _check_definitions(found: dict[str, tuple[Path, SubmissionGrade]]) -> None:
    """The outputs must have checked each exercise under the same definition (one spec)."""
    seen: dict[str, tuple[str, Path]] = {}
    for out, grade in found.values():
        for exercise in grade.exercises:
            if not exercise.definition:
                continue
            first = seen.setdefault(exercise.id, (exercise.definition, out))
            if first[0] != exercise.definition and first[1] != out:
                raise UsageError(
                    f"merge: exercise {exercise.id} was graded under different spec definitions "
                    f"in {first[1]} and {out}: regrade with one spec"
                )
