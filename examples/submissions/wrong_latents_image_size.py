import torch

HEIGHT = WIDTH = 512


def initial_latents(scheduler, generator, device, dtype):
    z = torch.randn((1, 4, HEIGHT, WIDTH), generator=generator, dtype=dtype)
    return z.to(device) * scheduler.init_noise_sigma
