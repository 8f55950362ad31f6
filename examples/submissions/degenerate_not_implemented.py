"""Degenerate: the handout's stubs, untouched."""


def tokenize(tokenizer, prompt):
    raise NotImplementedError


def encode_prompt(tokenizer, text_encoder, prompt):
    raise NotImplementedError


def initial_latents(scheduler, generator, device, dtype):
    raise NotImplementedError


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    raise NotImplementedError


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    raise NotImplementedError


def decode_latents(vae, latents):
    raise NotImplementedError


def to_pil(image):
    raise NotImplementedError


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    raise NotImplementedError
