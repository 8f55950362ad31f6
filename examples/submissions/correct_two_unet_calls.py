"""Correct: two U-Net calls per step (uncond, then cond) instead of one batched call."""
import inspect

import numpy as np
import torch
from PIL import Image


def tokenize(tokenizer, prompt):
    out = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    return out.input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenize(tokenizer, prompt).to(text_encoder.device)
    with torch.no_grad():
        return text_encoder(ids).last_hidden_state


def initial_latents(scheduler, generator, device, dtype):
    noise = torch.randn((1, 4, 64, 64), generator=generator, dtype=dtype)
    return noise.to(device) * scheduler.init_noise_sigma


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    x = scheduler.scale_model_input(latents, t)
    with torch.no_grad():
        eps_uncond = unet(x, t, encoder_hidden_states=uncond_embeddings).sample
        eps_cond = unet(x, t, encoder_hidden_states=cond_embeddings).sample
    eps = cfg_combine(eps_uncond, eps_cond, guidance_scale)
    kwargs = {}
    if "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = generator
    return scheduler.step(eps, t, latents, **kwargs).prev_sample


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample


def to_pil(image):
    img = (image / 2 + 0.5).clamp(0, 1)
    img = img[0].permute(1, 2, 0).cpu().float().numpy()
    return Image.fromarray((img * 255).round().astype("uint8"))


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    cond = encode_prompt(tokenizer, text_encoder, prompt)
    uncond = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps)
    latents = initial_latents(scheduler, generator, unet.device, cond.dtype)
    for t in scheduler.timesteps:
        latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
    return decode_latents(vae, latents)
