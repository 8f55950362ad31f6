"""The small files of the SD1.5 repository as published (configs, tokenizer settings), kept as data.

The zoo writes these, not ``save_config()``/``save_pretrained()`` output: those add keys the
published files lack (``timestep_spacing``, ``prediction_type``, ``is_local``...), which change
what a scheduler loaded from the folder does and make a snapshot's bytes follow the library
version and the writing process's environment.  Where each file was read, and its sha256
where the published bytes are known: ``provenance.json`` beside this module.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent / "sd15"
PROVENANCE = Path(__file__).parent / "provenance.json"

# component -> its config file in the repository
CONFIG_FILES: dict[str, str] = {
    "text_encoder": "text_encoder/config.json",
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
MODEL_INDEX = "model_index.json"
# vocab.json and merges.txt are the kit's tokenizer fixtures (sdverify.tokenizer.tokenizer_dir)
TOKENIZER_SETTINGS = ("tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json")
# What transformers records about itself in a config: not arguments of the model's class.
_LIBRARY_KEYS = frozenset({"architectures", "model_type", "torch_dtype", "transformers_version"})


@cache
def text(relpath: str) -> str:
    """A published file's text, as stored."""
    return (ROOT / relpath).read_text()


def config(relpath: str) -> dict[str, Any]:
    """A published JSON file, as a fresh dict in the file's key order."""
    loaded: dict[str, Any] = json.loads(text(relpath))
    return loaded


def model_kwargs(component: str) -> dict[str, Any]:
    """The arguments the published config gives ``component``'s class (no ``_``-keys, no library records)."""
    published = config(CONFIG_FILES[component])
    return {k: v for k, v in published.items() if not k.startswith("_") and k not in _LIBRARY_KEYS}


def dumps(content: dict[str, Any]) -> str:
    """JSON in the published files' layout (two-space indent, file key order, final newline)."""
    return json.dumps(content, indent=2) + "\n"


def config_text(component: str, kwargs: dict[str, Any]) -> str:
    """``component``'s published config file with the values of ``kwargs`` put in: same keys, same order.

    A key the published file lacks is refused: the zoo's files have the published key set.
    """
    content = config(CONFIG_FILES[component])
    extra = sorted(kwargs.keys() - content.keys())
    if extra:
        raise ValueError(f"{component}: {extra} are not keys of the published {CONFIG_FILES[component]}")
    content.update(json.loads(json.dumps(kwargs)))  # tuples as the lists JSON reads back
    return dumps(content)


def provenance() -> dict[str, Any]:
    """Where each file was read and, where known, the published sha256 (``provenance.json``)."""
    loaded: dict[str, Any] = json.loads(PROVENANCE.read_text())
    return loaded
