import inspect

import torch


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    latent_input = torch.cat([latents, latents])
    with torch.no_grad():
        pred = unet(latent_input, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    pred_uncond, pred_text = pred.chunk(2)
    pred = pred_uncond + guidance_scale * (pred_text - pred_uncond)
    kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    return scheduler.step(pred, t, latents, **kw).prev_sample
