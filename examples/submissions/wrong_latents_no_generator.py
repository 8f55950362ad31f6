import torch


def initial_latents(scheduler, generator, device, dtype):
    noise = torch.randn(1, 4, 64, 64, device=device, dtype=dtype)
    return noise * scheduler.init_noise_sigma
