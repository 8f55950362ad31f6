def tokenize(tokenizer, prompt):
    # pad to 77 like the paper says
    return tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
