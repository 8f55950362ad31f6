"""Spec format 2: variable paths, per-exercise facts, section ends, heading lines, validation.

No kernel: the extraction cell's code runs here on a plain namespace (what a kernel's globals
are to it), and sections are located on notebooks built in memory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell
from transformers import BatchEncoding

from sdverify.notebooks.exercises import V1_FACTS, Lesson
from sdverify.notebooks.extraction import extraction_source, read_snapshot
from sdverify.notebooks.paths import parse_path
from sdverify.notebooks.segmentation import Snapshot, plan_snapshots
from sdverify.notebooks.spec import DEFAULT_SPEC, load_spec

GPU_LESSON = Path(__file__).resolve().parents[1] / "examples" / "gpu_lesson" / "spec.toml"

V2 = """format = 2
title = "Deconstructing the SD pipeline"

[lesson]
prompt = "a photograph of an astronaut riding a horse"
negative_prompt = "blurry"
seed = 0
steps = 25
scheduler = "unipc"
height = 256
width = 384

[[exercises]]
id = "tokens"
heading = '^#+\\s*Create text embeddings'
ends = '^#+\\s*Create random noise'
lesson = { prompt = "a cat", seed = 1234 }
checks = [
  { check = "token_ids", points = 1, value = "text_input.input_ids" },
  { check = "prompt_embeddings", points = 2, value = "text_embeddings[1]" },
]

