"""Offline model zoo: real diffusers/transformers classes with seeded random weights.

A preset is built once, saved as a standard diffusers folder that doubles as an
offline Hugging Face cache snapshot for ``stable-diffusion-v1-5/stable-diffusion-v1-5``
and the other hub ids SD1.x lessons load (``sdverify.hub``), and reused from disk
afterwards (keyed by preset, seed, configs and library versions).  Its config and
tokenizer files are the published ones (``sdverify.published``), written as data: a
snapshot's bytes depend on neither the writing process's environment nor
``save_pretrained``'s version.
A user with real weights points ``SDVERIFY_WEIGHTS`` (or ``--sdverify-weights``) at a
local diffusers folder instead; nothing ever downloads.

Integrity: loaded components are memory-mapped from the folder, so an in-place write to a
weights file (by code under test) changes what every later load computes, and size+mtime
cannot see it.  Each zoo snapshot therefore carries a sha256 manifest written at build time;
``verify`` names the files that differ, ``repair`` rebuilds the snapshot in place, and
``load_components(..., private=True)`` gives models that no later write to the disk can reach.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import diffusers
import safetensors.torch
import torch
import transformers
from accelerate import init_empty_weights
from diffusers.models import AutoencoderKL, UNet2DConditionModel  # the real classes, not diffusers' dummies
from diffusers.schedulers.scheduling_pndm import PNDMScheduler
from filelock import FileLock
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from sdverify import hub, published
from sdverify.presets import Preset, get_preset
from sdverify.schedulers import Scheduler
from sdverify.tokenizer import tokenizer_dir

if TYPE_CHECKING:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

log = logging.getLogger(__name__)

HUB_ID = hub.PIPELINE_IDS[0]
REPO_FOLDER = hub.repo_folder(HUB_ID)
COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
# Each model's weights file, as the published repository names it; the fp16 variant adds ".fp16".
WEIGHT_FILES = {
    "text_encoder": "text_encoder/model.safetensors",
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
}
# The zoo serves no safety checker (random weights would black out images at random): these
# model_index.json entries are null, as diffusers writes for safety_checker=None.  Every
# other key and value is the published one.
_NOT_SERVED = ("feature_extractor", "safety_checker")
_DONE = ".sdverify.json"  # written last: a snapshot without it is incomplete
MANIFEST = ".sdverify-manifest.json"  # sha256 and size of every other file, written just before _DONE
_UNCHECKED = (MANIFEST, _DONE)  # bookkeeping no loader reads; deleting _DONE only makes materialize rebuild
_CHUNK = 1 << 20
# Per process and folder: what verify compares against, fixed by its first call (see verify).
_references: dict[Path, dict[str, Any]] = {}


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
    for model in (text_encoder, unet, vae):
        _representable_in_fp16(model)
    return text_encoder.eval(), unet.eval(), vae.eval()


@torch.no_grad()
def _representable_in_fp16(model: torch.nn.Module) -> None:
    """Round the seeded weights to float16's grid (kept float32): the ``fp16`` variant files
    then hold exactly the same values, so a lesson that loads ``variant="fp16"`` and is mapped
    to float32 on a CPU grader computes what the float32 reference computes."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point() and not tensor.is_meta:
            tensor.copy_(tensor.half().float())


def build_components(preset: str | Preset = "tiny", seed: int = 0) -> Components:
    """Build a preset in memory (float32, CPU) without touching the disk cache."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    text_encoder, unet, vae = _build_models(preset, seed)
    # A fresh tokenizer, not load_tokenizer()'s shared one: a fast tokenizer records the last
    # padding/truncation it was called with, and the caller owns these components.
    tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir()))
    return Components(tokenizer, text_encoder, unet, vae, PNDMScheduler.from_config(preset.scheduler))


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
            "build": 4,  # how a snapshot is written; 3: published files as data, fp16 variants; 4: fp16-exact weights
            "files": config_files(preset),
            "seed": seed,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            # safetensors writes the weights: their bytes follow its version
            "writers": [importlib.metadata.version("safetensors")],
            "tokenizer": hashlib.sha1((tokenizer_dir() / "vocab.json").read_bytes()).hexdigest(),
        },
        sort_keys=True,
        default=list,
    )
    return hashlib.sha1(material.encode()).hexdigest()


def config_files(preset: Preset) -> dict[str, str]:
    """Text of every config and tokenizer-settings file of the preset's snapshot, by relative path.

    The published files, with the preset's size values put in (``tiny``); for ``sd15`` the
    published content unchanged.
    """
    index = published.config(published.MODEL_INDEX) | {name: [None, None] for name in _NOT_SERVED}
    return {
        published.MODEL_INDEX: published.dumps(index),
        **{path: published.config_text(c, getattr(preset, c)) for c, path in published.CONFIG_FILES.items()},
        **{path: published.text(path) for path in published.TOKENIZER_SETTINGS},
    }


def fp16_name(path: str) -> str:
    """The fp16 variant's name of a weights file (``model.safetensors`` -> ``model.fp16.safetensors``)."""
    stem, _, ext = path.rpartition(".")
    return f"{stem}.{hub.FP16}.{ext}"


