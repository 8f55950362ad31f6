"""A small class of made-up grades, for the tests of the class files (no grading run needed)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from sdverify.grading.model import CheckEntry, ExerciseGrade, SubmissionGrade, grouped
from sdverify.notebooks.reports import submission_dir, write_class, write_submission

TITLE = "A synthetic lesson"


def _check(id: str, exercise: str, points: float, max_points: float, mistake: str | None = None) -> CheckEntry:
    passed = points == max_points
    message = "" if passed else f"{id} is wrong" + (f": {mistake.replace('_', ' ')}" if mistake else "")
    return CheckEntry(id, exercise, passed, points, max_points, message, f"{id} holds", mistake=mistake)


def module_grade(target: str, checks: list[CheckEntry], error: str | None = None, seconds: float = 0.0):
    """What the checker returns for ``target``: ``checks`` grouped by API function."""
    return SubmissionGrade(target, target, "module", grouped(checks), error=error, seconds=seconds)


def student(name: str, ex1: tuple[float, str | None], ex2: tuple[float, str | None], seconds: float) -> SubmissionGrade:
    """Exercise 1: one check of 2 points; Exercise 2: a check of 1 point and one of 3 (partial credit allowed)."""
    (p1, m1), (p2, m2) = ex1, ex2
    exercises = [
        ExerciseGrade("ex1", "Exercise 1", [_check("tokens", "ex1", p1, 2, m1)], definition="d1"),
        ExerciseGrade(
            "ex2",
            "Exercise 2",
            [_check("shape", "ex2", 1, 1), _check("values", "ex2", p2, 3, m2)],
            notes=["cell 7: ZeroDivisionError: division by zero"] if m2 else [],
            definition="d2",
        ),
    ]
    timings = {"clip_time": 0.5, "denoise_time": seconds / 2, "vae_time": 0.25}
    return SubmissionGrade(
        name, f"/class/{name}.ipynb", "notebook", exercises, seconds=seconds, timings=timings, isolation="bwrap"
    )


def synthetic_class() -> list[SubmissionGrade]:
    """Five students: full marks, two who swapped the predictions, one with partial credit, one error."""
    broken = student("eve", (0, None), (0, None), 1.0)
    broken.error = "grading failed: the notebook is not valid JSON"
    return [
        student("carol", (2, None), (3, None), 12.5),
        student("alice", (0, "ids_not_padded"), (0, "cfg_swapped"), 20.0),
        student("bob", (2, None), (0, "cfg_swapped"), 15.25),
        student("dave", (2, None), (1.5, None), 9.0),
        broken,
    ]


def write_outputs(grades: list[SubmissionGrade], out: Path, shard: tuple[int, int] | None = None) -> None:
    """Each student's files (with a generated image, except for a grade with an error), then the class files."""
    for grade in grades:
        folder = submission_dir(out, grade.name)
        if grade.error is None:
            folder.mkdir(parents=True, exist_ok=True)
            shade = sum(map(ord, grade.name)) % 256
            Image.new("RGB", (64, 64), (shade, 128, 255 - shade)).save(folder / "image.png")
            grade.image = "image.png"
        write_submission(grade, folder)
    write_class(grades, out, TITLE, shard)


def fake_checker(monkeypatch, *, corrected: bool = False) -> list[str]:
    """Replace the student-module checker by one that reads its verdicts from the module's text:
    a line ``function = pass`` or ``function = fail mistake_id`` per function (``corrected``:
    every function passes, as after a fix of the checker).  Returns the list of modules it was
    asked to check (the batch must run with one worker: in this process)."""
    from sdverify import checker, zoo

    checked: list[str] = []

    def check_submission(target: str, **_options) -> SubmissionGrade:
        checked.append(Path(target).stem)
        entries = []
        for line in Path(target).read_text().splitlines():
            function, verdict = (part.strip() for part in line.split("="))
            mistake = verdict.split()[1] if verdict.startswith("fail") and not corrected else None
            entries.append(_check(f"{function}.reference", function, 0 if mistake else 2, 2, mistake))
        return module_grade(target, entries, seconds=0.25 * len(entries))

    monkeypatch.setattr(checker, "check_submission", check_submission)
    monkeypatch.setattr(zoo, "verify", lambda folder: [])  # it reads no weights: hashing them is time lost
    return checked


def module_class(folder: Path) -> Path:
    """Seven .py submissions for ``fake_checker``."""
    folder.mkdir(parents=True, exist_ok=True)
    verdicts = ["pass", "fail cfg_swapped", "fail scaling_factor_not_divided"]
    for i, name in enumerate(["ann", "ben", "cat", "dan", "eva", "fay", "gus"]):
        lines = [
            f"{f} = {verdicts[(i + j) % 3 if i % 2 else 0]}" for j, f in enumerate(("cfg_combine", "decode_latents"))
        ]
        (folder / f"{name}.py").write_text("\n".join(lines) + "\n")
    return folder
