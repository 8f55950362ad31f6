"""Degenerate: every function exists and returns None."""


def tokenize(tokenizer, prompt):
    pass


def encode_prompt(tokenizer, text_encoder, prompt):
    pass


def initial_latents(scheduler, generator, device, dtype):
    pass


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    pass


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    pass


def decode_latents(vae, latents):
    pass


def to_pil(image):
    pass


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    pass
