"""The hub ids SD1.x lessons load, served offline from one built snapshot.

A Hugging Face cache names a snapshot per repository and revision
(``models--ORG--NAME/refs/<revision>`` holds a folder name under ``snapshots/``).  Every
served id gets refs to the same two names, and its snapshots are links to the one built
folder: each id serves the same bytes, and the weights exist once.

- Pipeline ids (``PIPELINE_IDS`` and aliases) serve the SD1.5 folder.  The CompVis v1-1..v1-4
  repositories have SD1.5's architecture and file layout; they are served with SD1.5's files.
- ``openai/clip-vit-large-patch14`` serves that repository's shape: tokenizer files and the
  text encoder's config and weights at the root (``CLIPTokenizer``/``CLIPTextModel`` load it;
  ``CLIPModel`` does not: there is no vision tower).
- Revision ``main`` holds float32 weights plus ``.fp16`` variant files; revision ``fp16``
  holds float16 weights under the plain names, as that branch of the published repositories does.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from sdverify.errors import UsageError

PIPELINE_IDS = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-v1-5",
    "CompVis/stable-diffusion-v1-1",
    "CompVis/stable-diffusion-v1-2",
    "CompVis/stable-diffusion-v1-3",
    "CompVis/stable-diffusion-v1-4",
)
CLIP_ID = "openai/clip-vit-large-patch14"
# openai/clip-vit-large-patch14's root files -> the pipeline file each is served from.
CLIP_FILES = {
    "config.json": "text_encoder/config.json",
    "model.safetensors": "text_encoder/model.safetensors",
    "model.fp16.safetensors": "text_encoder/model.fp16.safetensors",
    "vocab.json": "tokenizer/vocab.json",
    "merges.txt": "tokenizer/merges.txt",
    "tokenizer_config.json": "tokenizer/tokenizer_config.json",
    "special_tokens_map.json": "tokenizer/special_tokens_map.json",
}
FP16 = "fp16"  # the variant name and the branch name
REVISIONS = ("main", FP16)
_BOOKKEEPING = ".sdverify"  # the zoo's manifest and completion marker: no loader reads them


def repo_folder(repo_id: str) -> str:
    """The cache folder of a model repository (``models--ORG--NAME``)."""
    return "models--" + repo_id.replace("/", "--")


def check_id(repo_id: str) -> str:
    """``repo_id`` if it has the hub's ``ORG/NAME`` shape; a UsageError naming it otherwise."""
    org, _, name = repo_id.partition("/")
    if not (org and name) or "/" in name or any(part in {".", ".."} for part in (org, name)):
        raise UsageError(f"not a hub id: {repo_id!r} (expected ORG/NAME)")
    return repo_id


def fp16_revision(main: str) -> str:
    """The snapshot name of the ``fp16`` revision that goes with the ``main`` snapshot ``main``."""
    return hashlib.sha1(f"{main}:{FP16}".encode()).hexdigest()


def serve(snapshot: Path, aliases: Iterable[str] = ()) -> None:
    """Lay out every served id (and ``aliases``, as pipeline ids) in the cache that holds ``snapshot``.

    ``snapshot`` is ``<cache>/models--X/snapshots/<name>``: a built folder or a link to real
    weights.  Idempotent: what exists is kept.  Call under the snapshot's build lock.
    """
    cache, main = snapshot.parents[2], snapshot.name
    fp16 = snapshot.with_name(fp16_revision(main))
    _fp16_view(snapshot, fp16)
    for repo_id in dict.fromkeys([*PIPELINE_IDS, *map(check_id, aliases)]):
        repo = cache / repo_folder(repo_id)
        for built in (snapshot, fp16):
            if repo / "snapshots" / built.name != built:
                _link(repo / "snapshots" / built.name, built)
        _refs(repo, main, fp16.name)
    clip = cache / repo_folder(CLIP_ID)
    for built in (snapshot, fp16):
        for name, source in CLIP_FILES.items():
            if (built / source).exists():
                _link(clip / "snapshots" / built.name / name, built / source)
    _refs(clip, main, fp16.name)


