import torch


def decode_latents(vae, latents):
    with torch.no_grad():
        return vae.decode(latents / 0.18215)
