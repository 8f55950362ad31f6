"""Derive the SD1.5 CLIP tokenizer files from OpenAI's BPE merges data.

Provenance: ``open_clip/bpe_simple_vocab_16e6.txt.gz`` inside the
``open-clip-torch`` wheel is OpenAI's CLIP BPE data (first line a version
header, then merges).  The vocabulary follows ``SimpleTokenizer`` in OpenAI's
``clip/simple_tokenizer.py``: 256 byte symbols, the same with ``</w>``, the
first 48,894 merges joined, then ``<|startoftext|>`` and ``<|endoftext|>``
(49,408 ids).  That is exactly the vocab of ``openai/clip-vit-large-patch14``
which SD1.5 ships as ``tokenizer/``.

Usage (never needed at run time; the output is committed under fixtures/)::

    pip download --no-deps -d /tmp/oc open-clip-torch
    python scripts/derive_tokenizer.py /tmp/oc/open_clip_torch-*.whl fixtures/tokenizer
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

MERGES_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # SimpleTokenizer keeps merges[1 : 49152-256-2+1]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def derive(wheel: Path, out: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(MERGES_MEMBER)).decode("utf-8")
    merges = [tuple(line.split()) for line in text.split("\n")[1 : N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    special = {"content": "<|endoftext|>", "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    (out / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "bos_token": {**special, "content": "<|startoftext|>"},
                "eos_token": special,
                "pad_token": special,
                "unk_token": special,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "do_lower_case": True,
                "errors": "replace",
                "add_prefix_space": False,
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {len(vocab)} ids, {len(merges)} merges to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    derive(Path(sys.argv[1]), Path(sys.argv[2]))
