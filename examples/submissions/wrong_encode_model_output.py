import torch


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        embeddings = text_encoder(ids.to(text_encoder.device))
    return embeddings
