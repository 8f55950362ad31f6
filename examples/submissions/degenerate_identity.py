"""Degenerate: every function hands back an input unchanged."""


def tokenize(tokenizer, prompt):
    return prompt


def encode_prompt(tokenizer, text_encoder, prompt):
    return prompt


def initial_latents(scheduler, generator, device, dtype):
    return generator


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_uncond


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    return latents


def decode_latents(vae, latents):
    return latents


def to_pil(image):
    return image


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    return prompt
