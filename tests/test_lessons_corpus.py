"""The corpus of real, third-party SD1.x lessons (examples/lessons, issue 20 item 5).

Each lesson is a notebook as published (provenance.json pins repository, path, commit and the
file's sha256) with a format-2 spec.  Graded unmodified it gets full marks; each mistake below,
injected as a source edit of the published notebook, loses points in the exercises it touches
and is named there (a failed check's ``mistake``).

Each lesson's variants are graded ONCE per session (one batch, 2 workers, shared across xdist
workers through a lock, as in test_grade_samples.py).  The laptop tier grades the fastest
lesson as published (its mistaken notebook: test_grade_samples.py's); ``--runslow`` grades every
lesson and mistake.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest
from filelock import FileLock

from sdverify.mistakes import MISTAKES
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings, SubmissionGrade
from sdverify.notebooks.spec import load_spec

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

LESSONS = Path(__file__).resolve().parents[1] / "examples" / "lessons"
NAMES = sorted(p.parent.name for p in LESSONS.glob("*/lesson.ipynb"))
# Licences that let us redistribute a lesson (SPDX ids); the texts live in examples/lessons/LICENSES.
REDISTRIBUTABLE = {"Apache-2.0", "MIT", "BSD-3-Clause", "CC-BY-4.0", "CC-BY-SA-4.0"}
PUBLISHED = "published"  # the stem the unmodified notebook is graded under


@dataclass(frozen=True)
class Injected:
    """A mistake written into a published notebook: ``old`` -> ``new`` in its code cells.

    ``loses``: the exercises that must lose points (and only those); ``named``: catalog ids of
    which at least one must be recorded by a failed check (a chunk swap is, by its effect on
    the loop, also the swapped formula)."""

    id: str
    old: str
    new: str
    loses: tuple[str, ...]
    named: frozenset[str]


_CFG = "noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)"
_CHUNKS = "noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)"


def _mistakes(embeddings: str, noise: str, denoise: str, decode: str) -> tuple[Injected, ...]:
    """The five mistakes, for a lesson whose stages are graded in these exercises."""
    after_noise = tuple(dict.fromkeys((noise, denoise, decode)))
    after_denoise = tuple(dict.fromkeys((denoise, decode)))
    return (
        Injected(
            "cfg_swapped",
            _CFG,
            "noise_pred = noise_pred_text + guidance_scale * (noise_pred_uncond - noise_pred_text)",
            after_denoise,
            frozenset({"cfg_swapped"}),
        ),
        Injected(
            "cfg_chunks_swapped",
            _CHUNKS,
            "noise_pred_text, noise_pred_uncond = noise_pred.chunk(2)",
            after_denoise,
            frozenset({"cfg_chunks_swapped", "cfg_swapped"}),
        ),
        Injected(
            "scaling_factor_not_divided",
            "latents = 1 / 0.18215 * latents",
            "latents = latents",
            (decode,),
            frozenset({"scaling_factor_not_divided"}),
        ),
        Injected(
            "rand_not_randn",
            "latents = torch.randn(",
            "latents = torch.rand(",
            after_noise,
            frozenset({"rand_not_randn"}),
        ),
        Injected(
            "embeddings_of_wrong_prompt",
            '[""] * batch_size',
            "prompt * batch_size",
            tuple(dict.fromkeys((embeddings, *after_denoise))),
            frozenset({"embeddings_of_wrong_prompt"}),
        ),
    )


_DOCS = _mistakes("embeddings", "noise", "denoise", "decode")
INJECTED: dict[str, tuple[Injected, ...]] = {
    "diffusers_write_own_pipeline": _DOCS,
    "diffusers_write_own_pipeline_2023": _DOCS,
    "diffusers_write_own_pipeline_ko": _DOCS,
    # One markdown heading over the whole hand-written pipeline: one exercise.
    "hf_stable_diffusion_blog": _mistakes(*["own_pipeline"] * 4),
}
# The laptop tier's lesson (the fastest to grade), as published; every mistake is in the slow tier.
FAST = ("diffusers_write_own_pipeline", None)


def injected(lesson: str, mistake: Injected) -> nbformat.NotebookNode:
    """The published ``lesson`` with ``mistake`` written into the one code cell that holds its text."""
    nb = nbformat.read(LESSONS / lesson / "lesson.ipynb", as_version=4)
    hits = [c for c in nb.cells if c.cell_type == "code" and mistake.old in c.source]
    assert len(hits) == 1 and hits[0].source.count(mistake.old) == 1, (lesson, mistake.id, len(hits))
    hits[0].source = hits[0].source.replace(mistake.old, mistake.new)
    return nb


@pytest.fixture(scope="module")
def grade_lesson(tmp_path_factory: pytest.TempPathFactory, worker_id: str, pytestconfig: pytest.Config) -> Any:
    """``grade_lesson(name)``: the grades of that lesson's variants (published + mistakes), by stem."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    runslow = bool(pytestconfig.getoption("--runslow"))
    cache: dict[str, dict[str, SubmissionGrade]] = {}

    def grade(lesson: str) -> dict[str, SubmissionGrade]:
        if lesson not in cache:
            mistakes = [m for m in INJECTED[lesson] if runslow or (lesson, m.id) == FAST]
            folder, out = shared / f"lessons_{lesson}" / "submissions", shared / f"lessons_{lesson}" / "grades"
            with FileLock(str(folder.parent) + ".lock"):
                if not folder.is_dir():
                    folder.mkdir(parents=True)
                    shutil.copy(LESSONS / lesson / "lesson.ipynb", folder / f"{PUBLISHED}.ipynb")
                    for m in mistakes:
                        nbformat.write(injected(lesson, m), folder / f"{m.id}.ipynb")
                spec = load_spec(LESSONS / lesson / "spec.toml")
                grades = grade_batch([folder], out, spec=spec, settings=Settings(), workers=2)
            cache[lesson] = {g.name: g for g in grades}
        return cache[lesson]

    return grade


