"""``sdverify spec draft`` and ``sdverify release`` on the bundled lesson, graded.

The drafted spec grades the solved lesson at full marks and catches injected mistakes (the
catalog's mistaken copies of the lesson); the released lesson grades at its unfilled score.
A drafting or a grading costs ~10-20 s of CPU each: all of it is in the slow tier (the laptop
tier has the drafter's and the releaser's unit tests: tests/test_draft_units.py, tests/test_release.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from sdverify.notebooks.draft import draft_spec
from sdverify.notebooks.grading import Settings, grade_submission
from sdverify.notebooks.release import write_release
from sdverify.notebooks.spec import Spec, load_spec

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
SOLVED = SAMPLES / "correct.ipynb"


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    path = tmp_path_factory.mktemp("draft") / "spec.toml"
    path.write_text(draft_spec(SOLVED, Settings()))
    return load_spec(path)


def _grade(path: Path, spec: Spec, folder: Path):
    return grade_submission(path, path.stem, spec, Settings(), folder)


@pytest.mark.slow  # a lesson run and a grading (~40 s of CPU): the laptop tier keeps the draft's unit tests
def test_the_drafted_spec_grades_the_solved_lesson_at_full_marks(drafted: Spec, tmp_path: Path) -> None:
    kinds = {c.check for e in drafted.exercises for c in e.checks}
    assert {"token_ids", "prompt_embeddings", "scheduler_setup", "generation_replay", "param_count"} <= kinds
    assert (drafted.lesson.prompt, drafted.lesson.scheduler, drafted.lesson.steps) == (
        "a cat sitting on a beach at sunset",
        "ddpm",
        50,
    )
    assert drafted.lesson.seed == 42 and drafted.lesson.guidance_scale == 7.5
    assert "# guessed: token ids equal to the tokenization of prompt 'a cat sitting" in drafted.text
    grade = _grade(SOLVED, drafted, tmp_path)
    assert grade.error is None
    assert grade.score == grade.max_score > 0, [c for e in grade.exercises for c in e.checks if not c.passed]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sample", "mistake"),
    [
        ("mistake_cfg_swapped", "cfg_swapped"),
        ("mistake_no_scaling", "scaling_factor_not_divided"),
        ("mistake_uncond_prompt", None),
    ],
)
def test_the_drafted_spec_catches_injected_mistakes(drafted: Spec, tmp_path: Path, sample: str, mistake) -> None:
    grade = _grade(SAMPLES / f"{sample}.ipynb", drafted, tmp_path)
    assert grade.score < grade.max_score
    if mistake:
        named = {c.mistake for e in grade.exercises for c in e.checks if not c.passed}
        assert mistake in named, named


@pytest.mark.slow
def test_the_released_lesson_grades_at_its_unfilled_score(tmp_path: Path) -> None:
    spec = load_spec()
    student = tmp_path / "student.ipynb"
    released = write_release(str(SOLVED), str(student), spec)
    assert released.stubbed
    solved = _grade(SOLVED, spec, tmp_path / "solved")
    unfilled = _grade(student, spec, tmp_path / "student")
    assert solved.score == solved.max_score
    passed = [(e.id, c.check) for e in unfilled.exercises for c in e.checks if c.passed and c.max_points]
    assert unfilled.score == 0, passed
    assert not any(o for c in nbformat.read(str(student), as_version=4).cells for o in c.get("outputs", []))


# --- the corpus of real lessons (examples/lessons/<name>/lesson.ipynb + spec.toml) ---------------

LESSONS = Path(__file__).resolve().parents[1] / "examples" / "lessons"
CORPUS = sorted(p.parent.name for p in LESSONS.glob("*/lesson.ipynb"))
# Mistakes written into a lesson's code by pattern, where its code has the idiom: (name, regex, replacement).
INJECTIONS = (
    ("cfg_swapped", r"(\w+) \+ guidance_scale \* \((\w+) - \1\)", r"\2 + guidance_scale * (\1 - \2)"),
    ("rand_not_randn", r"\btorch\.randn\(", "torch.rand("),
    ("scaling_factor_not_divided", r"1 / 0\.18215 \* ", ""),
    ("reversed_timesteps", r"\bin scheduler\.timesteps:", "in scheduler.timesteps.flip(0):"),
)


def _injected(solved: Path, pattern: str, replacement: str, out: Path) -> bool:
    """Write ``solved`` with ``pattern`` replaced in its code to ``out``; False where it has none."""
    nb = nbformat.read(str(solved), as_version=4)
    hits = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source, n = re.subn(pattern, replacement, cell.source)
            hits += n
    nbformat.write(nb, str(out))
    return hits > 0


@pytest.mark.slow
@pytest.mark.parametrize("lesson", CORPUS)
def test_a_drafted_corpus_spec_grades_its_lesson_and_catches_mistakes(lesson: str, tmp_path: Path) -> None:
    solved = LESSONS / lesson / "lesson.ipynb"
    path = tmp_path / "drafted.toml"
    path.write_text(draft_spec(solved, Settings()))
    spec = load_spec(path)
    published = _grade(solved, spec, tmp_path / "published")
    assert published.score == published.max_score > 0
    caught = []
    for name, pattern, replacement in INJECTIONS:
        mistaken = tmp_path / f"{name}.ipynb"
        if _injected(solved, pattern, replacement, mistaken):
            grade = _grade(mistaken, spec, tmp_path / name)
            caught += [name] if grade.score < grade.max_score else []
    assert len(caught) >= 2, caught


@pytest.mark.slow
@pytest.mark.parametrize("lesson", CORPUS)
def test_a_released_corpus_lesson_grades_below_its_solved_one(lesson: str, tmp_path: Path) -> None:
    spec = load_spec(LESSONS / lesson / "spec.toml")
    solved = LESSONS / lesson / "lesson.ipynb"
    student = tmp_path / "student.ipynb"
    assert write_release(str(solved), str(student), spec).stubbed
    assert _grade(solved, spec, tmp_path / "solved").score == spec.max_points
    assert _grade(student, spec, tmp_path / "student").score < spec.max_points
