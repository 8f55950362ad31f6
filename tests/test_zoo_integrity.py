"""Zoo integrity: code under test can write the weights files the grader memory-maps.

Every test works on a private copy of the tiny snapshot (or a temporary hub cache), never the shared one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from sdverify import reference, zoo
from sdverify.schedulers import make_scheduler

UNET_FILE = "unet/diffusion_pytorch_model.safetensors"
WEIGHT_FILES = (UNET_FILE, "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors")


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return Path(shutil.copytree(zoo.weights_dir("tiny", 0), tmp_path / "w"))


def _in_place(path: Path, data: bytes) -> None:
    """Overwrite ``path`` in place (same inode, same size) and put its mtime back, as a careful attacker would."""
    stat = path.stat()
    assert len(data) == stat.st_size
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    _in_place(path, bytes(data))


def _shift_weights(path: Path) -> None:
    """Add 1 to every tensor of a safetensors file, rewritten in place with the same header."""
    with safetensors.safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = {name: t + 1 for name, t in safetensors.torch.load_file(path).items()}
    _in_place(path, safetensors.torch.save(tensors, metadata))


def _generate(c: zoo.Components) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return reference.generate(c.tokenizer, c.text_encoder, c.unet, c.vae, make_scheduler("ddim"), "a dog", 2, 7.5, g)


def _state(c: zoo.Components) -> dict[str, torch.Tensor]:
    return {
        f"{m}.{k}": v.clone() for m in ("text_encoder", "unet", "vae") for k, v in getattr(c, m).state_dict().items()
    }


def test_manifest_lists_every_file_with_sha256_and_size():
    folder = zoo.weights_dir("tiny", 0)
    manifest = json.loads((folder / zoo.MANIFEST).read_text())
    assert (manifest["preset"], manifest["seed"]) == ("tiny", 0)
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {zoo.MANIFEST, ".sdverify.json"}
    entry = manifest["files"][UNET_FILE]
    data = (folder / UNET_FILE).read_bytes()
    assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def test_verify_clean_snapshot_is_empty_and_fast(snapshot: Path):
    zoo.verify(snapshot)  # first call reads the manifest
    start = time.perf_counter()
    assert zoo.verify(snapshot) == []
    size = sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file()) / 2**20
    print(f"\nverify(tiny snapshot, {size:.0f} MiB): {time.perf_counter() - start:.3f} s")


def test_in_place_edit_with_mtime_restored_is_named(snapshot: Path):
    _flip_byte(snapshot / UNET_FILE)
    assert zoo.verify(snapshot) == [UNET_FILE]


def test_added_and_deleted_files_are_named(snapshot: Path):
    (snapshot / "unet" / "extra.bin").write_bytes(b"x")
    (snapshot / "vae" / "config.json").unlink()
    assert zoo.verify(snapshot) == ["unet/extra.bin", "vae/config.json"]


def test_a_fifo_and_a_link_loop_are_named_without_blocking(snapshot: Path):
    os.mkfifo(snapshot / "unet" / "pipe")
    (snapshot / "vae" / "loop").symlink_to("..")
    assert zoo.verify(snapshot) == ["unet/pipe", "vae/loop"]


def test_rewriting_the_manifest_too_does_not_hide_an_edit(snapshot: Path):
    """The reference is fixed by the process's first verify, before any untrusted code ran."""
    assert zoo.verify(snapshot) == []
    _flip_byte(snapshot / UNET_FILE)
    manifest = json.loads((snapshot / zoo.MANIFEST).read_text())
    manifest["files"][UNET_FILE]["sha256"] = hashlib.sha256((snapshot / UNET_FILE).read_bytes()).hexdigest()
    (snapshot / zoo.MANIFEST).write_text(json.dumps(manifest))
    assert zoo.verify(snapshot) == [UNET_FILE]


def test_repair_restores_the_built_weights(snapshot: Path):
    original = json.loads((snapshot / zoo.MANIFEST).read_text())["files"]
    _flip_byte(snapshot / UNET_FILE)
    (snapshot / "vae" / "config.json").unlink()
    (snapshot / "extra.txt").write_text("x")
    assert zoo.repair(snapshot) == snapshot.resolve()
    assert zoo.verify(snapshot) == []
    assert json.loads((snapshot / zoo.MANIFEST).read_text())["files"] == original
    shared = zoo.weights_dir("tiny", 0)
    for name in WEIGHT_FILES:
        assert (snapshot / name).read_bytes() == (shared / name).read_bytes(), name
    assert sorted(p.name for p in snapshot.parent.iterdir() if p.is_dir()) == ["w"]  # no build leftovers


def test_materialize_rebuilds_a_snapshot_from_before_manifests(tmp_path: Path):
    built = zoo.materialize("tiny", seed=0, hub_cache=tmp_path / "hub")
    assert zoo.verify(built) == []
    (built / zoo.MANIFEST).unlink()
    _flip_byte(built / UNET_FILE)  # damage it could carry: without a manifest it cannot be known clean
    assert zoo.materialize("tiny", seed=0, hub_cache=tmp_path / "hub") == built
    assert (built / zoo.MANIFEST).is_file()
    assert (built / UNET_FILE).read_bytes() == (zoo.weights_dir("tiny", 0) / UNET_FILE).read_bytes()


def test_real_weights_are_fingerprinted_on_first_verify_and_cannot_be_repaired(snapshot: Path):
    (snapshot / zoo.MANIFEST).unlink()
    assert zoo.verify(snapshot) == []
    _flip_byte(snapshot / UNET_FILE)
    assert zoo.verify(snapshot) == [UNET_FILE]
    with pytest.raises(ValueError, match="not built by the zoo"):
        zoo.repair(snapshot)


def test_private_load_is_immune_to_in_place_edits(snapshot: Path):
    private = zoo.load_components(snapshot, private=True)
    shared = zoo.load_components(snapshot)
    state, image = _state(private), _generate(private)
    for name in WEIGHT_FILES:
        _shift_weights(snapshot / name)
    assert zoo.verify(snapshot) == sorted(WEIGHT_FILES)
    after = _state(private)
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert torch.equal(_generate(private), image)
    # The threat itself: a mapped (default) load and a fresh load both see the edit.
    assert not torch.equal(_state(shared)["unet.conv_in.weight"], state["unet.conv_in.weight"])
    fresh = zoo.load_components(snapshot)
    assert torch.equal(_state(fresh)["unet.conv_in.weight"], state["unet.conv_in.weight"] + 1)
    assert not torch.equal(_generate(fresh), image)