[[exercises]]
id = "loop"
heading = '^#+\\s*Denoise'
checks = [{ check = "final_latents", points = 2, value = "latents" }]
"""


def _spec(tmp_path: Path, text: str = V2, *edits: tuple[str, str]) -> Path:
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "path",
    ["latents", "text_input.input_ids", "noise_pred[0]", "out[-1]", "out['sample']", 'd["a b"].x[2]', "a1.b_2"],
)
def test_paths_the_grammar_accepts(path):
    root, steps = parse_path(path)
    assert root + "".join(step.text for step in steps) == path


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("_private", "must start with a name"),
        ("x.__class__", "cannot read '.__class__'"),
        ("x._secret", "names may not start with _"),
        ("x[1:2]", "cannot read '[1:2]'"),
        ("x[y]", "cannot read '[y]'"),
        ("x['it''s']", "cannot read"),
        ("x()", "cannot read '()'"),
        ("x.", "cannot read '.'"),
        ("", "must start with a name"),
    ],
)
def test_paths_the_grammar_rejects(path, words):
    with pytest.raises(ValueError, match="variable path") as info:
        parse_path(path)
    assert words in str(info.value)


def test_paths_are_walked_on_the_live_objects_and_a_failing_step_is_named(tmp_path):
    ids = torch.arange(77).unsqueeze(0)
    namespace = {
        "text_input": BatchEncoding({"input_ids": ids, "attention_mask": torch.ones(1, 77)}),
        "chunks": [torch.zeros(2), torch.ones(3)],
        "out": {"sample": torch.full((2,), 7.0), "n": 3},
        "embeddings": torch.arange(6.0).reshape(2, 3),
    }
    paths = [
        "text_input.input_ids",
        "text_input['input_ids']",
        "chunks[-1]",
        'out["sample"]',
        "out['n']",
        "embeddings[1]",
        "text_input.pixel_values",
        "chunks[5]",
        "nowhere.x",
    ]
    snapshot = Snapshot("ex", "^#", tuple(paths), walk=True, headings_only=True)
    exec(extraction_source(snapshot.requests(), tmp_path), namespace)
    found = read_snapshot(tmp_path)
    assert torch.equal(found["text_input.input_ids"].tensor, ids)
    assert torch.equal(found["text_input['input_ids']"].tensor, ids)
    assert torch.equal(found["chunks[-1]"].tensor, torch.ones(3))
    assert torch.equal(found['out["sample"]'].tensor, torch.full((2,), 7.0))
    assert found["out['n']"].value == 3
    assert torch.equal(found["embeddings[1]"].tensor, torch.tensor([3.0, 4.0, 5.0]))
    assert found["text_input.pixel_values"].describe() == "unreadable (AttributeError at `.pixel_values`)"
    assert found["chunks[5]"].desc["error"] == "IndexError at `[5]`"
    assert found["nowhere.x"].kind == "missing"


def test_a_v1_snapshot_reads_names_as_they_are(tmp_path):
    snapshot = Snapshot("ex", "^#", ("a.b",))
    exec(extraction_source(snapshot.requests(), tmp_path), {"a.b": 5, "a": object()})
    assert read_snapshot(tmp_path)["a.b"].value == 5


def test_a_v2_spec_with_its_facts_overrides_and_paths(tmp_path):
    spec = load_spec(_spec(tmp_path))
    assert spec.format == 2 and spec.lesson.negative_prompt == "blurry"
    tokens, loop = spec.exercises
    assert (tokens.lesson.prompt, tokens.lesson.seed, tokens.lesson.scheduler) == ("a cat", 1234, "unipc")
    assert (loop.lesson.prompt, loop.lesson.seed) == ("a photograph of an astronaut riding a horse", 0)
    assert loop.lesson.latent_shape == (1, 4, 32, 48) and loop.lesson.image_shape == (1, 3, 256, 384)
    snapshot = tokens.snapshot()
    assert snapshot.walk and snapshot.headings_only and snapshot.ends == r"^#+\s*Create random noise"
    assert snapshot.requests()[0] == ["text_input.input_ids", "text_input", [["attr", "input_ids", ".input_ids"]]]
    # An override is part of its exercise's definition only.
    other = load_spec(_spec(tmp_path, V2, ("seed = 1234", "seed = 99")))
    assert other.definitions()["tokens"] != spec.definitions()["tokens"]
    assert other.definitions()["loop"] == spec.definitions()["loop"]


def test_v1_specs_load_as_before():
    for path in (DEFAULT_SPEC, GPU_LESSON):
        spec = load_spec(path)
        assert spec.format == 1
        assert all(not e.snapshot().walk and not e.snapshot().headings_only for e in spec.exercises)
        assert all(e.lesson == spec.lesson for e in spec.exercises)
    # The facts a v1 definition hashes are the five it always hashed.
    assert set(Lesson().facts()) == set(V1_FACTS)


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        (
            [('scheduler = "unipc"', 'scheduler = "k_lms"')],
            "line 9: unknown scheduler 'k_lms'; did you mean 'lms'? expected one of ['ddim', 'ddpm'",
        ),
        ([('check = "final_latents"', 'check = "final_latent"')], "did you mean 'final_latents'?"),
        ([('value = "latents"', 'value = "latents.0"')], "line 26: check 'final_latents': variable path 'latents.0'"),
        ([("negative_prompt", "negative_promt")], "line 6: unknown [lesson] keys ['negative_promt']; did you mean"),
        ([("ends =", "end =")], "line 16: unknown exercise 'tokens' keys ['end']; did you mean 'ends'?"),
        ([("seed = 1234 }", "seed = 1234, map_device = true }")], "apply to the whole notebook"),
        ([("width = 384", "width = 380")], "width must be a positive multiple of 8"),
        ([("steps = 25", 'steps = "25"')], "[lesson] steps must be int, got '25'"),
        ([("format = 2", "format = 3")], "line 1: format 3; expected one of [1, 2]"),
        ([('title = "Deconstructing', 'titel = "Deconstructing')], "unknown top-level keys ['titel']; did you mean"),
        (
            [("format = 2\n", "")],
            "['height', 'negative_prompt', 'width'] need format = 2 at the top of the spec; expected one of",
        ),
        ([('prompt = "a cat"', "prompt = 3")], "exercise 'tokens' lesson prompt must be str, got 3"),
    ],
)
def test_v2_names_are_validated_with_the_nearest_one_and_the_line(tmp_path, edits, words):
    with pytest.raises(ValueError) as info:
        load_spec(_spec(tmp_path, V2, *edits))
    assert f"spec {tmp_path / 'spec.toml'}" in str(info.value)
    assert words in str(info.value)


def test_a_check_parameter_takes_only_its_values(tmp_path):
    edit = ('value = "text_embeddings[1]" }', 'value = "text_embeddings", half = "text" }')
    with pytest.raises(ValueError, match=r"unknown half of check 'prompt_embeddings': 'text'; expected one of"):
        load_spec(_spec(tmp_path, V2, edit))


def test_v2_sections_start_at_heading_lines_and_end_at_their_ends():
    cells = [
        new_markdown_cell("Intro: we Create text embeddings below."),  # prose, not a heading
        new_markdown_cell("### Create text embeddings"),
        new_code_cell("text_input = 1"),
        new_markdown_cell("### Create random noise"),
        new_code_cell("t = 49406"),
        new_markdown_cell("## Denoise the image"),
        new_code_cell("latents = 2"),
    ]
    v2 = dict(walk=True, headings_only=True)
    snaps = [
        Snapshot("tokens", r"Create text embeddings", ("text_input",), ends=r"^#+\s*Create random noise", **v2),
        Snapshot("loop", r"^#+\s*Denoise", ("latents",), **v2),
    ]
    plan = plan_snapshots(cells, snaps)
    assert {i: [s.id for s in v] for i, v in plan.items()} == {3: ["tokens"], 7: ["loop"]}
    v1 = [Snapshot("tokens", r"Create text embeddings", ("text_input",)), snaps[1]]
    assert {i: [s.id for s in v] for i, v in plan_snapshots(cells, v1).items()} == {5: ["tokens"], 7: ["loop"]}
