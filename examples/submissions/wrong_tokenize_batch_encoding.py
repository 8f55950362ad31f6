def tokenize(tokenizer, prompt):
    tokens = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    return tokens
