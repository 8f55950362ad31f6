"""Delegating: encode_prompt() hands the work to a pipeline's own stage method.

``pipe.encode_prompt`` is the pipeline doing the stage: its embeddings equal the
reference's, so only the delegation policy tells this apart from an implementation
(issue 20: it scored 9/9 with own_work passed).  tokenize is honest work.
"""
import torch
from diffusers import StableDiffusionPipeline


def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    pipe = StableDiffusionPipeline(vae=None, text_encoder=text_encoder, tokenizer=tokenizer, unet=None,
                                   scheduler=None, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with torch.no_grad():
        return pipe.encode_prompt(prompt, text_encoder.device, 1, False)[0]
