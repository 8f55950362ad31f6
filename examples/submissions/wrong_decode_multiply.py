import torch


def decode_latents(vae, latents):
    latents = latents * vae.config.scaling_factor
    with torch.no_grad():
        return vae.decode(latents).sample
