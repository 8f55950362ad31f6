import torch


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        noise = unet(x, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    u, c = noise.chunk(2)
    noise = u + guidance_scale * (c - u)
    return scheduler.step(noise, t, latents)
