# passes the generator by trying, the pythonic way; image via numpy
import numpy as np
import torch
from PIL import Image


def tokenize(tokenizer, prompt):
    tokens = tokenizer(text=prompt, padding="max_length", max_length=77, truncation=True, return_tensors="np")
    return torch.from_numpy(tokens["input_ids"]).to(torch.int64)


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenize(tokenizer, prompt)
    with torch.no_grad():
        return text_encoder(input_ids=ids.to(text_encoder.device), return_dict=True)["last_hidden_state"]


def initial_latents(scheduler, generator, device, dtype):
    eps = torch.empty((1, 4, 64, 64), dtype=dtype).normal_(generator=generator)
    return eps.to(device) * scheduler.init_noise_sigma


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_cond * guidance_scale + eps_uncond * (1.0 - guidance_scale)


def _step(scheduler, eps, t, latents, generator):
    try:
        return scheduler.step(eps, t, latents, generator=generator).prev_sample
    except TypeError:  # PNDM's step takes no generator
        return scheduler.step(eps, t, latents).prev_sample


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    inp = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        e = unet(inp, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    uncond_e, cond_e = torch.split(e, 1, dim=0)
    return _step(scheduler, cfg_combine(uncond_e, cond_e, guidance_scale), t, latents, generator)


def decode_latents(vae, latents):
    with torch.no_grad():
        dec = vae.decode(latents / vae.config.scaling_factor)
    return dec.sample


def to_pil(image):
    x = image.detach().float().cpu().numpy()[0]
    x = np.moveaxis(x, 0, -1)
    x = np.clip((x + 1) / 2, 0, 1)
    return Image.fromarray(np.round(x * 255).astype(np.uint8))


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    c = encode_prompt(tokenizer, text_encoder, prompt)
    u = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps)
    z = initial_latents(scheduler, generator, unet.device, c.dtype)
    for t in scheduler.timesteps:
        z = denoise_step(unet, scheduler, z, t, c, u, guidance_scale, generator)
    return decode_latents(vae, z)
