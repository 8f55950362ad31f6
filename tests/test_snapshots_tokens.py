"""Token ids of a fixed prompt corpus, and the tokenizer files' digests, as syrupy snapshots.

Any change to the shipped tokenizer files or to the library's tokenization fails here,
prompt by prompt.  Review a change with ``pytest tests/test_snapshots_tokens.py``; accept
it, once understood, with ``--snapshot-update`` and commit ``tests/__snapshots__/``.
"""

from __future__ import annotations

import hashlib

import pytest

from sdverify.tokenizer import count_tokens, encode_batch, tokenizer_dir

CORPUS = [
    # the lesson's prompts
    "a cat sitting on a beach at sunset",
    "a photograph of an astronaut riding a horse",
    "a photo of a dog",
    "an oil painting of a lighthouse in a storm, highly detailed, trending on artstation",
    "portrait of a young woman, studio lighting, 85mm, bokeh",
    "a watercolor painting of a fox in a snowy forest",
    "a futuristic city at night, neon lights, cyberpunk, 8k",
    "a bowl of fruit on a wooden table, still life",
    # empty, whitespace, case and spacing
    "",
    " ",
    "\t\n  \r",
    "A CAT Sitting On A Beach",
    "a   cat    sitting",
    "cat",
    # punctuation and numbers
    "!!!???...",
    "a cat, a dog; a bird: (a fish)",
    "((masterpiece)), [best quality], {ultra detailed}",
    "photo_of_a_cat-on-a-mat",
    "3 cats and 12 dogs, 1024x768, 50% off",
    "email@example.com https://example.com/a?b=c",
    "it's a cat's hat, isn't it?",
    # unicode
    "一只猫坐在日落时的海滩上",
    "日本の城と桜",
    "고양이가 해변에 앉아 있다",
    "кошка сидит на пляже",
    "חתול יושב על החוף",
    "قطة تجلس على الشاطئ",
    "café naïve façade résumé",
    "e\u0301 a\u0300 o\u0302 (combining marks)",
    "🐱🌅🏖️",
    "👩\u200d👩\u200d👧 family 👨\u200d💻 coder",
    "🇯🇵🇫🇷 flags 👍🏽",
    "\x00\x0b\x1f control characters",
    "zero\u200bwidth\u200bspace",
    "&amp; &lt;b&gt; &#39;entities&#39; &nbsp;",
    "<b>bold</b> <i>html</i>",
    # special-token text (parsed as the special tokens: a documented finding)
    "a <|endoftext|> b",
    "<|startoftext|> hello",
    # around and past the 77-token limit
    " ".join(["word"] * 74),  # 74 text tokens: fits with room for one more
    " ".join(["word"] * 75),  # exactly 75: the last that fits
    " ".join(["word"] * 76),  # one too many: truncated, EOS kept at 76
    "a cat sitting on a beach at sunset, " * 12,
    "x" * 10_000,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]


def _render(tokenizer, prompt: str) -> dict[str, object]:
    batch = encode_batch(tokenizer, prompt)
    return {
        "ids": " ".join(str(i) for i in batch.input_ids[0].tolist()),
        "real_positions": count_tokens(batch.attention_mask),
    }


def test_corpus_has_at_least_40_distinct_prompts():
    assert len(set(CORPUS)) == len(CORPUS) >= 40


@pytest.mark.parametrize("index", range(len(CORPUS)), ids=lambda i: f"prompt{i:02d}")
def test_token_ids_snapshot(sd_tokenizer, index, snapshot):
    prompt = CORPUS[index]
    assert {"prompt": prompt[:200], **_render(sd_tokenizer, prompt)} == snapshot


def test_tokenizer_files_snapshot(snapshot):
    folder = tokenizer_dir()
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}
    assert digests == snapshot
