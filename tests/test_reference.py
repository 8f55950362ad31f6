"""The reference pipeline (or the implementation given by --sdverify-impl): stages and end to end."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline

from sdverify import contract as C
from sdverify.schedulers import init_noise_sigma, make_scheduler

PROMPT = "a cat sitting on a beach at sunset"
# The seven schedulers the foundation promises to match StableDiffusionPipeline on, with the
# steps: the laptop tier keeps one scheduler of each family (PNDM, k-diffusion, LMS) over 10
# steps (every code path of the loop); the slow tier all seven over the contract's 50.
PIPELINE_SCHEDULERS = [
    *((name, 10) for name in ("pndm", "euler", "lms")),
    *(
        pytest.param(name, C.NUM_INFERENCE_STEPS, marks=pytest.mark.slow)
        for name in ("pndm", "euler", "lms", "ddpm", "ddim", "euler_a", "dpm")
    ),
]


def _generate(impl, c, scheduler, seed, steps=C.NUM_INFERENCE_STEPS, prompt=PROMPT):
    generator = torch.Generator("cpu").manual_seed(seed)
    return impl.generate(
        c.tokenizer, c.text_encoder, c.unet, c.vae, scheduler, prompt, steps, C.GUIDANCE_SCALE, generator
    )


def test_stage_shapes(sd_impl, sd_components):
    c = sd_components
    ids = sd_impl.tokenize(c.tokenizer, PROMPT)
    assert tuple(ids.shape) == C.TOKEN_IDS_SHAPE and ids.dtype == C.TOKEN_DTYPE
    emb = sd_impl.encode_prompt(c.tokenizer, c.text_encoder, PROMPT)
    assert tuple(emb.shape) == C.EMBEDDINGS_SHAPE and emb.dtype == torch.float32
    scheduler = make_scheduler("euler")
    scheduler.set_timesteps(10)
    latents = sd_impl.initial_latents(scheduler, torch.Generator().manual_seed(0), "cpu", torch.float32)
    assert tuple(latents.shape) == C.LATENT_SHAPE
    # Sigma-based schedulers start from noise of std init_noise_sigma, not 1.
    assert latents.std().item() == pytest.approx(init_noise_sigma(scheduler), rel=0.05)
    uncond = sd_impl.encode_prompt(c.tokenizer, c.text_encoder, "")
    nxt = sd_impl.denoise_step(c.unet, scheduler, latents, scheduler.timesteps[0], emb, uncond, C.GUIDANCE_SCALE)
    assert tuple(nxt.shape) == C.LATENT_SHAPE and torch.isfinite(nxt).all()
    image = sd_impl.decode_latents(c.vae, nxt / init_noise_sigma(scheduler))
    assert tuple(image.shape) == C.IMAGE_SHAPE
    pil = sd_impl.to_pil(image)
    assert pil.size == (C.IMAGE_SIZE, C.IMAGE_SIZE) and pil.mode == "RGB"


def test_same_seed_same_image_and_other_seed_differs(sd_impl, sd_components):
    first = _generate(sd_impl, sd_components, make_scheduler("pndm"), seed=7, steps=10)
    again = _generate(sd_impl, sd_components, make_scheduler("pndm"), seed=7, steps=10)
    other = _generate(sd_impl, sd_components, make_scheduler("pndm"), seed=8, steps=10)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize(("name", "steps"), PIPELINE_SCHEDULERS)
def test_generate_matches_stable_diffusion_pipeline(sd_impl, sd_components, name, steps):
    c = sd_components
    ours = _generate(sd_impl, c, make_scheduler(name), seed=0, steps=steps)
    pipe = StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=make_scheduler(name),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        PROMPT,
        num_inference_steps=steps,
        guidance_scale=C.GUIDANCE_SCALE,
        generator=torch.Generator("cpu").manual_seed(0),
        output_type="pt",
    ).images
    assert tuple(ours.shape) == C.IMAGE_SHAPE
    diff = ((ours / 2 + 0.5).clamp(0, 1) - theirs).abs().max().item()
    assert diff <= C.ATOL_PIPELINE_CPU_FP32, f"{name}: max |reference - pipeline| = {diff:.3g}"


def test_generate_records_stage_times(sd_components):
    from sdverify import reference

    _generate(reference, sd_components, make_scheduler("ddim"), seed=0, steps=3)
    trace = reference.generate.last_trace
    assert list(trace.seconds()) == ["clip", "denoise", "vae"]
    assert all(s > 0 for s in trace.seconds().values())
    assert trace.shapes()["vae"]["image"] == (C.IMAGE_SHAPE, "float32")
