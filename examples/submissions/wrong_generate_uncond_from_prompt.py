import inspect

import torch


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0]


def generate(tokenizer, text_encoder, unet, vae, scheduler, prompt, num_inference_steps=50, guidance_scale=7.5,
             generator=None):
    text_emb = encode_prompt(tokenizer, text_encoder, prompt)
    emb = torch.cat([text_emb, text_emb])  # one for each half of the batch
    scheduler.set_timesteps(num_inference_steps)
    latents = torch.randn((1, 4, 64, 64), generator=generator, dtype=text_emb.dtype) * scheduler.init_noise_sigma
    accepts_generator = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            noise = unet(x, t, encoder_hidden_states=emb).sample
        n_u, n_c = noise.chunk(2)
        noise = n_u + guidance_scale * (n_c - n_u)
        if accepts_generator:
            latents = scheduler.step(noise, t, latents, generator=generator).prev_sample
        else:
            latents = scheduler.step(noise, t, latents).prev_sample
    with torch.no_grad():
        return vae.decode(latents / 0.18215).sample
