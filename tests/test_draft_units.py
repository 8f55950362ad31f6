"""``sdverify spec draft`` without a kernel: sections, heading patterns and the rendered spec."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from sdverify.cli import main
from sdverify.notebooks.draft import Candidate, Facts, Section, _toml, render, sections
from sdverify.notebooks.exercises import Lesson
from sdverify.notebooks.spec import load_spec, tomllib


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


def test_the_draft_command_refuses_a_missing_notebook(tmp_path: Path, capsys) -> None:
    assert main(["spec", "draft", str(tmp_path / "nope.ipynb")]) == 2
    assert "nope.ipynb not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text", ["Café au lait, naïve — 3 cats!!! 🐈", 'a "quoted" \\ path\n\tnext', "del\x7f ctl\x01"]
)
def test_a_drafted_string_reads_back_from_toml_unchanged(text: str) -> None:
    """A prompt with an emoji once made the draft unreadable (JSON's surrogate pairs are not TOML)."""
    assert tomllib.loads(f"value = {_toml(text)}")["value"] == text
