import torch


def encode_prompt(tokenizer, text_encoder, prompt):
    batch = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        # don't attend to the padding!
        hidden = text_encoder(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return hidden
