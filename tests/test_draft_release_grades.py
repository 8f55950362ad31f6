"""``sdverify spec draft`` and ``sdverify release`` on the bundled lesson, graded.

The drafted spec grades the solved lesson at full marks and catches injected mistakes (the
catalog's mistaken copies of the lesson); the released lesson grades at its unfilled score.
A grading costs ~10-20 s: the laptop tier drafts once and grades the solved lesson; the rest
is in the slow tier.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sdverify.notebooks.draft import draft_spec
from sdverify.notebooks.grading import Settings, grade_submission
from sdverify.notebooks.release import write_release
from sdverify.notebooks.spec import Spec, load_spec

pytestmark = pytest.mark.xdist_group("draft")

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
SOLVED = SAMPLES / "correct.ipynb"


@pytest.fixture(scope="module")
def drafted(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    path = tmp_path_factory.mktemp("draft") / "spec.toml"
    path.write_text(draft_spec(SOLVED, Settings()))
    return load_spec(path)


def _grade(path: Path, spec: Spec, folder: Path):
    return grade_submission(path, path.stem, spec, Settings(), folder)


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
        named = {c.details.get("mistake") for e in grade.exercises for c in e.checks if not c.passed}
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
