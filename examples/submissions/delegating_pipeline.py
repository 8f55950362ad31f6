"""Delegating: generate() runs diffusers' StableDiffusionPipeline; decode_latents is honest work.

The pipeline's output equals the reference's (same components, scheduler and generator),
so only the delegation policy tells this apart from an implementation.
"""
import torch
from diffusers import StableDiffusionPipeline


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    latents = pipe(prompt, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   generator=generator, output_type="latent").images
    return decode_latents(vae, latents)
