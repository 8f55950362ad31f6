"""Guidance written as a weighted sum; scheduler.step(...)[0]; literal 0.18215."""
import inspect

import numpy as np
import torch
from PIL import Image

SCALE = 0.18215


def tokenize(tokenizer, prompt):
    enc = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    return enc.input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    with torch.no_grad():
        out = text_encoder(input_ids=tokenize(tokenizer, prompt).to(text_encoder.device))
    return out[0]


def initial_latents(scheduler, generator, device, dtype):
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor((1, 4, 64, 64), generator=generator, device=torch.device(device), dtype=dtype) * scheduler.init_noise_sigma


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    w = guidance_scale
    return (1 - w) * eps_uncond + w * eps_cond


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        pred = unet(model_in, t, torch.cat([uncond_embeddings, cond_embeddings]), return_dict=False)[0]
    pred_u, pred_c = pred.chunk(2)
    pred = cfg_combine(pred_u, pred_c, guidance_scale)
    if "generator" in inspect.signature(scheduler.step).parameters:
        return scheduler.step(pred, t, latents, generator=generator)[0]
    return scheduler.step(pred, t, latents)[0]


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(latents * (1 / SCALE), return_dict=False)[0]


def to_pil(image):
    x = image.detach().cpu()[0]
    x = torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)
    x = (255.0 * x).round().to(torch.uint8)
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    c = encode_prompt(tokenizer, text_encoder, prompt)
    u = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps)
    x = initial_latents(scheduler, generator, "cpu", c.dtype)
    for t in scheduler.timesteps:
        x = denoise_step(unet, scheduler, x, t, c, u, guidance_scale, generator)
    return decode_latents(vae, x)