def write_snapshot(folder: Path, preset: Preset, components: Components) -> None:
    """Write the preset's files into ``folder``: published texts, the tokenizer fixtures, weights (float32 and fp16)."""
    for rel, text in config_files(preset).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(tokenizer_dir() / name, folder / "tokenizer" / name)
    for name, rel in WEIGHT_FILES.items():
        state = {k: v.detach().contiguous() for k, v in getattr(components, name).state_dict().items()}
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(state, folder / rel, metadata={"format": "pt"})
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        safetensors.torch.save_file(half, folder / fp16_name(rel), metadata={"format": "pt"})


def snapshot_dir(hub_cache: Path, revision: str) -> Path:
    return hub_cache / REPO_FOLDER / "snapshots" / revision


def materialize(
    preset: str | Preset = "tiny", seed: int = 0, hub_cache: Path | None = None, aliases: Iterable[str] = ()
) -> Path:
    """Ensure the preset is saved as an offline HF cache; return the snapshot folder.

    The snapshot is a complete diffusers folder (``model_index.json``, ``tokenizer/``,
    ``text_encoder/``, ``unet/``, ``vae/``, ``scheduler/``).  With ``HF_HUB_CACHE`` set to
    ``hub_cache`` and ``HF_HUB_OFFLINE=1``, ``from_pretrained(<id>, ...)`` resolves to it for
    every id of ``sdverify.hub`` and each of ``aliases`` (``ORG/NAME`` served as SD1.5; they
    stay in the cache).  Safe under pytest-xdist: builders take a file lock.  A snapshot from
    before manifests is rebuilt: nothing could vouch that its files are still as built.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    revision = cache_key(preset, seed)
    hub_cache = Path(hub_cache) if hub_cache else default_cache_root() / f"{preset.name}-seed{seed}-{revision[:12]}"
    snapshot = snapshot_dir(hub_cache, revision)
    aliases = tuple(aliases)
    if _is_complete(snapshot) and hub.is_served(snapshot, aliases):
        return snapshot
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(snapshot):
        if not _is_complete(snapshot):
            log.info("building zoo preset %s (seed %d) into %s", preset.name, seed, hub_cache)
            _build_in_place(snapshot, preset, seed)
        hub.serve(snapshot, aliases)
    return snapshot


def _is_complete(snapshot: Path) -> bool:
    return (snapshot / _DONE).is_file() and (snapshot / MANIFEST).is_file()


def _build_lock(snapshot: Path) -> FileLock:
    """The lock every builder of ``snapshot`` takes: its hub cache's for a zoo snapshot, else one beside it."""
    in_hub = snapshot.parent.name == "snapshots" and snapshot.parents[1].name == REPO_FOLDER
    return FileLock(str((hub_cache_of(snapshot) if in_hub else snapshot.parent) / ".build.lock"))


