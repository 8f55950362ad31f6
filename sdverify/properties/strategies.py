"""Hypothesis strategies that reach the corners real SD1.5 users hit.

Prompts: empty and whitespace-only strings, ASCII words, punctuation runs, emoji and
ZWJ sequences, CJK, right-to-left scripts, combining marks, control characters, HTML
entities, arbitrary unicode, mixtures of these, and strings far past 77 tokens
(up to ~10k characters, built by repetition because Hypothesis draws at most a few KB).

Tensors: pairs of noise predictions in every float dtype, with magnitudes and guidance
scales bounded so that no CFG property can overflow float16 (|x| <= 100, |w| <= 20).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_ABS_VALUE = 100.0
MAX_ABS_GUIDANCE = 20.0
LONG_PROMPT_CHARS = 10_000

_EMOJI = ["😀", "🐱", "🌅", "🏖️", "👍🏽", "🇯🇵", "❤️", "✨"]
_ZWJ_SEQUENCES = ["👩\u200d👩\u200d👧", "👨\u200d💻", "🏳️\u200d🌈", "🧑\u200d🚀", "👁️\u200d🗨️"]
_HTML_ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&#x1F431;", "&copy;"]
_CONTROL = [chr(c) for c in range(0x20)] + ["\x7f", "\u200b", "\u200e", "\u200f", "\ufeff", "\u2028"]
_WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\u00a0", "\u3000"]
_PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "«", "»", "¿", "¡"]
_WORDS = ["a", "cat", "sitting", "on", "beach", "at", "sunset", "photo", "of", "astronaut", "riding",
          "horse", "oil", "painting", "highly", "detailed", "8k", "trending", "artstation", "portrait"]  # fmt: skip

# Special-token text (e.g. a prompt quoting "<|endoftext|>") is parsed by the CLIP
# tokenizer as the special token itself: a documented finding, tested on its own
# (tests/test_prop_tokens.py), not part of ``prompts()`` whose id properties it breaks.
SPECIAL_TOKEN_TEXT = ("<|startoftext|>", "<|endoftext|>")


def _chars(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.characters(min_codepoint=lo, max_codepoint=hi)


def _runs(alphabet: st.SearchStrategy[str], max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=1, max_size=max_size)


def _combining() -> st.SearchStrategy[str]:
    """Base letters each followed by 1-4 combining marks (U+0300-U+036F)."""
    cluster = st.tuples(_chars(0x61, 0x7A), st.text(_chars(0x300, 0x36F), min_size=1, max_size=4)).map("".join)
    return st.lists(cluster, min_size=1, max_size=10).map("".join)


def _long() -> st.SearchStrategy[str]:
    """Far past 77 tokens: a short unit repeated up to ~LONG_PROMPT_CHARS characters."""
    unit = st.one_of(
        st.sampled_from(_WORDS).map(lambda w: w + " "), st.sampled_from(_EMOJI), _runs(_chars(0x4E00, 0x9FFF), 3)
    )
    return st.tuples(unit, st.integers(40, LONG_PROMPT_CHARS)).map(lambda p: (p[0] * (p[1] // len(p[0]) + 1))[: p[1]])


def prompt_fragments() -> st.SearchStrategy[str]:
    """One corner-case fragment: the building block of :func:`prompts`."""
    return st.one_of(
        st.just(""),
        _runs(st.sampled_from(_WHITESPACE), 8),
        st.lists(st.sampled_from(_WORDS), min_size=1, max_size=12).map(" ".join),
        _runs(st.sampled_from(_PUNCTUATION), 20),
        st.lists(st.sampled_from(_EMOJI + _ZWJ_SEQUENCES), min_size=1, max_size=8).map("".join),
        _runs(_chars(0x4E00, 0x9FFF)),  # CJK unified ideographs
        _runs(_chars(0x3040, 0x30FF)),  # hiragana / katakana
        _runs(st.one_of(_chars(0x05D0, 0x05EA), _chars(0x0621, 0x064A), st.just(" "))),  # Hebrew, Arabic
        _combining(),
        _runs(st.sampled_from(_CONTROL), 8),
        st.lists(st.sampled_from(_HTML_ENTITIES), min_size=1, max_size=6).map(" ".join),
        st.text(max_size=60),  # anything Hypothesis likes (no surrogates)
    )


def prompts() -> st.SearchStrategy[str]:
    """Prompts: single corner cases, mixtures of them, and very long strings."""
    mixed = st.lists(prompt_fragments(), min_size=2, max_size=5).map(" ".join)
    return st.one_of(prompt_fragments(), mixed, _long())


def guidance_scales() -> st.SearchStrategy[float]:
    """CFG weights: the values users type (0, 1, 7.5...) and anything in [-20, 20]."""
    common = st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.5, 12.0, 20.0])
    anything = st.floats(-MAX_ABS_GUIDANCE, MAX_ABS_GUIDANCE, allow_nan=False, allow_infinity=False)
    return st.one_of(common, anything)


@st.composite
def float_tensors(draw: st.DrawFn, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``dtype``: explicit elements (zeros, subnormals, ±MAX_ABS_VALUE...) or a seeded normal draw."""
    n = 1
    for size in shape:
        n *= size
    explicit = st.lists(
        st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE, allow_nan=False, allow_infinity=False, width=32),
        min_size=n,
        max_size=n,
    ).map(lambda xs: torch.tensor(xs, dtype=torch.float64).reshape(shape))
    seeded = st.tuples(st.integers(0, 2**32 - 1), st.floats(1e-3, MAX_ABS_VALUE / 5)).map(
        lambda p: torch.randn(shape, generator=torch.Generator().manual_seed(p[0]), dtype=torch.float64) * p[1]
    )
    values = draw(st.one_of(explicit, seeded))
    return values.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE).to(dtype)


@st.composite
def prediction_pairs(draw: st.DrawFn, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eps_uncond, eps_cond)`` of one shape and ``dtype``; sometimes equal, sometimes nearly so."""
    shape = draw(st.sampled_from([(1,), (7,), (2, 3), (1, 4, 4, 4), (2, 4, 2, 3)]))
    u = draw(float_tensors(dtype, shape))
    relation = draw(st.sampled_from(["independent", "equal", "close"]))
    if relation == "equal":
        return u, u.clone()
    if relation == "close":
        return u, (u.double() * (1 + 1e-2) + 1e-3).clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE).to(dtype)
    return u, draw(float_tensors(dtype, shape))
