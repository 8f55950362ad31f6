import torch


def decode_latents(vae, latents):
    with torch.no_grad():
        image = vae.decode(latents).sample
    return image