def _build_in_place(snapshot: Path, preset: Preset, seed: int) -> None:
    """Build into a temporary sibling folder, then swap it in by two renames (call under ``_build_lock``).

    Readers never see a half-written snapshot (between the renames, for a moment, none);
    processes that mapped the old files keep their old views: the new files are new inodes.
    """
    components = build_components(preset, seed)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=snapshot.parent))
    write_snapshot(tmp, preset, components)
    for path in [tmp, *tmp.rglob("*")]:  # readable by the sandbox's uid, where a root grader drops to one
        path.chmod(0o755 if path.is_dir() else 0o644)
    manifest = {"preset": preset.name, "seed": seed, "revision": cache_key(preset, seed), "files": _fingerprint(tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    (tmp / _DONE).write_text(json.dumps({k: manifest[k] for k in ("preset", "seed", "revision")}))
    old = snapshot.with_name(f".old-{tmp.name}")
    if snapshot.exists():
        snapshot.rename(old)
    tmp.rename(snapshot)
    shutil.rmtree(old, ignore_errors=True)  # the new snapshot is in place: a leftover must not fail the build
    _references[snapshot.resolve()] = manifest


def _fingerprint(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under ``folder`` but the bookkeeping files, by relative posix path.

    Follows linked folders (real weights may link them), but into each real folder once: a
    link loop would never end; the second way in is an entry of its own.
    """
    files: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            files[Path(root).relative_to(folder).as_posix()] = {"link": real}
            dirs.clear()
            continue
        seen.add(real)
        dirs.sort()  # a fixed walk order: which way into a linked folder comes first must not vary
        for name in names:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel not in _UNCHECKED:
                files[rel] = _digest(path)
    return files


def _digest(path: Path) -> dict[str, Any]:
    """sha256 and size of a file; no digest (so named by verify) for what cannot be read or would block (a FIFO)."""
    unreadable: dict[str, Any] = {"sha256": None, "size": None}
    if not path.is_file():
        return unreadable
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return unreadable
    return {"sha256": digest.hexdigest(), "size": size}


def _reference(folder: Path) -> dict[str, Any]:
    """What ``folder`` should hold: its manifest (zoo) or its contents now (real weights), fixed on first use.

    Kept per process so that code which rewrites a weights file and the manifest together
    is still caught by a process that verified before running it.
    """
    if folder not in _references:
        manifest = folder / MANIFEST
        _references[folder] = (
            json.loads(manifest.read_text()) if manifest.is_file() else {"files": _fingerprint(folder)}
        )
    return _references[folder]


def verify(folder: str | os.PathLike[str]) -> list[str]:
    """Relative paths under ``folder`` whose content differs from what it should hold: changed, missing or added.

    A zoo snapshot is compared with the sha256 manifest written when it was built.  A folder
    without one (real weights, ``SDVERIFY_WEIGHTS``) is fingerprinted on this process's first
    call and compared with that afterwards: call it once before running untrusted code.  Every
    call hashes every file (size and mtime can be forged): about 0.2 s for the tiny preset.
    """
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"no weights folder at {folder}")
    expected = _reference(folder)["files"]
    actual = _fingerprint(folder)
    return sorted(rel for rel in expected.keys() | actual.keys() if expected.get(rel) != actual.get(rel))


def verify_after_run(folder: str | os.PathLike[str]) -> tuple[list[str], Path, str | None]:
    """After a submission ran: the files it changed under ``folder`` (:func:`verify`), the folder
    to load from next, and why a change was not repaired (None: nothing changed, or it was).

    The one check of the grader's weights after student code, for every submission kind
    (the checker's ``sandbox.grader_files`` gate, the batch after a notebook): a zoo snapshot
    is rebuilt at once, so no later submission sees the change; real weights are only named.
    """
    changed = verify(folder)
    if not changed:
        return changed, Path(folder), None
    try:
        return changed, repair(folder), None
    except ValueError as exc:  # real weights: named, not rebuilt
        return changed, Path(folder), str(exc)


def repair(folder: str | os.PathLike[str]) -> Path:
    """Rebuild a zoo snapshot in place from its preset and seed; return the folder.

    Later loads see pristine weights; models already loaded without ``private=True`` keep
    views of the old files.  Real weights have no manifest and cannot be rebuilt here:
    ``verify`` names the change, restoring them is the owner's job.
    """
    folder = Path(folder).resolve()
    build = _reference(folder)
    if "preset" not in build:
        raise ValueError(f"{folder} was not built by the zoo (no {MANIFEST}); it cannot be repaired, only verified")
    preset = get_preset(build["preset"])
    if cache_key(preset, build["seed"]) != build["revision"]:
        raise ValueError(
            f"{folder} was built by another environment (revision {build['revision']}); "
            "a rebuild here would not reproduce it: materialize a fresh snapshot instead"
        )
    with _build_lock(folder):
        log.warning("rebuilding zoo snapshot %s", folder)
        _build_in_place(folder, preset, build["seed"])
    return folder


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


@functools.lru_cache(maxsize=8)
def hub_cache_for(folder: Path) -> Path:
    """An HF cache in which the hub id resolves to ``folder``: a zoo snapshot's own cache, or
    (real weights) a small cache made once per process whose snapshot links to the folder.

    Every kind of submission gets its offline environment from this one place."""
    if folder.parent.name == "snapshots" and folder.parents[1].name == REPO_FOLDER:
        return hub_cache_of(folder)
    cache = Path(tempfile.mkdtemp(prefix="sdverify-hub-"))
    cache.chmod(0o755)  # as the snapshot: the sandbox's uid reads it
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    snapshot = snapshot_dir(cache, "local")
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(folder.resolve(), target_is_directory=True)
    hub.serve(snapshot)
    return cache


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
    *,
    private: bool = False,
) -> Components:
    """Load the five components from a diffusers folder (zoo snapshot or real weights).

    ``from_pretrained`` memory-maps safetensors files: a later in-place write to a file
    changes the loaded parameters.  ``private=True`` copies every parameter and buffer into
    memory of its own, so no tensor shares memory with a file (the grader's reference).
    """
    folder = str(folder)
    with _quiet_bars():
        # transformers wraps PreTrainedModel.to with functools.wraps, which mypy misreads as unbound.
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype).to(device)  # type: ignore[arg-type]
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype).to(device)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype).to(device)
        if private:
            for model in (text_encoder, unet, vae):
                _own_memory(model)
        return Components(
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            text_encoder.eval(),
            unet.eval(),
            vae.eval(),
            PNDMScheduler.from_pretrained(folder, subfolder="scheduler"),
        )


@contextlib.contextmanager
def _quiet_bars() -> Iterator[None]:
    """Without transformers' "Loading weights"/"Writing model shards" bars: noise in a checker's or pytest's output."""
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _own_memory(model: torch.nn.Module) -> None:
    """Replace every parameter's and buffer's storage by a fresh copy (none of them then maps a file)."""
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                setattr(module, name, buffer.clone())
