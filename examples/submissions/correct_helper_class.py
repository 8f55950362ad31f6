"""Pipeline kept in a small helper class; the required functions are thin wrappers."""
import inspect

import numpy as np
import torch
from PIL import Image


class _SD:
    latent_shape = (1, 4, 64, 64)

    def __init__(self, tokenizer=None, text_encoder=None, unet=None, vae=None):
        self.tokenizer, self.text_encoder, self.unet, self.vae = tokenizer, text_encoder, unet, vae

    def ids(self, prompt):
        t = self.tokenizer
        return t(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids

    @torch.no_grad()
    def embed(self, prompt):
        return self.text_encoder(self.ids(prompt).to(self.text_encoder.device)).last_hidden_state

    @torch.no_grad()
    def predict(self, scheduler, latents, t, cond, uncond):
        x = scheduler.scale_model_input(torch.cat((latents, latents)), t)
        out = self.unet(x, t, encoder_hidden_states=torch.cat((uncond, cond))).sample
        return out[0:1], out[1:2]

    @torch.no_grad()
    def decode(self, latents):
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample


def tokenize(tokenizer, prompt):
    return _SD(tokenizer).ids(prompt)


def encode_prompt(tokenizer, text_encoder, prompt):
    return _SD(tokenizer, text_encoder).embed(prompt)


def initial_latents(scheduler, generator, device, dtype):
    sigma = scheduler.init_noise_sigma
    return (torch.randn(_SD.latent_shape, generator=generator, dtype=dtype) * sigma).to(device)


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond.add(eps_cond.sub(eps_uncond), alpha=guidance_scale)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    eps_u, eps_c = _SD(unet=unet).predict(scheduler, latents, t, cond_embeddings, uncond_embeddings)
    eps = cfg_combine(eps_u, eps_c, guidance_scale)
    sig = inspect.signature(scheduler.step)
    if "generator" in sig.parameters:
        return scheduler.step(eps, t, latents, generator=generator).prev_sample
    return scheduler.step(eps, t, latents).prev_sample


def decode_latents(vae, latents):
    return _SD(vae=vae).decode(latents)


def to_pil(image):
    pixels = image.squeeze(0).mul(0.5).add(0.5).clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().cpu().numpy(), mode="RGB")


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    sd = _SD(tokenizer, text_encoder, unet, vae)
    cond, uncond = sd.embed(prompt), sd.embed("")
    scheduler.set_timesteps(num_inference_steps, device=unet.device)
    latents = initial_latents(scheduler, generator, unet.device, cond.dtype)
    for t in scheduler.timesteps:
        latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
    return sd.decode(latents)
