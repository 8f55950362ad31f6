# did the guidance and the image conversion in float64 to be safe
import inspect

import numpy as np
import torch
from PIL import Image


def tokenize(tokenizer, prompt):
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    return torch.tensor([ids], dtype=torch.long)


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenize(tokenizer, prompt).to(text_encoder.device)
    with torch.no_grad():
        hidden = text_encoder(ids, output_hidden_states=False)
    return hidden.last_hidden_state


def initial_latents(scheduler, generator, device, dtype):
    z = torch.randn((1, 4, 64, 64), generator=generator, device="cpu", dtype=dtype)
    z = z * scheduler.init_noise_sigma
    return z.to(device)


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    u = eps_uncond.double()
    c = eps_cond.double()
    return (u + guidance_scale * (c - u)).to(eps_cond.dtype)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    inp = torch.cat([latents] * 2)
    inp = scheduler.scale_model_input(inp, timestep=t)
    with torch.no_grad():
        noise = unet(inp, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    eu, ec = noise.chunk(2)
    noise = cfg_combine(eu, ec, guidance_scale)
    params = inspect.signature(scheduler.step).parameters
    out = scheduler.step(noise, t, latents, generator=generator) if "generator" in params else scheduler.step(noise, t, latents)
    return out.prev_sample


def decode_latents(vae, latents):
    latents = latents / vae.config.scaling_factor
    with torch.no_grad():
        image = vae.decode(latents).sample
    return image


def to_pil(image):
    a = image[0].detach().cpu().double().numpy()
    a = np.clip(a * 0.5 + 0.5, 0.0, 1.0)
    a = np.transpose(a, (1, 2, 0))
    return Image.fromarray(np.rint(a * 255).astype(np.uint8), "RGB")


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    cond = encode_prompt(tokenizer, text_encoder, prompt)
    uncond = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps, device=unet.device)
    latents = initial_latents(scheduler, generator, unet.device, cond.dtype)
    for i, t in enumerate(scheduler.timesteps):
        latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
    return decode_latents(vae, latents)
