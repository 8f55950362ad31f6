"""``sdverify spec draft`` without a kernel: sections, heading patterns and the rendered spec."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest
import torch

from sdverify.cli import main
from sdverify.notebooks import exercises
from sdverify.notebooks.draft import (
    Candidate,
    Contexts,
    Facts,
    Section,
    _infer_replay,
    _toml,
    missing_modules,
    render,
    sections,
    written_for_gpu,
)
from sdverify.notebooks.exercises import ExerciseContext, Lesson
from sdverify.notebooks.extraction import KERNEL_GENERATORS
from sdverify.notebooks.runner import CellEvent
from sdverify.notebooks.spec import load_spec, tomllib
from sdverify.untrusted.value import UntrustedValue

SF = {"scaling_factor": 0.18215}


def test_each_markdown_heading_cell_opens_a_section_whose_pattern_matches_it_only() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lesson\nintro"),
        nbformat.v4.new_code_cell("# Not a heading: a comment"),
        nbformat.v4.new_markdown_cell("prose, then\n##  Create (text) embeddings?  ##\n### a second heading"),
        nbformat.v4.new_markdown_cell("no heading here"),
        nbformat.v4.new_markdown_cell("## Create (text) embeddings? again"),
    ]
    found = sections(nb)
    assert [(s.title, s.cell) for s in found] == [
        ("Lesson", 0),
        ("Create (text) embeddings?", 2),
        ("Create (text) embeddings? again", 4),
    ]
    pattern = re.compile(found[1].pattern, re.MULTILINE)
    assert pattern.search(nb.cells[2].source) and not pattern.search(nb.cells[4].source)


def test_the_rendered_spec_loads_and_says_every_guess(tmp_path: Path) -> None:
    facts = Facts(Lesson(prompt='a "quoted"\nprompt', seed=7), {"prompt": "`p` holds\x1b[2J its ids"})
    section = Section("s1", "Exercise 1: tokens", 3)
    checks = [Candidate("token_ids", {"value": "ids"}, "token ids of 'a \"quoted\"\\nprompt'")]
    text = render("solved.ipynb", "My lesson", facts, True, [(section, checks), (section, checks)])
    path = tmp_path / "spec.toml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.lesson == Lesson(prompt='a "quoted"\nprompt', seed=7)
    assert spec.setup.map_device
    assert [e.id for e in spec.exercises] == ["exercise_1_tokens", "exercise_1_tokens_2"]
    assert spec.exercises[0].checks[0].params == {"value": "ids"} and spec.exercises[0].checks[0].points == 1
    assert "# guessed: `p` holds\\x1b[2J its ids\nprompt = " in text  # a guess is one inert comment line
    assert text.count("# guessed: token ids of") == 2


def test_modules_the_lesson_failed_to_import_are_drafted_as_packages(tmp_path: Path) -> None:
    events = [
        CellEvent(2, "error", "ModuleNotFoundError: No module named 'torchvision'"),
        CellEvent(3, "error", "No module named 'seaborn.x'; 'seaborn' is not a package"),
        CellEvent(4, "error", "NameError: name 'tqdm' is not defined"),
        CellEvent(5, "shell", "No module named 'curl'"),
        CellEvent(6, "error", "ModuleNotFoundError: No module named 'torchvision'"),
    ]
    missing = missing_modules(SimpleNamespace(events=events))  # type: ignore[arg-type]
    assert missing == ["torchvision", "seaborn"]
    section = Section("s1", "Loop", 3)
    text = render(
        "solved.ipynb", "L", Facts(), False, [(section, [Candidate("token_ids", {"value": "i"}, "g")])], missing
    )
    path = tmp_path / "spec.toml"
    path.write_text(text)
    assert load_spec(path).setup.packages == ("torchvision", "seaborn")
    assert "packages" not in render("solved.ipynb", "L", Facts(), False, [(section, [])])


def test_the_draft_command_refuses_a_missing_notebook(tmp_path: Path, capsys) -> None:
    assert main(["spec", "draft", str(tmp_path / "nope.ipynb")]) == 2
    assert "nope.ipynb not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["Café au lait, naïve — 3 cats!!! 🐈", 'a "quoted" \\ path\n\tnext', "del\x7f ctl\x01"]
)
def test_a_drafted_string_reads_back_from_toml_unchanged(text: str) -> None:
    """A prompt with an emoji once made the draft unreadable (JSON's surrogate pairs are not TOML)."""
    assert tomllib.loads(f"value = {_toml(text)}")["value"] == text


def test_a_lesson_naming_a_gpu_is_run_under_the_device_map_from_the_start() -> None:
    def notebook(*sources: str) -> nbformat.NotebookNode:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_markdown_cell("# cuda in prose"), *map(nbformat.v4.new_code_cell, sources)]
        return nb

    for gpu in ('unet.to("cuda")', "torch_dtype=torch.float16", "x = x.half()", "with autocast('cuda'):"):
        assert written_for_gpu(notebook("import torch", gpu)), gpu
    assert not written_for_gpu(notebook("import torch", "latents = torch.randn(1, 4, 64, 64)", "cudagraphs = 1"))


