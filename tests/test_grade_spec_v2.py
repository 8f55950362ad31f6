"""Spec format 2 end to end: a small lesson written as the diffusers tutorial writes it
(BatchEncoding, CFG-concatenated embeddings, a seeded generator, a PIL image, a cell past
the section's end that rebinds names), graded in a kernel; and the note a notebook of
another lesson gets.  The laptop tier grades a real v2 lesson (tests of examples/lessons/)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import NO_HEADING_MATCHED, Settings
from sdverify.notebooks.spec import load_spec

SPEC = """format = 2
[lesson]
prompt = "a cat"
negative_prompt = "blurry"
seed = 0
steps = 2
scheduler = "euler"
height = 64
width = 64

[[exercises]]
id = "embeddings"
heading = '^#+\\s*Create text embeddings'
checks = [
  { check = "token_ids", points = 1, value = "text_input.input_ids" },
  { check = "prompt_embeddings", points = 1, value = "text_embeddings", half = "cond" },
  { check = "prompt_embeddings", points = 1, value = "text_embeddings", half = "uncond" },
]

[[exercises]]
id = "noise"
heading = '^#+\\s*Create random noise'
checks = [{ check = "initial_latents", points = 1, value = "latents", scaled = true }]

[[exercises]]
id = "denoise"
heading = '^#+\\s*Denoise the image'
checks = [{ check = "final_latents", points = 2, value = "latents" }]

[[exercises]]
id = "decode"
heading = '^#+\\s*Decode the image'
ends = '^#+\\s*Next steps'
checks = [{ check = "image", points = 2, value = "image" }]
"""

SETUP = """import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer
repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
vae = AutoencoderKL.from_pretrained(repo, subfolder="vae")
tokenizer = CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer")
text_encoder = CLIPTextModel.from_pretrained(repo, subfolder="text_encoder")
unet = UNet2DConditionModel.from_pretrained(repo, subfolder="unet")
scheduler = EulerDiscreteScheduler.from_pretrained(repo, subfolder="scheduler")
prompt, height, width, steps, guidance_scale = ["a cat"], 64, 64, 2, 7.5
generator = torch.manual_seed(0)"""

EMBED = """def embed(text):
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt")
    with torch.no_grad():
        return ids, text_encoder(ids.input_ids)[0]
text_input, cond = embed(prompt)
_, uncond = embed(["blurry"])
text_embeddings = torch.cat([uncond, cond])"""

NOISE = """latents = torch.randn((1, unet.config.in_channels, height // 8, width // 8), generator=generator)
latents = latents * scheduler.init_noise_sigma"""

DENOISE = """scheduler.set_timesteps(steps)
for t in scheduler.timesteps:
    latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), timestep=t)
    with torch.no_grad():
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample
    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
    latents = scheduler.step(noise_pred, t, latents).prev_sample"""

DECODE = """from PIL import Image
latents = 1 / 0.18215 * latents
with torch.no_grad():
    image = vae.decode(latents).sample
image = (image / 2 + 0.5).clamp(0, 1).squeeze()
image = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
image = Image.fromarray(image)"""


def _lesson(headings: list[str]) -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# Deconstruct the pipeline\nWe Create text embeddings first."), new_code_cell(SETUP)]
    for heading, code in zip(headings, [EMBED, NOISE, DENOISE, DECODE, "image = None  # past the end"]):
        cells += [new_markdown_cell(f"## {heading}"), new_code_cell(code)]
    return new_notebook(cells=cells)


HEADINGS = ["Create text embeddings", "Create random noise", "Denoise the image", "Decode the image", "Next steps"]


@pytest.mark.slow
def test_a_tutorial_style_lesson_gets_full_marks_and_another_lesson_one_note(tmp_path: Path):
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    lessons = {"lesson": _lesson(HEADINGS), "other": _lesson([f"Step {n}" for n in range(5)])}
    paths = []
    for name, nb in lessons.items():
        nbformat.write(nb, str(tmp_path / f"{name}.ipynb"))
        paths.append(tmp_path / f"{name}.ipynb")
    grades = grade_batch(paths, tmp_path / "out", spec=spec, settings=Settings(), workers=1)
    lesson, other = sorted(grades, key=lambda g: g.name)
    assert lesson.score == lesson.max_score == 8, [
        c.message for e in lesson.exercises for c in e.checks if not c.passed
    ]
    assert NO_HEADING_MATCHED not in lesson.notes
    assert other.notes.count(NO_HEADING_MATCHED) == 1
