# my version: lerp for the guidance, inference_mode instead of no_grad
import inspect

import numpy as np
import torch
from PIL import Image

MAX_LEN = 77


def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=MAX_LEN, truncation=True,
                     return_tensors="pt")["input_ids"]


@torch.inference_mode()
def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenize(tokenizer, prompt)
    return text_encoder(ids.to(text_encoder.device))[0]


def initial_latents(scheduler, generator, device, dtype):
    gen_device = generator.device if generator is not None else device
    latents = torch.randn(1, 4, 64, 64, generator=generator, device=gen_device, dtype=dtype)
    return scheduler.init_noise_sigma * latents.to(device)


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    # lerp(a, b, w) = a + w * (b - a), also for w > 1
    return torch.lerp(eps_uncond, eps_cond, guidance_scale)


@torch.inference_mode()
def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    both = torch.cat([latents, latents])
    both = scheduler.scale_model_input(both, t)
    emb = torch.cat([uncond_embeddings, cond_embeddings])
    noise = unet(both, t, encoder_hidden_states=emb).sample
    u, c = noise.chunk(2)
    guided = cfg_combine(u, c, guidance_scale)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    return scheduler.step(guided, t, latents, **extra).prev_sample


@torch.inference_mode()
def decode_latents(vae, latents):
    return vae.decode(latents / vae.config.scaling_factor).sample


def to_pil(image):
    arr = ((image[0].float().cpu() + 1) / 2).clamp(0, 1)
    arr = (arr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    text = encode_prompt(tokenizer, text_encoder, prompt)
    empty = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps, device=unet.device)
    latents = initial_latents(scheduler, generator, unet.device, text.dtype)
    for t in scheduler.timesteps:
        latents = denoise_step(unet, scheduler, latents, t, text, empty, guidance_scale, generator)
    return decode_latents(vae, latents)
