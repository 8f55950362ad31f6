"""The zoo's config and tokenizer files are SD1.5's published files, and a snapshot's bytes follow no environment."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest

from sdverify import published, zoo
from sdverify.presets import SD15, TINY
from sdverify.tokenizer import tokenizer_dir

# The values tiny changes (see presets.TINY); every other key and value is published.
TINY_SIZES = {
    "text_encoder": {"intermediate_size", "num_hidden_layers"},
    "unet": {
        "layers_per_block",
        "block_out_channels",
        "down_block_types",
        "up_block_types",
        "attention_head_dim",
        "norm_num_groups",
    },
    "vae": {"block_out_channels", "layers_per_block", "norm_num_groups"},
    "scheduler": set(),
}


def _published_files() -> set[str]:
    return {p.relative_to(published.ROOT).as_posix() for p in published.ROOT.rglob("*") if p.is_file()}


def test_sd15_files_are_the_published_ones_byte_for_byte():
    written = zoo.config_files(SD15)
    assert written.keys() == _published_files()
    for rel, text in written.items():
        if rel != published.MODEL_INDEX:
            assert text == published.text(rel), rel
    index, upstream = json.loads(written[published.MODEL_INDEX]), published.config(published.MODEL_INDEX)
    assert list(index) == list(upstream)
    assert {k for k in index if index[k] != upstream[k]} == {"feature_extractor", "safety_checker"}
    assert index["safety_checker"] == [None, None]  # no safety checker served: documented in zoo.py


def test_tiny_files_have_the_published_keys_and_differ_only_in_sizes():
    written = zoo.config_files(TINY)
    for component, rel in published.CONFIG_FILES.items():
        mine, upstream = json.loads(written[rel]), published.config(rel)
        assert list(mine) == list(upstream), rel  # same keys, same order
        assert {k for k in mine if mine[k] != upstream[k]} == TINY_SIZES[component], rel


def test_a_key_the_published_file_lacks_is_refused():
    with pytest.raises(ValueError, match=r"\['timestep_spacing'\] are not keys of the published"):
        published.config_text("scheduler", {"timestep_spacing": "leading"})


def test_the_snapshot_holds_exactly_the_published_files_and_weights():
    folder = zoo.weights_dir("tiny", 0)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    weights = {f for w in zoo.WEIGHT_FILES.values() for f in (w, zoo.fp16_name(w))}
    tokens = {"tokenizer/vocab.json", "tokenizer/merges.txt"}
    assert on_disk == zoo.config_files(TINY).keys() | weights | tokens | {zoo.MANIFEST, ".sdverify.json"}
    for rel, text in zoo.config_files(TINY).items():
        assert (folder / rel).read_text() == text, rel
    settings = json.loads((folder / "tokenizer/tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & settings.keys()


def test_provenance_names_every_file_and_its_sha256_or_why_not():
    entries = {k: v for k, v in published.provenance().items() if not k.startswith("_")}
    assert entries.keys() == _published_files() | {"tokenizer/vocab.json", "tokenizer/merges.txt"}
    for rel, entry in entries.items():
        assert entry["published"].startswith("huggingface.co/") and entry["read_from"], rel
        if entry["sha256"] is None:
            assert entry["why_no_sha256"], rel
        else:
            data = (tokenizer_dir() / Path(rel).name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"], rel


@pytest.mark.parametrize("offline", ["1", pytest.param(None, marks=pytest.mark.slow)])
def test_a_repair_under_any_environment_restores_the_same_bytes(offline, tmp_path, monkeypatch):
    """The shared snapshot was built under whatever environment came first; a repair under either matches it."""
    snapshot = Path(shutil.copytree(zoo.weights_dir("tiny", 0), tmp_path / "w"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False) if offline is None else monkeypatch.setenv(name, offline)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline is not None)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    zoo.repair(snapshot)
    assert zoo.verify(snapshot) == []


@pytest.mark.slow
def test_a_build_in_a_process_with_another_environment_writes_the_same_bytes(tmp_path):
    shared = json.loads((zoo.weights_dir("tiny", 0) / zoo.MANIFEST).read_text())
    offline = os.environ.get("HF_HUB_OFFLINE") != "1"  # the opposite of this process's
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} if offline else {}
    code = f"from sdverify import zoo; print(zoo.materialize('tiny', 0, hub_cache={str(tmp_path)!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    built = json.loads((Path(out.stdout.strip()) / zoo.MANIFEST).read_text())
    assert built == shared
