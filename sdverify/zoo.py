"""Offline model zoo: real diffusers/transformers classes with seeded random weights.

A preset is built once, saved as a standard diffusers folder that doubles as an
offline Hugging Face cache snapshot for ``stable-diffusion-v1-5/stable-diffusion-v1-5``,
and reused from disk afterwards (keyed by preset, seed, configs and library versions).
A user with real weights points ``SDVERIFY_WEIGHTS`` (or ``--sdverify-weights``) at a
local diffusers folder instead; nothing ever downloads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import diffusers
import torch
import transformers
from accelerate import init_empty_weights
from diffusers.models import AutoencoderKL, UNet2DConditionModel  # the real classes, not diffusers' dummies
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from filelock import FileLock
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdverify.presets import Preset, get_preset
from sdverify.schedulers import Scheduler
from sdverify.tokenizer import load_tokenizer, tokenizer_dir

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

log = logging.getLogger(__name__)

HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
REPO_FOLDER = "models--" + HUB_ID.replace("/", "--")
COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
_DONE = ".sdverify.json"  # written last: a snapshot without it is incomplete


@dataclass
class Components:
    """The five SD1.5 components, as the reference API takes them."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: Scheduler

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> Components:
        models: tuple[torch.nn.Module, ...] = (self.text_encoder, self.unet, self.vae)
        for model in models:
            model.to(device=device, dtype=dtype)
        return self

    def param_counts(self) -> dict[str, int]:
        return {name: count_params(getattr(self, name)) for name in ("text_encoder", "vae", "unet")}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_cache_root() -> Path:
    """``$SDVERIFY_CACHE`` or ``~/.cache/sdverify``."""
    return Path(os.environ.get("SDVERIFY_CACHE") or Path.home() / ".cache" / "sdverify")


def _build_models(preset: Preset, seed: int) -> tuple[CLIPTextModel, UNet2DConditionModel, AutoencoderKL]:
    # fork_rng: building the zoo must not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**preset.text_encoder))
        torch.manual_seed(seed + 1)
        unet = UNet2DConditionModel(**preset.unet)
        torch.manual_seed(seed + 2)
        vae = AutoencoderKL(**preset.vae)
    return text_encoder.eval(), unet.eval(), vae.eval()


def build_components(preset: str | Preset = "tiny", seed: int = 0) -> Components:
    """Build a preset in memory (float32, CPU) without touching the disk cache."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    text_encoder, unet, vae = _build_models(preset, seed)
    return Components(load_tokenizer(), text_encoder, unet, vae, PNDMScheduler.from_config(preset.scheduler))


def meta_components(preset: str | Preset = "sd15") -> tuple[CLIPTextModel, UNet2DConditionModel, AutoencoderKL]:
    """The preset's models on the meta device: free to build, for counting params and FLOPs."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    with init_empty_weights():
        return _build_models(preset, 0)


def cache_key(preset: Preset, seed: int) -> str:
    """Key of a built preset: anything that changes the saved weights changes it."""
    material = json.dumps(
        {
            "preset": preset.name,
            "configs": [preset.text_encoder, preset.unet, preset.vae, preset.scheduler],
            "seed": seed,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "tokenizer": hashlib.sha1((tokenizer_dir() / "vocab.json").read_bytes()).hexdigest(),
        },
        sort_keys=True,
        default=list,
    )
    return hashlib.sha1(material.encode()).hexdigest()


def snapshot_dir(hub_cache: Path, revision: str) -> Path:
    return hub_cache / REPO_FOLDER / "snapshots" / revision


def materialize(preset: str | Preset = "tiny", seed: int = 0, hub_cache: Path | None = None) -> Path:
    """Ensure the preset is saved as an offline HF cache; return the snapshot folder.

    The snapshot is a complete diffusers folder (``model_index.json``, ``tokenizer/``,
    ``text_encoder/``, ``unet/``, ``vae/``, ``scheduler/``).  With ``HF_HUB_CACHE`` set to
    ``hub_cache`` and ``HF_HUB_OFFLINE=1``, ``from_pretrained(HUB_ID, subfolder=...)``
    resolves to it.  Safe under pytest-xdist: builders take a file lock.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    revision = cache_key(preset, seed)
    hub_cache = Path(hub_cache) if hub_cache else default_cache_root() / f"{preset.name}-seed{seed}-{revision[:12]}"
    snapshot = snapshot_dir(hub_cache, revision)
    if (snapshot / _DONE).is_file():
        return snapshot
    hub_cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(hub_cache / ".build.lock")):
        if (snapshot / _DONE).is_file():
            return snapshot
        log.info("building zoo preset %s (seed %d) into %s", preset.name, seed, hub_cache)
        components = build_components(preset, seed)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=hub_cache))
        pipeline(components, components.scheduler).save_pretrained(tmp)
        (tmp / _DONE).write_text(json.dumps({"preset": preset.name, "seed": seed, "revision": revision}))
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        if snapshot.exists():
            shutil.rmtree(snapshot)
        tmp.rename(snapshot)
        refs = hub_cache / REPO_FOLDER / "refs"
        refs.mkdir(parents=True, exist_ok=True)
        (refs / "main").write_text(revision)
    return snapshot


def pipeline(c: Components, scheduler: Scheduler) -> StableDiffusionPipeline:
    """diffusers' StableDiffusionPipeline over ``c`` with ``scheduler``, without the safety checker."""
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (  # heavy: imported when needed
        StableDiffusionPipeline,
    )

    # diffusers annotates these parameters narrower than it accepts (any scheduler, None).
    return StableDiffusionPipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=scheduler,  # type: ignore[arg-type]
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
        requires_safety_checker=False,
    )


def hub_cache_of(snapshot: Path) -> Path:
    """The HF_HUB_CACHE folder that holds a materialised snapshot (``<cache>/models--X/snapshots/<rev>``)."""
    return snapshot.parents[2]


def offline_env(hub_cache: Path) -> dict[str, str]:
    """Environment under which unmodified lesson code loads the zoo by hub id."""
    return {"HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def weights_dir(preset: str = "tiny", seed: int = 0, weights: str | os.PathLike[str] | None = None) -> Path:
    """Where to load from: real weights when given (argument or ``$SDVERIFY_WEIGHTS``), else the zoo."""
    weights = weights or os.environ.get("SDVERIFY_WEIGHTS")
    if weights:
        path = Path(weights).expanduser()
        missing = [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"weights folder {path} lacks diffusers subfolders {missing}; expected {list(COMPONENTS)}"
            )
        return path
    return materialize(preset, seed)


def load_components(
    folder: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Components:
    """Load the five components from a diffusers folder (zoo snapshot or real weights).

    Quietly: transformers draws a "Loading weights" bar, noise in a checker's or a pytest
    run's output; its setting is restored afterwards.
    """
    folder = str(folder)
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        return Components(
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            # transformers wraps PreTrainedModel.to with functools.wraps, which mypy misreads as unbound.
            CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype).to(device).eval(),  # type: ignore[arg-type]
            UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype).to(device).eval(),
            AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype).to(device).eval(),
            PNDMScheduler.from_pretrained(folder, subfolder="scheduler"),
        )
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
