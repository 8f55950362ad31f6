# Adapted from the StableDiffusionPipeline source, cut into the assignment's functions.
import inspect

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


def tokenize(tokenizer, prompt):
    text_inputs = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return text_inputs.input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    text_input_ids = tokenize(tokenizer, prompt)
    with torch.no_grad():
        prompt_embeds = text_encoder(text_input_ids.to(text_encoder.device), attention_mask=None)
    return prompt_embeds[0]


def initial_latents(scheduler, generator, device, dtype):
    shape = (1, 4, 64, 64)
    latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    latents = latents * scheduler.init_noise_sigma
    return latents


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    noise_pred_uncond, noise_pred_text = eps_uncond, eps_cond
    return noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)


def prepare_extra_step_kwargs(scheduler, generator, eta=0.0):
    extra_step_kwargs = {}
    if "eta" in set(inspect.signature(scheduler.step).parameters.keys()):
        extra_step_kwargs["eta"] = eta
    if "generator" in set(inspect.signature(scheduler.step).parameters.keys()):
        extra_step_kwargs["generator"] = generator
    return extra_step_kwargs


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    prompt_embeds = torch.cat([uncond_embeddings, cond_embeddings])
    latent_model_input = torch.cat([latents] * 2)
    latent_model_input = scheduler.scale_model_input(latent_model_input, t)
    with torch.no_grad():
        noise_pred = unet(latent_model_input, t, encoder_hidden_states=prompt_embeds, return_dict=False)[0]
    noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
    noise_pred = cfg_combine(noise_pred_uncond, noise_pred_text, guidance_scale)
    latents = scheduler.step(noise_pred, t, latents, **prepare_extra_step_kwargs(scheduler, generator),
                             return_dict=False)[0]
    return latents


def decode_latents(vae, latents):
    with torch.no_grad():
        image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return image


def to_pil(image):
    image = (image / 2 + 0.5).clamp(0, 1)
    image = image.cpu().permute(0, 2, 3, 1).float().numpy()
    images = (image * 255).round().astype("uint8")
    return [Image.fromarray(im) for im in images][0]


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    device = unet.device
    prompt_embeds = encode_prompt(tokenizer, text_encoder, prompt)
    negative_prompt_embeds = encode_prompt(tokenizer, text_encoder, "")
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    latents = initial_latents(scheduler, generator, device, prompt_embeds.dtype)
    for i, t in enumerate(timesteps):
        latents = denoise_step(unet, scheduler, latents, t, prompt_embeds, negative_prompt_embeds, guidance_scale,
                               generator)
    return decode_latents(vae, latents)