def test_drafting_contexts_share_references_across_seeds_only(tmp_path: Path) -> None:
    contexts = Contexts(ExerciseContext(Lesson(), tmp_path, False, version=2))
    a, b = contexts(Lesson(seed=1)), contexts(Lesson(seed=2))
    a.cached(("replay", 5), lambda: "computed once")
    assert b.cached(("replay", 5), lambda: "again") == "computed once"
    assert contexts(Lesson(guidance_scale=3.0)).cached(("replay", 5), lambda: "again") == "again"
    assert (a.lesson.seed, b.lesson.seed, a.version, a.names_mistakes) == (1, 2, 2, False)


def test_a_check_asked_only_whether_it_passes_replays_no_mistake(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(exercises, "_components", lambda folder: SimpleNamespace(vae=SimpleNamespace(config=SF)))
    lesson = Lesson(steps=2)
    final, other = torch.zeros(lesson.latent_shape), torch.ones(lesson.latent_shape)
    desc = {"kind": "tensor", "key": "latents", "dtype": "torch.float32", "shape": list(other.shape)}
    found = UntrustedValue("latents", desc, {"latents": other})
    for names_mistakes in (True, False):
        ctx = ExerciseContext(lesson, tmp_path, False, version=2, names_mistakes=names_mistakes)
        ctx._cache[("replay", lesson.seed)] = (final, torch.zeros(lesson.image_shape))
        replayed: list[Any] = []
        monkeypatch.setattr(ctx, "mistaken_replay", lambda seed, options, made=replayed: made.append(options))
        result = exercises.final_latents(ctx, lambda name: found if name == "latents" else UntrustedValue(name, {}))
        assert not result.passed and bool(replayed) == names_mistakes


def test_the_seed_is_inferred_from_final_latents_rebound_by_the_decode_idiom(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(exercises, "_components", lambda folder: SimpleNamespace(vae=SimpleNamespace(config=SF)))
    contexts = Contexts(ExerciseContext(Lesson(), tmp_path, False, version=2))
    lesson = Lesson()
    finals = {seed: torch.full(lesson.latent_shape, float(seed)) for seed in (5, 32)}
    for seed, final in finals.items():
        contexts(lesson).cached(("replay", seed), lambda final=final: (final, torch.zeros(lesson.image_shape)))
    rebound = finals[32] / SF["scaling_factor"]  # latents = 1 / 0.18215 * latents
    desc = {"kind": "tensor", "key": "latents", "dtype": "torch.float32", "shape": list(rebound.shape)}
    held = {"latents": UntrustedValue("latents", desc, {"latents": rebound})}
    held[KERNEL_GENERATORS] = UntrustedValue(KERNEL_GENERATORS, {"kind": "value", "value": [5, 32]})
    facts = Facts()
    _infer_replay(contexts, [lambda name: held.get(name, UntrustedValue(name, {}))], list(held.values()), facts)
    assert facts.lesson.seed == 32 and "replayed from seed 32" in facts.guesses["seed"]
