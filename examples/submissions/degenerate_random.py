"""Degenerate: right-shape random values everywhere (plausible statistics, no computation)."""
import numpy as np
import torch
from PIL import Image


def tokenize(tokenizer, prompt):
    return torch.randint(0, 49408, (1, 77))


def encode_prompt(tokenizer, text_encoder, prompt):
    return torch.randn(1, 77, 768)


def initial_latents(scheduler, generator, device, dtype):
    return torch.randn(1, 4, 64, 64, dtype=dtype).to(device) * scheduler.init_noise_sigma


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return torch.randn_like(eps_uncond)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    return torch.randn_like(latents)


def decode_latents(vae, latents):
    return torch.rand(1, 3, 512, 512, dtype=latents.dtype, device=latents.device) * 2 - 1


def to_pil(image):
    return Image.fromarray(np.random.randint(0, 256, (512, 512, 3), dtype=np.uint8))


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    return torch.rand(1, 3, 512, 512, device=unet.device) * 2 - 1
