"""Prompt -> [1,77,768] embeddings for any prompt, and the causality of CLIP's text encoder."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sdverify import contract as C
from sdverify import reference
from sdverify.presets import SD15
from sdverify.properties import failures
from sdverify.properties.embeddings import causality, embedding_properties
from sdverify.properties.strategies import prompts
from sdverify.schedulers import make_scheduler

# Each example runs the text encoder: a quarter of the profile's examples keeps the
# suite's budget (the tokenizer-only properties run the full count).
ENCODER_EXAMPLES = settings(max_examples=max(5, settings.default.max_examples // 4))


@ENCODER_EXAMPLES
@given(prompt=prompts())
@example(prompt="")
@example(prompt="🐱 " * 3_000)
def test_embeddings_are_finite_1x77x768_in_the_encoders_dtype(sd_tokenizer, sd_components, prompt):
    encoder = sd_components.text_encoder
    embeddings = reference.encode_prompt(sd_tokenizer, encoder, prompt)
    assert failures(embedding_properties(embeddings, dtype=encoder.dtype, device=encoder.device)) == {}


@st.composite
def shared_prefix_pairs(draw, tokenizer):
    """Two id rows equal on positions 0..k-1 and different at k (random ids after)."""
    ids_a = reference.tokenize(tokenizer, draw(prompts()))
    k = draw(st.integers(1, C.MAX_TOKENS - 1))
    tail = draw(st.lists(st.integers(0, C.VOCAB_SIZE - 1), min_size=C.MAX_TOKENS - k, max_size=C.MAX_TOKENS - k))
    ids_b = ids_a.clone()
    ids_b[0, k:] = torch.tensor(tail)
    ids_b[0, k] = (ids_a[0, k] + 1 + tail[0] % (C.VOCAB_SIZE - 1)) % C.VOCAB_SIZE  # differs at k
    return ids_a, ids_b


@ENCODER_EXAMPLES
@given(data=st.data())
def test_text_encoder_is_causal(sd_tokenizer, sd_components, data):
    ids_a, ids_b = data.draw(shared_prefix_pairs(sd_tokenizer))
    result = causality(sd_components.text_encoder, ids_a, ids_b)
    assert result.passed, str(result)


class _RecordingEncoder(torch.nn.Module):
    """Forwards to the real encoder and remembers every id row it was given."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.seen = encoder, []

    @property
    def device(self):
        return self.encoder.device

    def forward(self, ids):
        self.seen.append(ids.clone())
        return self.encoder(ids)


def test_cfg_unconditional_branch_encodes_the_empty_prompt_ids(sd_tokenizer, sd_components):
    empty = torch.tensor([[C.BOS_ID] + [C.EOS_ID] * (C.MAX_TOKENS - 1)])
    encoder = _RecordingEncoder(sd_components.text_encoder)
    c = sd_components
    reference.generate(sd_tokenizer, encoder, c.unet, c.vae, make_scheduler("ddim"), "a cat", num_inference_steps=1)
    assert [torch.equal(ids, empty) for ids in encoder.seen] == [False, True]  # cond, then uncond
    with torch.no_grad():
        assert torch.equal(reference.encode_prompt(sd_tokenizer, c.text_encoder, ""), c.text_encoder(empty)[0])


class _Bidirectional(torch.nn.Module):
    """Every position sees the whole row (a prefix sum from the end): not causal."""

    def forward(self, ids):
        onehot = torch.nn.functional.one_hot(ids % 16, 16).float()
        return (onehot.flip(1).cumsum(1).flip(1),)


def test_non_causal_encoder_and_broken_outputs_are_reported(sd_tokenizer):
    ids_a = reference.tokenize(sd_tokenizer, "a cat sitting on a beach at sunset")
    ids_b = reference.tokenize(sd_tokenizer, "a cat sitting on a dog")
    assert "the encoder is not causal" in causality(_Bidirectional(), ids_a, ids_b).message
    assert "raised ZeroDivisionError" in causality(lambda ids: 1 / 0, ids_a, ids_b).message
    assert "returned NoneType" in causality(lambda ids: None, ids_a, ids_b).message
    with pytest.raises(ValueError, match="share a non-empty prefix"):
        causality(_Bidirectional(), ids_a, ids_a)


def test_embedding_interface_mistakes_are_named():
    good = torch.zeros(C.EMBEDDINGS_SHAPE)
    assert (
        "dtype torch.float32"
        in failures(embedding_properties(good, dtype=torch.float16, device="cpu"))["embeddings.dtype"]
    )
    assert "on cuda" in failures(embedding_properties(good, dtype=torch.float32, device="cuda"))["embeddings.device"]
    pooled = failures(embedding_properties(torch.zeros(1, C.EMBED_DIM), dtype=torch.float32, device="cpu"))
    assert "expected a torch.Tensor of shape [1,77,768]" in pooled["embeddings.shape"]
    nan = failures(embedding_properties(good * float("nan"), dtype=torch.float32, device="cpu"))
    assert set(nan) == {"embeddings.finite"}
    assert set(failures(embedding_properties(None, dtype=torch.float32, device="cpu"))) == {
        "embeddings.shape", "embeddings.dtype", "embeddings.device", "embeddings.finite",
    }  # fmt: skip


@pytest.mark.slow
def test_real_depth_sd15_text_encoder(sd_tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(**SD15.text_encoder)).eval()
    for prompt in ("", "a cat sitting on a beach at sunset", "🐱 " * 3_000, "日本の城 &amp; \x0b\x00"):
        embeddings = reference.encode_prompt(sd_tokenizer, encoder, prompt)
        assert failures(embedding_properties(embeddings, dtype=torch.float32, device="cpu")) == {}
    ids_a = reference.tokenize(sd_tokenizer, "a cat sitting on a beach at sunset")
    ids_b = reference.tokenize(sd_tokenizer, "a cat sitting on a dog")
    assert causality(encoder, ids_a, ids_b).passed
