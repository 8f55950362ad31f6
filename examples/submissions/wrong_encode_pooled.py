import torch


def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def encode_prompt(tokenizer, text_encoder, prompt):
    ids = tokenize(tokenizer, prompt)
    with torch.no_grad():
        out = text_encoder(ids)
    # one vector per prompt
    return out.pooler_output