def _lessons() -> list[Any]:
    return [pytest.param(n, marks=() if n == FAST[0] else pytest.mark.slow) for n in NAMES]


def _injected() -> list[Any]:
    return [
        pytest.param(
            lesson,
            m,
            id=f"{lesson}-{m.id}",
            marks=() if (lesson, m.id) == FAST else pytest.mark.slow,
        )
        for lesson in NAMES
        for m in INJECTED.get(lesson, ())
    ]


def _ids(value: Any) -> str | None:
    return value.id if isinstance(value, Injected) else None


def _provenance(lesson: str) -> dict[str, Any]:
    return json.loads((LESSONS / lesson / "provenance.json").read_text())


def test_the_corpus_holds_lessons():
    assert NAMES, LESSONS
    assert sorted(INJECTED) == NAMES  # every lesson has its injected mistakes, and only lessons do


@pytest.mark.parametrize("lesson", NAMES)
def test_each_lesson_is_the_published_file_with_its_provenance_and_licence(lesson):
    prov = _provenance(lesson)
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", prov["repository"]) and prov["path"].endswith(".ipynb")
    assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"])
    assert prov["commit"] in prov["url"] and prov["path"] in prov["url"] and prov["repository"] in prov["url"]
    assert prov["licence"] in REDISTRIBUTABLE
    assert (LESSONS / lesson / prov["licence_file"]).resolve().is_file()
    data = (LESSONS / lesson / "lesson.ipynb").read_bytes()
    assert hashlib.sha256(data).hexdigest() == prov["sha256"], "lesson.ipynb is not the published file"
    assert prov["changes"].startswith("none")


@pytest.mark.parametrize("lesson", NAMES)
def test_each_spec_loads_with_every_check_it_names(lesson):
    spec = load_spec(LESSONS / lesson / "spec.toml")
    raw = tomllib.loads((LESSONS / lesson / "spec.toml").read_text())
    assert [e.id for e in spec.exercises] == [e["id"] for e in raw["exercises"]]
    assert spec.max_points == sum(c["points"] for e in raw["exercises"] for c in e["checks"])
    assert spec.setup.missing_packages() == []


@pytest.mark.parametrize("lesson", NAMES)
def test_each_spec_is_format_2_and_names_its_exercises_by_headings(lesson):
    spec = tomllib.loads((LESSONS / lesson / "spec.toml").read_text())
    assert spec["format"] == 2
    nb = nbformat.read(LESSONS / lesson / "lesson.ipynb", as_version=4)
    headings = [
        line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")
    ]
    for exercise in spec["exercises"]:
        for key in ("heading", "ends"):
            if key in exercise:
                assert sum(bool(re.search(exercise[key], h)) for h in headings) == 1, (exercise["id"], key)
    used = {e for m in INJECTED[lesson] for e in m.loses}
    assert used <= {e["id"] for e in spec["exercises"]}


@pytest.mark.parametrize(("lesson", "mistake"), [p.values for p in _injected()], ids=_ids)
def test_each_injected_mistake_is_one_catalogued_edit(lesson, mistake):
    assert mistake.named <= set(MISTAKES)
    nb = injected(lesson, mistake)
    published = nbformat.read(LESSONS / lesson / "lesson.ipynb", as_version=4)
    changed = [i for i, (a, b) in enumerate(zip(nb.cells, published.cells, strict=True)) if a.source != b.source]
    assert len(changed) == 1


def test_the_readme_lists_every_lesson_with_its_commit():
    readme = (LESSONS / "README.md").read_text()
    for lesson in NAMES:
        assert f"`{lesson}`" in readme and _provenance(lesson)["commit"][:10] in readme, lesson


@pytest.mark.parametrize("lesson", _lessons())
def test_each_lesson_as_published_gets_full_marks(grade_lesson, lesson):
    grade = grade_lesson(lesson)[PUBLISHED]
    assert grade.error is None, grade.error
    failed = {f"{e.id}.{c.id}": c.message for e in grade.exercises for c in e.checks if not c.passed}
    assert not failed, failed
    assert grade.score == grade.max_score == load_spec(LESSONS / lesson / "spec.toml").max_points > 0


@pytest.mark.parametrize(("lesson", "mistake"), _injected())
def test_each_injected_mistake_loses_named_points(grade_lesson, lesson, mistake):
    grade = grade_lesson(lesson)[mistake.id]
    assert grade.error is None, grade.error
    lost = {e.id for e in grade.exercises if e.score < e.max_score}
    assert lost == set(mistake.loses), {e.id: [c.message for c in e.checks if not c.passed] for e in grade.exercises}
    named = {c.mistake for e in grade.exercises for c in e.checks if not c.passed}
    assert named & mistake.named, (mistake.id, named)
