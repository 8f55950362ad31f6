"""Hub ids served offline: every SD1.x id lessons load, from one built snapshot, with fp16 revisions and variants."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub._snapshot_download
import huggingface_hub.file_download
import pytest
import safetensors.torch
import torch

from sdverify import hub, zoo

SERVED = (*hub.PIPELINE_IDS, hub.CLIP_ID)


@pytest.fixture(scope="module")
def hub_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.materialize("tiny", seed=0, hub_cache=tmp_path_factory.mktemp("hub"))


@pytest.fixture
def no_network_hint(monkeypatch: pytest.MonkeyPatch):
    """Undo ``explain_not_served`` after the test: it wraps a function of the hub client."""
    for module in (huggingface_hub.file_download, huggingface_hub._snapshot_download):
        monkeypatch.setattr(module, "repo_folder_name", huggingface_hub.file_download.repo_folder_name)


def _cached(hub_snapshot: Path, repo_id: str, filename: str, revision: str = "main") -> Path:
    found = huggingface_hub.try_to_load_from_cache(
        repo_id, filename, cache_dir=zoo.hub_cache_of(hub_snapshot), revision=revision
    )
    assert isinstance(found, str), (repo_id, filename, revision, found)
    return Path(found)


def test_every_id_and_revision_resolves_into_the_one_built_snapshot(hub_snapshot: Path):
    cache = zoo.hub_cache_of(hub_snapshot)
    assert hub.served(cache) == sorted(SERVED)
    built = hub_snapshot.resolve()
    for repo_id in hub.PIPELINE_IDS:
        for revision in hub.REVISIONS:
            path = _cached(hub_snapshot, repo_id, "unet/diffusion_pytorch_model.safetensors", revision)
            assert path.resolve().parent.parent == built, (repo_id, revision)
    for revision in hub.REVISIONS:
        for name in hub.CLIP_FILES:
            assert _cached(hub_snapshot, hub.CLIP_ID, name, revision).resolve().is_relative_to(built), name
    # One copy: every regular file of the cache but refs and the lock is the built snapshot's (the rest are links).
    files = [p for p in cache.rglob("*") if p.is_file() and not p.is_symlink()]
    outside = {p.relative_to(cache).as_posix() for p in files if not p.resolve().is_relative_to(built)}
    assert outside == {".build.lock"} | {f"{hub.repo_folder(i)}/refs/{r}" for i in SERVED for r in hub.REVISIONS}


def test_fp16_revision_has_half_weights_under_the_plain_names(hub_snapshot: Path):
    """...and losslessly: the zoo's weights lie on float16's grid, so a lesson loading the fp16
    files and mapped to float32 on a CPU grader holds the reference's exact weights."""
    plain = "unet/diffusion_pytorch_model.safetensors"
    full = safetensors.torch.load_file(_cached(hub_snapshot, "runwayml/stable-diffusion-v1-5", plain))
    for half in (
        safetensors.torch.load_file(_cached(hub_snapshot, "CompVis/stable-diffusion-v1-4", plain, "fp16")),
        safetensors.torch.load_file(_cached(hub_snapshot, hub.PIPELINE_IDS[0], zoo.fp16_name(plain))),
    ):
        assert half.keys() == full.keys()
        assert all(half[k].dtype == torch.float16 and torch.equal(half[k].float(), full[k]) for k in full)


