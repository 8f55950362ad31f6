"""Offline model zoo: disk cache, hub-id resolution offline, identical weights after a round trip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from sdverify import contract as C
from sdverify import reference, zoo
from sdverify.schedulers import make_scheduler


@pytest.fixture(scope="module")
def hub_snapshot(tmp_path_factory):
    return zoo.materialize("tiny", seed=0, hub_cache=tmp_path_factory.mktemp("hub"))


def test_snapshot_is_a_standard_diffusers_folder(hub_snapshot):
    for name in ("model_index.json", *zoo.COMPONENTS):
        assert (hub_snapshot / name).exists(), name
    refs = zoo.hub_cache_of(hub_snapshot) / zoo.REPO_FOLDER / "refs" / "main"
    assert refs.read_text() == hub_snapshot.name and len(hub_snapshot.name) == 40
    assert (hub_snapshot / zoo.MANIFEST).is_file() and zoo.verify(hub_snapshot) == []


def test_materialize_reuses_the_built_snapshot(hub_snapshot):
    stamp = (hub_snapshot / "unet").stat().st_mtime_ns
    assert zoo.materialize("tiny", seed=0, hub_cache=zoo.hub_cache_of(hub_snapshot)) == hub_snapshot
    assert (hub_snapshot / "unet").stat().st_mtime_ns == stamp


def test_cache_key_changes_with_seed_and_preset():
    from sdverify.presets import get_preset

    keys = {zoo.cache_key(get_preset(p), s) for p in ("tiny", "sd15") for s in (0, 1)}
    assert len(keys) == 4


def test_round_trip_gives_identical_outputs(hub_snapshot):
    """Weights saved and reloaded by hub id (offline, local files only) reproduce the in-memory build."""
    from diffusers import UNet2DConditionModel

    built = zoo.build_components("tiny", seed=0)
    unet = UNet2DConditionModel.from_pretrained(
        zoo.HUB_ID, subfolder="unet", cache_dir=zoo.hub_cache_of(hub_snapshot), local_files_only=True
    )
    loaded = zoo.load_components(hub_snapshot)
    for a, b in (
        (built.unet, unet),
        (built.unet, loaded.unet),
        (built.vae, loaded.vae),
        (built.text_encoder, loaded.text_encoder),
    ):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    outputs = []
    for c in (built, loaded):
        g = torch.Generator().manual_seed(3)
        outputs.append(
            reference.generate(c.tokenizer, c.text_encoder, c.unet, c.vae, make_scheduler("ddim"), "a dog", 4, 7.5, g)
        )
    assert torch.equal(*outputs)


@pytest.mark.slow
def test_unmodified_lesson_code_loads_by_hub_id_offline(hub_snapshot, tmp_path):
    """The lesson's own calls, in a fresh interpreter, with only the exported environment."""
    code = (
        "from diffusers import UNet2DConditionModel, AutoencoderKL, StableDiffusionPipeline, DDPMScheduler\n"
        "from transformers import CLIPTokenizer, CLIPTextModel\n"
        "m = 'stable-diffusion-v1-5/stable-diffusion-v1-5'\n"
        "tok = CLIPTokenizer.from_pretrained(m, subfolder='tokenizer')\n"
        "te = CLIPTextModel.from_pretrained(m, subfolder='text_encoder')\n"
        "u = UNet2DConditionModel.from_pretrained(m, subfolder='unet')\n"
        "v = AutoencoderKL.from_pretrained(m, subfolder='vae')\n"
        "s = DDPMScheduler.from_pretrained(m, subfolder='scheduler')\n"
        "p = StableDiffusionPipeline.from_pretrained(m)\n"
        "print(len(tok), te.config.hidden_size, u.config.sample_size, v.config.scaling_factor,"
        " type(p.scheduler).__name__)\n"
    )
    env = {**os.environ, **zoo.offline_env(zoo.hub_cache_of(hub_snapshot)), "HF_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [
        str(C.VOCAB_SIZE),
        str(C.EMBED_DIM),
        str(C.LATENT_SIZE),
        str(C.VAE_SCALING_FACTOR),
        "PNDMScheduler",
    ]


def test_real_weights_folder_is_validated(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"lacks diffusers subfolders \['tokenizer', 'text_encoder', 'vae', 'scheduler'\]"
    ):
        zoo.weights_dir("tiny", weights=tmp_path)


def test_real_weights_folder_is_used_as_given(hub_snapshot, monkeypatch):
    monkeypatch.setenv("SDVERIFY_WEIGHTS", str(hub_snapshot))
    assert zoo.weights_dir("sd15") == hub_snapshot


def test_building_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    zoo.build_components("tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)
