"""Metamorphic tests of `sdverify check`: a module rewritten without changing what it
computes keeps its grade.

Hypothesis draws edits of a catalog module (tests/metamorphic: comments, blank lines,
prints, renamed helper variables, reordered imports, ``torch.inference_mode``,
``return_dict=False``, batched CFG) and each example is one ``check_submission`` call in
this process (the sandbox's forkserver and the reference expectations are shared): a
correct module keeps full marks, a wrong one fails exactly the checks its unedited self
fails.  The laptop tier checks ``VARIANTS`` variants of one correct module; the slow tier
every catalog module.  No shrinking: each step would cost a check, and a failing example
is reported with the edits that made it.
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from metamorphic.strategies import MODULE_EDITS, Variant, edited_modules
from recorded_scores import expected

from sdverify.checker import API_NAMES, check_submission
from sdverify.grading.model import SubmissionGrade

pytestmark = pytest.mark.usefixtures("process_level")

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"
CORRECT = sorted(p.stem for p in CATALOG.glob("correct_*.py"))
WRONG = sorted(p.stem for p in CATALOG.glob("wrong_*.py"))
# Checks per test: the profile's max_examples (dev and ci 20, thorough 500) over ten for a
# correct module, over fifty for a wrong one: in dev and ci, the simplest variant with every
# kind of edit (each at its first site: a wrong module is a function or two).
VARIANTS = max(2, settings.default.max_examples // 10)
GRADED = settings(max_examples=VARIANTS, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
GRADED_WRONG = settings(GRADED, max_examples=max(1, VARIANTS // 5))


def _check(variant: Variant[str], folder: Path) -> SubmissionGrade:
    path = folder / "variant.py"
    path.write_text(variant.value)
    return check_submission(str(path))


def _failed(report: SubmissionGrade) -> dict[str, str]:
    return {c.id: c.message for c in report.failed()}


def _diff(name: str, variant: Variant[str]) -> str:
    before = (CATALOG / f"{name}.py").read_text().splitlines()
    lines = difflib.unified_diff(before, variant.value.splitlines(), name, "variant", lineterm="", n=1)
    return "\n".join(list(lines)[:80])


@functools.cache
def _original(name: str) -> SubmissionGrade:
    return check_submission(str(CATALOG / f"{name}.py"))


def _assert_full_marks(name: str, variant: Variant[str], folder: Path) -> None:
    report = _check(variant, folder)
    assert report.passed, f"{variant}\n{_failed(report)}\n{_diff(name, variant)}"
    assert report.score == report.max_score == expected("catalog", name)["max_score"]  # as recorded


@GRADED
@given(variant=edited_modules((CATALOG / "correct_two_unet_calls.py").read_text(), protected=API_NAMES, min_edits=4))
def test_an_edited_correct_module_keeps_full_marks(variant: Variant[str], tmp_path_factory: pytest.TempPathFactory):
    _assert_full_marks("correct_two_unet_calls", variant, tmp_path_factory.mktemp("variant"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CORRECT)
@GRADED
@given(data=st.data())
def test_every_edited_correct_module_keeps_full_marks(name: str, data: st.DataObject, tmp_path_factory):
    variant = data.draw(edited_modules((CATALOG / f"{name}.py").read_text(), protected=API_NAMES))
    _assert_full_marks(name, variant, tmp_path_factory.mktemp("variant"))


@pytest.mark.slow
@pytest.mark.parametrize("name", WRONG)
@GRADED_WRONG
@given(data=st.data())
def test_every_edited_wrong_module_fails_the_same_checks(name: str, data: st.DataObject, tmp_path_factory):
    original = _failed(_original(name))
    assert original, f"{name} passes everything: not a wrong submission"
    source = (CATALOG / f"{name}.py").read_text()
    variant = data.draw(edited_modules(source, protected=API_NAMES, min_edits=len(MODULE_EDITS)))
    report = _check(variant, tmp_path_factory.mktemp("variant"))
    assert sorted(_failed(report)) == sorted(original), f"{variant}\n{_failed(report)}\n{_diff(name, variant)}"
