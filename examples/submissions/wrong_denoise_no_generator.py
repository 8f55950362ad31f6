import torch


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
    with torch.no_grad():
        noise_pred = unet(model_input, t, encoder_hidden_states=torch.cat([uncond_embeddings, cond_embeddings])).sample
    uncond, cond = noise_pred.chunk(2)
    noise_pred = uncond + guidance_scale * (cond - uncond)
    return scheduler.step(noise_pred, t, latents).prev_sample
