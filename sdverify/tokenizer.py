"""The real SD1.5 CLIP tokenizer, loaded offline from the files this repo ships."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from transformers import CLIPTokenizer

from sdverify import contract as C

_PACKAGED = Path(__file__).parent / "_data" / "tokenizer"  # inside a built wheel
_REPO = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"  # source checkout


def tokenizer_dir() -> Path:
    """Folder holding vocab.json / merges.txt / tokenizer_config.json."""
    for candidate in (_PACKAGED, _REPO):
        if (candidate / "vocab.json").is_file():
            return candidate
    raise FileNotFoundError(f"SD1.5 tokenizer files not found in {_PACKAGED} or {_REPO}")


@lru_cache(maxsize=1)
def load_tokenizer() -> CLIPTokenizer:
    """The shipped tokenizer, shared (cached): its vocabulary never changes, but a fast tokenizer
    keeps the padding/truncation of its last call, so nothing saves this copy."""
    return CLIPTokenizer.from_pretrained(str(tokenizer_dir()))


def encode_batch(tokenizer: CLIPTokenizer, prompt: str):
    """Tokenize the way SD1.5 does: pad to 77 with EOS, truncate keeping EOS last."""
    return tokenizer(
        prompt,
        padding="max_length",
        max_length=C.MAX_TOKENS,
        truncation=True,
        return_tensors="pt",
    )


def count_tokens(attention_mask: torch.Tensor) -> int:
    """Real positions (BOS, text, EOS) in one tokenized prompt.

    Uses the attention mask, not ``ids != pad_token_id``: SD1.5 pads with the EOS id,
    so counting non-pad ids silently drops the EOS.
    """
    return int(attention_mask.sum())


def text_token_count(tokenizer: CLIPTokenizer, prompt: str) -> int:
    """Text tokens of ``prompt`` before truncation, excluding BOS/EOS.

    The ``n_tokens`` of the id properties: the first EOS belongs at ``min(n + 1, 76)``.
    (``verbose=False``: counting a long prompt is not the "sequence too long" misuse
    the tokenizer warns about.)
    """
    return len(tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False).input_ids)
