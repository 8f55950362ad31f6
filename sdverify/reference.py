"""The reference SD1.5 pipeline, written out stage by stage.

This is the API student modules implement (same names, same signatures).  It is
bit-for-bit what ``diffusers.StableDiffusionPipeline`` computes on CPU float32:
batched CFG ([uncond, cond] in one U-Net call), latents drawn the way
``randn_tensor`` draws them, generator passed to ``scheduler.step`` where it takes one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from sdverify import contract as C
from sdverify.stage_recorder import Trace
from sdverify.tokenizer import encode_batch

if TYPE_CHECKING:  # annotations only: importing the reference must stay light
    from diffusers.models import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from sdverify.schedulers import Scheduler


def tokenize(tokenizer: CLIPTokenizer, prompt: str) -> torch.Tensor:
    """Prompt -> ids [1,77] int64: BOS, text, EOS, then EOS padding (truncated to 77)."""
    ids: torch.Tensor = encode_batch(tokenizer, prompt).input_ids
    return ids


def encode_prompt(tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompt: str) -> torch.Tensor:
    """Prompt -> CLIP last_hidden_state [1,77,768] (no attention mask, as SD1.5)."""
    ids = tokenize(tokenizer, prompt).to(text_encoder.device)
    with torch.no_grad():
        hidden: torch.Tensor = text_encoder(ids)[0]
    return hidden


def initial_latents(
    scheduler: Scheduler, generator: torch.Generator | None, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal [1,4,64,64] scaled by ``scheduler.init_noise_sigma``.

    Drawn on the generator's device then moved, as diffusers' ``randn_tensor`` does, so
    that a CPU generator gives the same latents on every device.
    """
    draw_device = generator.device if generator is not None else torch.device(device)
    latents = torch.randn(C.LATENT_SHAPE, generator=generator, device=draw_device, dtype=dtype).to(device)
    scaled: torch.Tensor = latents * scheduler.init_noise_sigma
    return scaled


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_uncond + w * (eps_cond - eps_uncond)."""
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def step_kwargs(scheduler: Scheduler, generator: torch.Generator | None) -> dict[str, Any]:
    """What ``scheduler.step`` takes besides its inputs: ``eta`` (0) and ``generator`` where it has them,
    by the rule of ``StableDiffusionPipeline.prepare_extra_step_kwargs``."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict[str, Any] = {}
    if "eta" in params:
        kwargs["eta"] = 0.0
    if "generator" in params:
        kwargs["generator"] = generator
    return kwargs


def denoise_step(
    unet: UNet2DConditionModel,
    scheduler: Scheduler,
    latents: torch.Tensor,
    t: torch.Tensor | int,
    cond_embeddings: torch.Tensor,
    uncond_embeddings: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One CFG step: scale input, predict noise for [uncond, cond], combine, step."""
    return guided_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator)


def guided_step(
    unet: UNet2DConditionModel,
    scheduler: Scheduler,
    latents: torch.Tensor,
    t: torch.Tensor | int,
    cond_embeddings: torch.Tensor,
    uncond_embeddings: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    *,
    combine: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] = cfg_combine,
    scale_input: bool = True,
    batched: bool = True,
) -> torch.Tensor:
    """:func:`denoise_step` with its choices open, for replays and mistake simulations.

    ``combine(eps_uncond, eps_cond, w)`` guides; ``scale_input=False`` skips
    ``scale_model_input``; ``batched=False`` makes two U-Net calls (uncond, then cond), as
    lessons write them: a batched call rounds differently.
    """
    model_input = torch.cat([latents] * 2) if batched else latents
    if scale_input:
        model_input = scheduler.scale_model_input(model_input, t)
    with torch.no_grad():
        if batched:
            eps = unet(model_input, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
            eps_uncond, eps_cond = eps.chunk(2)
        else:
            eps_uncond = unet(model_input, t, encoder_hidden_states=uncond_embeddings).sample
            eps_cond = unet(model_input, t, encoder_hidden_states=cond_embeddings).sample
    eps = combine(eps_uncond, eps_cond, guidance_scale)
    prev_sample: torch.Tensor = scheduler.step(eps, t, latents, **step_kwargs(scheduler, generator)).prev_sample
    return prev_sample


def denoise_loop(
    unet: UNet2DConditionModel,
    scheduler: Scheduler,
    latents: torch.Tensor,
    cond_embeddings: torch.Tensor,
    uncond_embeddings: torch.Tensor,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    *,
    step: Callable[..., torch.Tensor] = denoise_step,
    reverse: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The denoising loop of :func:`generate`: ``step`` at each of ``scheduler.timesteps``
    (set beforehand; ``reverse`` walks them backwards, a mistake), ``progress(i, n)`` after each."""
    timesteps = scheduler.timesteps.flip(0) if reverse else scheduler.timesteps
    for i, t in enumerate(timesteps):
        latents = step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator)
        if progress is not None:
            progress(i, len(timesteps))
    return latents


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> raw VAE image [1,3,512,512], roughly in [-1, 1]."""
    # diffusers types config as a dict; it is a FrozenDict whose keys are attributes too.
    scaling_factor: float = vae.config.scaling_factor  # type: ignore[attr-defined]
    with torch.no_grad():
        image: torch.Tensor = vae.decode(latents / scaling_factor).sample
    return image


def to_pil(image: torch.Tensor) -> Image.Image:
    """Raw decoded image [1,3,H,W] in [-1, 1] -> 8-bit RGB PIL image."""
    array = (image[0].detach().float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8), mode="RGB")


def generate(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    scheduler: Scheduler,
    prompt: str,
    num_inference_steps: int = C.NUM_INFERENCE_STEPS,
    guidance_scale: float = C.GUIDANCE_SCALE,
    generator: torch.Generator | None = None,
    trace: Trace | None = None,
) -> torch.Tensor:
    """Prompt -> raw decoded image [1,3,512,512].

    Per-stage wall times, shapes and dtypes are recorded in ``trace`` (a fresh one is
    made when none is passed) and left in ``generate.last_trace`` for callers.
    """
    trace = trace if trace is not None else Trace(device=unet.device)
    generate.last_trace = trace  # type: ignore[attr-defined]  # mypy does not model function attributes
    with trace.stage("clip") as stage:
        cond = encode_prompt(tokenizer, text_encoder, prompt)
        uncond = encode_prompt(tokenizer, text_encoder, "")
        stage.record(token_ids=tokenize(tokenizer, prompt), cond_embeddings=cond, uncond_embeddings=uncond)
    with trace.stage("denoise") as stage:
        scheduler.set_timesteps(num_inference_steps, device=unet.device)
        latents = initial_latents(scheduler, generator, unet.device, cond.dtype)
        stage.record(initial_latents=latents)
        latents = denoise_loop(unet, scheduler, latents, cond, uncond, guidance_scale, generator, progress=trace.step)
        stage.record(final_latents=latents)
    with trace.stage("vae") as stage:
        image = decode_latents(vae, latents)
        stage.record(image=image)
    return image


generate.last_trace = None  # type: ignore[attr-defined]
