import inspect

import numpy as np
import torch
from PIL import Image


def to_pil(image):
    arr = (image[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((arr * 255).round().astype(np.uint8))


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    def embed(p):
        ids = tokenizer(p, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return text_encoder(ids)[0]

    cond, uncond = embed(prompt), embed("")
    scheduler.set_timesteps(num_inference_steps)
    latents = torch.randn((1, 4, 64, 64), generator=generator) * scheduler.init_noise_sigma
    kw = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            e_u, e_c = unet(x, t, encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
        latents = scheduler.step(e_u + guidance_scale * (e_c - e_u), t, latents, **kw).prev_sample
    with torch.no_grad():
        image = vae.decode(latents / vae.config.scaling_factor).sample
    return to_pil(image)  # the final picture