def is_served(snapshot: Path, aliases: Iterable[str] = ()) -> bool:
    """Whether every id ``serve`` lays out for ``snapshot`` has its refs."""
    cache = snapshot.parents[2]
    ids = (*PIPELINE_IDS, CLIP_ID, *aliases)
    return all((cache / repo_folder(i) / "refs" / FP16).is_file() for i in ids)


def served(cache: Path) -> list[str]:
    """The ids a cache serves: every repository folder with a ``main`` ref."""
    return sorted(
        p.name.removeprefix("models--").replace("--", "/", 1)
        for p in Path(cache).glob("models--*")
        if (p / "refs" / "main").is_file()
    )


def not_served_message(repo_id: str, cache: Path) -> str:
    """What a lesson that loads an id the grader does not serve is told."""
    return (
        f"{repo_id!r} is not served by the grader's offline model zoo (nothing is downloaded). "
        f"Served ids: {', '.join(served(cache))}; revisions {' and '.join(REVISIONS)}, variant {FP16}. "
        f"To serve it with the SD1.5 files, add it as an alias: `sdverify zoo install --alias {repo_id}` "
        "(or zoo.materialize(..., aliases=[...]))."
    )


def _fp16_view(snapshot: Path, view: Path) -> None:
    """Links to every file of ``snapshot``; a plain weight name links to its ``.fp16`` variant where there is one."""
    files = {
        Path(root, name).relative_to(snapshot).as_posix()
        for root, _, names in os.walk(snapshot, followlinks=True)
        for name in names
        if not name.startswith(_BOOKKEEPING)
    }
    for rel in sorted(files):
        stem, dot, ext = rel.rpartition(".")
        variant = f"{stem}.{FP16}.{ext}"
        _link(view / rel, snapshot / (variant if dot and variant in files else rel))


def _link(link: Path, target: Path) -> None:
    """A relative symlink ``link`` -> ``target`` (kept if ``link`` exists), so a moved cache still works."""
    if link.is_symlink() or link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link, target_is_directory=target.is_dir())


def _refs(repo: Path, main: str, fp16: str) -> None:
    for revision, name in (("main", main), (FP16, fp16)):
        ref = repo / "refs" / revision
        if not ref.is_file() or ref.read_text() != name:
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(name)


class NotServed(Exception):
    """Loading an id the grader's cache does not serve."""


class NotServedError(NotServed, OSError):
    """An OSError, as the hub client's own errors are (lesson code may catch those)."""


class NotServedConfigError(NotServed, RuntimeError):
    """Raised where diffusers' ``load_config`` would replace any OSError by a generic message."""


def explain_not_served(cache: Path) -> None:
    """Make loading an id that ``cache`` does not serve fail with ``not_served_message``.

    For processes that run lesson code under ``offline_env``: without this, the hub client's
    raw error says "not cached" and names nothing that is.  Every model lookup in the cache
    goes through ``huggingface_hub.file_download.repo_folder_name`` (hf_hub_download,
    try_to_load_from_cache, snapshot_download), so the check wraps that one function.
    """
    import huggingface_hub._snapshot_download as snapshots
    import huggingface_hub.file_download as files

    folder_name = files.repo_folder_name

    def checked(*, repo_id: str, repo_type: str) -> str:
        name = folder_name(repo_id=repo_id, repo_type=repo_type)
        if repo_type in (None, "model") and not (cache / name / "refs" / "main").is_file():
            raise _error_type()(not_served_message(repo_id, cache))
        return name

    files.repo_folder_name = snapshots.repo_folder_name = checked


def explain_not_served_here() -> None:
    """``explain_not_served`` for this process's cache when it runs lesson code under ``offline_env``."""
    cache = os.environ.get("HF_HUB_CACHE")
    if cache and os.environ.get("HF_HUB_OFFLINE") == "1":
        explain_not_served(Path(cache))


def _error_type() -> type[NotServed]:
    """diffusers' ``ConfigMixin.load_config`` turns any OSError into "Can't load config for ...",
    dropping the message; from there the error is also a RuntimeError, which it lets through."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") == "diffusers.configuration_utils":
            return NotServedConfigError
        frame = frame.f_back  # type: ignore[assignment]
    return NotServedError
