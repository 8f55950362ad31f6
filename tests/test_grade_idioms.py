"""Correct lessons written in the idioms of public SD lessons keep full marks, on every scheduler.

The bundled correct notebook, its Exercise 4 rewritten as the diffusers documentation writes
it (a seeded ``torch.Generator`` passed to ``randn`` and ``scheduler.step``, one batched U-Net
call, ``z = 1 / 0.18215 * z`` before ``vae.decode(z)``), and the lesson's scheduler swapped
for each registered one (in the notebook and in the spec).  Every check must pass: a replay
or a check that "could not be checked" is the grader's failure, not the student's.  All in
the slow tier (a notebook grading costs ~15 s idle, one per scheduler); the laptop tier grades the generator
and rebinding idioms through tests/test_grade_metamorphic.py's edits.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.spec import DEFAULT_SPEC, load_spec
from sdverify.schedulers import SCHEDULERS

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
GENERATOR_SEED = 1234  # not the lesson's 42: only the generator's seed replays
# Exercise 4 as the diffusers documentation's "Deconstruct the Stable Diffusion pipeline" writes it.
EXERCISE_4 = f"""import inspect

generator = torch.Generator(device).manual_seed({GENERATOR_SEED})

def embed(text):
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return text_encoder(ids.to(device)).last_hidden_state


start = time.perf_counter()
with torch.no_grad():
    cond, uncond = embed(prompt), embed("")
clip_time = time.perf_counter() - start

start = time.perf_counter()
scheduler.set_timesteps(50)
extra = {{"generator": generator}} if "generator" in inspect.signature(scheduler.step).parameters else {{}}
z = torch.randn(1, 4, 64, 64, generator=generator, device=device, dtype=dtype) * scheduler.init_noise_sigma
for t in scheduler.timesteps:
    latent_model_input = scheduler.scale_model_input(torch.cat([z] * 2), t)
    with torch.no_grad():
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
    z = scheduler.step(noise_pred, t, z, **extra).prev_sample
denoise_time = time.perf_counter() - start

start = time.perf_counter()
z = 1 / 0.18215 * z
with torch.no_grad():
    image = vae.decode(z).sample
vae_time = time.perf_counter() - start
"""


def _idiomatic(scheduler: str) -> nbformat.NotebookNode:
    nb = nbformat.read(SAMPLES / "correct.ipynb", as_version=4)
    cls = SCHEDULERS[scheduler][1]
    for cell in nb.cells:
        if cell.cell_type == "code" and "image = vae.decode" in cell.source:
            cell.source = EXERCISE_4
        elif cell.cell_type == "code":
            cell.source = cell.source.replace("DDPMScheduler", cls)
    return nb


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_an_idiomatic_correct_lesson_keeps_full_marks(tmp_path: Path, scheduler: str):
    spec_path = tmp_path / f"{scheduler}.toml"
    spec_path.write_text(DEFAULT_SPEC.read_text().replace('scheduler = "ddpm"', f'scheduler = "{scheduler}"', 1))
    folder = tmp_path / "submissions"
    folder.mkdir()
    nbformat.write(_idiomatic(scheduler), folder / f"idiomatic_{scheduler}.ipynb")
    spec, settings = load_spec(spec_path), Settings(sandbox="process")
    [grade] = grade_batch([folder], tmp_path / "grades", spec=spec, settings=settings, workers=1)
    assert grade.error is None, grade.error
    failed = {f"{e.id}/{c.id}": c.message for e in grade.exercises for c in e.checks if not c.passed}
    assert not failed, failed
    assert grade.score == grade.max_score > 0
    [replay] = [c for e in grade.exercises for c in e.checks if c.id == "image_replay"]
    assert f"50-step {SCHEDULERS[scheduler][1]}" in replay.clause
