"""Token-id properties of the real SD1.5 CLIP tokenizer, for any prompt (Hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given

from sdverify import contract as C
from sdverify import reference
from sdverify.properties import failures
from sdverify.properties.strategies import SPECIAL_TOKEN_TEXT, prompts
from sdverify.properties.tokens import attention_mask_property, token_id_properties
from sdverify.tokenizer import count_tokens, encode_batch, text_token_count

CAT = "a cat sitting on a beach at sunset"


@given(prompt=prompts())
@example(prompt="")
@example(prompt="x " * 5_000)  # 5000 text tokens: truncation keeps EOS at 76
@example(prompt="word " * 74 + "end")  # exactly 75 text tokens: the last one that fits
def test_ids_properties_hold_for_any_prompt(sd_tokenizer, prompt):
    n = text_token_count(sd_tokenizer, prompt)
    ids = reference.tokenize(sd_tokenizer, prompt)
    assert failures(token_id_properties(ids, n)) == {}
    mask = encode_batch(sd_tokenizer, prompt).attention_mask
    assert attention_mask_property(mask, n).passed
    assert count_tokens(mask) == min(n + 2, C.MAX_TOKENS)


def test_empty_prompt_is_bos_then_eos_padding(sd_tokenizer):
    # This is the id row CFG's unconditional branch encodes (reference.generate uses "").
    expected = torch.tensor([[C.BOS_ID] + [C.EOS_ID] * (C.MAX_TOKENS - 1)])
    assert torch.equal(reference.tokenize(sd_tokenizer, ""), expected)
    assert torch.equal(reference.tokenize(sd_tokenizer, " \t\n"), expected)


def test_counting_non_pad_ids_drops_the_eos(sd_tokenizer):
    # SD1.5 pads with EOS (pad_token_id == eos_token_id), so `ids != pad` misses the real EOS.
    assert sd_tokenizer.pad_token_id == sd_tokenizer.eos_token_id == C.EOS_ID
    batch = encode_batch(sd_tokenizer, CAT)
    assert count_tokens(batch.attention_mask) == 10  # BOS + 8 words + EOS
    assert int((batch.input_ids != sd_tokenizer.pad_token_id).sum()) == 9


@pytest.mark.parametrize("text", SPECIAL_TOKEN_TEXT)
def test_finding_special_token_text_in_a_prompt_becomes_the_special_token(sd_tokenizer, text):
    # Documented finding: the CLIP tokenizer parses "<|endoftext|>" typed by a user as the
    # special token itself, so the encoder sees a BOS/EOS mid-prompt and the id properties
    # (first EOS at n + 1, EOS-only padding) do not hold for such prompts.  This asserts the
    # current behaviour; if a tokenizer release escapes special-token text, update it.
    ids = reference.tokenize(sd_tokenizer, f"a {text} b")[0].tolist()
    special = sd_tokenizer.convert_tokens_to_ids(text)
    assert ids[:4] == [C.BOS_ID, 320, special, 321]  # 320 "a</w>", 321 "b</w>"
    failed = failures(token_id_properties(torch.tensor([ids]), text_token_count(sd_tokenizer, f"a {text} b")))
    assert set(failed) == ({"tokens.eos_position", "tokens.padding"} if text == "<|endoftext|>" else set())


def _cat_ids(sd_tokenizer) -> torch.Tensor:
    return reference.tokenize(sd_tokenizer, CAT)


MISTAKES = {
    # mistake -> (mangle ids of CAT, failing property, words in its message)
    "pad_with_zero": (
        lambda ids: torch.cat([ids[:, :10], torch.zeros(1, 67, dtype=torch.int64)], 1),
        "tokens.padding",
        "'!' token",
    ),
    "no_bos": (lambda ids: torch.cat([ids[:, 1:], ids[:, -1:]], 1), "tokens.bos", "expected BOS 49406"),
    "no_eos": (lambda ids: torch.where(ids == C.EOS_ID, 0, ids), "tokens.eos_position", "no EOS"),
    "int32": (lambda ids: ids.int(), "tokens.shape_dtype", "torch.int32 tensor, expected torch.int64"),
    "unbatched": (lambda ids: ids[0], "tokens.shape_dtype", "shape [77]"),
    "list": (
        lambda ids: ids[0].tolist(),
        "tokens.shape_dtype",
        "returned list, expected a torch.Tensor of shape [1,77]",
    ),
    "out_of_vocab": (lambda ids: ids + 5, "tokens.vocab", "outside the CLIP vocabulary"),
}


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_tokenizer_mistakes_are_named(sd_tokenizer, name):
    mangle, property_id, words = MISTAKES[name]
    failed = failures(token_id_properties(mangle(_cat_ids(sd_tokenizer)), 8))
    assert words in failed[property_id]


def test_truncation_that_drops_the_eos_is_named(sd_tokenizer):
    long = "x " * 200
    naive = sd_tokenizer(long, return_tensors="pt").input_ids[:, : C.MAX_TOKENS]  # cut after encoding
    failed = failures(token_id_properties(naive, text_token_count(sd_tokenizer, long)))
    assert "truncation must keep EOS at position 76" in failed["tokens.eos_position"]
