import torch


def initial_latents(scheduler, generator, device, dtype):
    latents = torch.rand((1, 4, 64, 64), generator=generator, dtype=dtype)
    return latents.to(device) * scheduler.init_noise_sigma
