"""The reference SD1.5 pipeline, written out stage by stage.

This is the API student modules implement (same names, same signatures).  It is
bit-for-bit what ``diffusers.StableDiffusionPipeline`` computes on CPU float32:
batched CFG ([uncond, cond] in one U-Net call), latents drawn the way
``randn_tensor`` draws them, generator passed to ``scheduler.step`` where it takes one.
"""

from __future__ import annotations

import inspect
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


def _step_kwargs(scheduler: Scheduler, generator: torch.Generator | None) -> dict[str, Any]:
    # Same rule as StableDiffusionPipeline.prepare_extra_step_kwargs.
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
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        eps = unet(model_input, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    eps_uncond, eps_cond = eps.chunk(2)
    eps = cfg_combine(eps_uncond, eps_cond, guidance_scale)
    prev_sample: torch.Tensor = scheduler.step(eps, t, latents, **_step_kwargs(scheduler, generator)).prev_sample
    return prev_sample


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
        for i, t in enumerate(scheduler.timesteps):
            latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
            trace.step(i, len(scheduler.timesteps))
        stage.record(final_latents=latents)
    with trace.stage("vae") as stage:
        image = decode_latents(vae, latents)
        stage.record(image=image)
    return image


generate.last_trace = None  # type: ignore[attr-defined]
