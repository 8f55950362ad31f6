# full pipeline, self-contained
import inspect

import torch


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    def embed(text):
        ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return text_encoder(ids)[0]

    cond, uncond = embed(prompt), embed("")
    scheduler.set_timesteps(num_inference_steps)
    latents = torch.randn((1, 4, 64, 64), generator=generator) * scheduler.init_noise_sigma
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    # go from t=0 up to t=T
    for t in sorted(scheduler.timesteps):
        x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            eps = unet(x, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = eps.chunk(2)
        latents = scheduler.step(eps_u + guidance_scale * (eps_c - eps_u), t, latents, **extra).prev_sample
    with torch.no_grad():
        return vae.decode(latents / vae.config.scaling_factor).sample
