"""The shipped SD1.5 CLIP tokenizer files."""

from __future__ import annotations

import json

from sdverify import contract as C
from sdverify.tokenizer import count_tokens, encode_batch, tokenizer_dir

LESSON_PROMPT = "a cat sitting on a beach at sunset"


def test_special_ids_and_sizes(sd_tokenizer):
    assert len(sd_tokenizer) == C.VOCAB_SIZE
    assert sd_tokenizer.bos_token_id == C.BOS_ID
    assert sd_tokenizer.eos_token_id == C.EOS_ID
    assert sd_tokenizer.pad_token_id == C.PAD_ID
    assert sd_tokenizer.model_max_length == C.MAX_TOKENS


def test_vocab_and_merges_files_agree():
    folder = tokenizer_dir()
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(vocab) == C.VOCAB_SIZE == 2 * 256 + (len(merges) - 1) + 2
    assert vocab["<|startoftext|>"] == C.BOS_ID and vocab["<|endoftext|>"] == C.EOS_ID


def test_lesson_prompt_ids(sd_tokenizer):
    batch = encode_batch(sd_tokenizer, LESSON_PROMPT)
    ids = batch.input_ids[0].tolist()
    assert ids[:10] == [49406, 320, 2368, 4919, 525, 320, 2117, 536, 3424, 49407]
    assert ids[10:] == [C.PAD_ID] * (C.MAX_TOKENS - 10)
    assert count_tokens(batch.attention_mask) == 10