def test_lesson_idioms_load_the_zoo_by_hub_id(hub_snapshot: Path):
    """Offline and by id: CLIP's repo shape, a CompVis id, the fp16 variant in float16."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    where = {"cache_dir": zoo.hub_cache_of(hub_snapshot), "local_files_only": True}
    built = zoo.load_components(hub_snapshot)
    tokenizer = CLIPTokenizer.from_pretrained(hub.CLIP_ID, **where)
    assert tokenizer("a dog").input_ids == built.tokenizer("a dog").input_ids
    text_encoder = CLIPTextModel.from_pretrained(hub.CLIP_ID, **where)
    assert all(
        torch.equal(a, b) for a, b in zip(text_encoder.state_dict().values(), built.text_encoder.state_dict().values())
    )
    unet = UNet2DConditionModel.from_pretrained(
        "CompVis/stable-diffusion-v1-4", subfolder="unet", variant="fp16", torch_dtype=torch.float16, **where
    )
    assert unet.dtype == torch.float16
    assert all(torch.equal(a, b.half()) for a, b in zip(unet.state_dict().values(), built.unet.state_dict().values()))


def test_an_alias_is_served_and_kept(hub_snapshot: Path):
    cache = zoo.hub_cache_of(hub_snapshot)
    assert zoo.materialize("tiny", seed=0, hub_cache=cache, aliases=["my-course/sd15-copy"]) == hub_snapshot
    assert zoo.materialize("tiny", seed=0, hub_cache=cache) == hub_snapshot
    assert "my-course/sd15-copy" in hub.served(cache)
    assert _cached(hub_snapshot, "my-course/sd15-copy", "scheduler/scheduler_config.json", "fp16").is_file()


@pytest.mark.parametrize("bad", ["no-slash", "a/b/c", "../x", "/x"])
def test_an_alias_must_be_a_hub_id(bad: str):
    with pytest.raises(ValueError, match="not a hub id"):
        hub.check_id(bad)


def test_an_id_not_served_names_the_served_ids_and_how_to_add_it(hub_snapshot: Path, no_network_hint: None):
    cache = zoo.hub_cache_of(hub_snapshot)
    hub.explain_not_served(cache)
    assert _cached(hub_snapshot, "runwayml/stable-diffusion-v1-5", "unet/config.json").is_file()  # served: untouched
    with pytest.raises(hub.NotServedError) as caught:
        huggingface_hub.try_to_load_from_cache("stabilityai/stable-diffusion-2-1", "unet/config.json", cache_dir=cache)
    message = str(caught.value)
    assert "'stabilityai/stable-diffusion-2-1' is not served" in message
    assert all(repo_id in message for repo_id in SERVED)
    assert "sdverify zoo install --alias stabilityai/stable-diffusion-2-1" in message
    assert isinstance(caught.value, OSError)  # what lesson code that catches the hub client's errors expects


@pytest.mark.slow
def test_lesson_in_a_fresh_interpreter_loads_served_ids_and_is_told_what_is_not(hub_snapshot: Path, tmp_path: Path):
    """The kernel's hook (explain_not_served_here), then a lesson's own calls, with only the exported environment."""
    code = (
        "import torch\n"
        "from sdverify.hub import explain_not_served_here\n"
        "explain_not_served_here()\n"
        "from diffusers import StableDiffusionPipeline, LMSDiscreteScheduler, DDIMScheduler\n"
        "from transformers import CLIPTextModel, CLIPTokenizer\n"
        "tok = CLIPTokenizer.from_pretrained('openai/clip-vit-large-patch14')\n"
        "te = CLIPTextModel.from_pretrained('openai/clip-vit-large-patch14', torch_dtype=torch.float16)\n"
        "pipe = StableDiffusionPipeline.from_pretrained('CompVis/stable-diffusion-v1-4', revision='fp16',"
        " torch_dtype=torch.float16)\n"
        "lms = LMSDiscreteScheduler.from_pretrained('runwayml/stable-diffusion-v1-5', subfolder='scheduler')\n"
        "print('loaded', te.dtype, pipe.unet.dtype, type(pipe.scheduler).__name__)\n"
        "for load in (\n"
        "    lambda: DDIMScheduler.from_pretrained('stabilityai/stable-diffusion-2-1', subfolder='scheduler'),\n"
        "    lambda: CLIPTextModel.from_pretrained('openai/clip-vit-base-patch32'),\n"
        "):\n"
        "    try:\n"
        "        load()\n"
        "    except Exception as exc:\n"
        "        print('error:', str(exc).split('. ')[0])\n"
    )
    env = {**os.environ, **zoo.offline_env(zoo.hub_cache_of(hub_snapshot)), "HF_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    not_served = "is not served by the grader's offline model zoo (nothing is downloaded)"
    assert out.stdout.splitlines() == [
        "loaded torch.float16 torch.float16 PNDMScheduler",
        f"error: 'stabilityai/stable-diffusion-2-1' {not_served}",
        f"error: 'openai/clip-vit-base-patch32' {not_served}",
    ]
