"""Mine converts to uint8 by truncation ((x+1)*127.5) and batches the two prompts in generate."""
import inspect

import numpy as np
import torch
from PIL import Image


def tokenize(tokenizer, prompt):
    batch = tokenizer(prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                      return_tensors="pt")
    return batch.input_ids.long()


def encode_prompt(tokenizer, text_encoder, prompt):
    with torch.no_grad():
        return text_encoder(tokenize(tokenizer, prompt).to(text_encoder.device))[0]


def initial_latents(scheduler, generator, device, dtype):
    shape = (1, 4, 512 // 8, 512 // 8)
    latents = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    return latents * scheduler.init_noise_sigma


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    diff = eps_cond - eps_uncond
    return eps_uncond + diff * guidance_scale


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    latent_in = scheduler.scale_model_input(torch.cat([latents, latents], dim=0), t)
    with torch.no_grad():
        eps = unet(latent_in, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings], dim=0)).sample
    eps = cfg_combine(eps[:1], eps[1:], guidance_scale)
    accepts = set(inspect.signature(scheduler.step).parameters)
    step_kwargs = {"generator": generator} if "generator" in accepts else {}
    return scheduler.step(eps, t, latents, **step_kwargs).prev_sample


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(1 / 0.18215 * latents).sample


def to_pil(image):
    arr = ((image.clamp(-1, 1) + 1) * 127.5).squeeze(0).permute(1, 2, 0)
    return Image.fromarray(arr.cpu().numpy().astype(np.uint8))


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    ids = tokenizer(["", prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        emb = text_encoder(ids.to(text_encoder.device))[0]
    uncond, cond = emb[:1], emb[1:]
    scheduler.set_timesteps(num_inference_steps)
    latents = initial_latents(scheduler, generator, unet.device, emb.dtype)
    for t in scheduler.timesteps:
        latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
    return decode_latents(vae, latents)
