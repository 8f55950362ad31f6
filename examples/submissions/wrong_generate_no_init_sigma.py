import inspect

import torch


def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    with torch.no_grad():
        return text_encoder(tokenize(tokenizer, prompt).to(text_encoder.device))[0]


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    eps = cfg_combine(*eps.chunk(2), guidance_scale)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    return scheduler.step(eps, t, latents, **extra).prev_sample


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    cond = encode_prompt(tokenizer, text_encoder, prompt)
    uncond = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps)
    latents = torch.randn((1, 4, 64, 64), generator=generator, dtype=cond.dtype).to(unet.device)
    for t in scheduler.timesteps:
        latents = denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
    return decode_latents(vae, latents)
