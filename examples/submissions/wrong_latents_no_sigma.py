import torch


def initial_latents(scheduler, generator, device, dtype):
    # start from pure gaussian noise
    return torch.randn(1, 4, 64, 64, generator=generator, dtype=dtype).to(device)
