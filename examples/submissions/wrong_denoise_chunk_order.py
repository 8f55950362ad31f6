import inspect

import torch


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    embeddings = torch.cat([cond_embeddings, uncond_embeddings])
    x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=embeddings).sample
    eps_uncond, eps_cond = eps.chunk(2)
    eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
    if "generator" in inspect.signature(scheduler.step).parameters:
        return scheduler.step(eps, t, latents, generator=generator).prev_sample
    return scheduler.step(eps, t, latents).prev_sample
