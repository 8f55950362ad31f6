# tokenizer part of the homework
import torch


def tokenize(tokenizer, prompt):
    # CLIP needs the special tokens, the tokenizer adds them
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    return ids


def encode_prompt(tokenizer, text_encoder, prompt):
    with torch.no_grad():
        return text_encoder(tokenize(tokenizer, prompt))[0]
