"""The extraction program: runs in the notebook's kernel, writes the variables a snapshot reads.

Never imported by the grader: :mod:`.extraction` reads this file and the describer's
(:mod:`sdverify.untrusted.describer`) as text and the kernel executes them in a fresh namespace,
then calls :func:`extract`, so a notebook that rebinds ``print``/``type``/``json``, patches
sdverify's modules or hides tracebacks cannot change what is written.  It writes only
``manifest.json`` (one descriptor per name) and ``values.safetensors`` (their data) into
``folder``; never pickle.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

if TYPE_CHECKING:  # the kernel runs the describer's text in this namespace
    from sdverify.untrusted.describer import describe, qualname

_GENERATORS = 16  # seeded torch.Generator objects a snapshot reports


def extract(ns: dict[str, Any], names: list[list[Any]], folder: str, keys: dict[str, str]) -> None:
    """Describe ``names`` of the notebook's namespace ``ns`` and the kernel's state into ``folder``.

    Each of ``names`` is ``[name, root, steps]`` (:func:`sdverify.notebooks.paths.kernel_request`):
    the value is ``ns[root]`` walked along ``steps``.

    ``keys`` names the state's entries and the modules that hold it: ``seed``, ``generators``,
    ``uses`` (with ``tripwire``, its module) and ``mapped`` (with ``device_map``).
    """
    manifest: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, root, steps in names:
        if root not in ns:
            manifest[name] = {"kind": "missing"}
            continue
        try:
            manifest[name] = describe(_walk(ns[root], steps), name, tensors)
        except _Unreadable as exc:
            manifest[name] = {"kind": "unreadable", "error": str(exc)}
        except BaseException as exc:
            manifest[name] = {"kind": "error", "error": qualname(exc) + ": " + str(exc)[:300]}
    manifest[keys["seed"]] = {"kind": "value", "value": torch.initial_seed()}  # the seed the notebook last set
    manifest[keys["generators"]] = {"kind": "value", "value": _generator_seeds(ns)}
    manifest[keys["uses"]] = {"kind": "value", "value": _tripwire_records(keys["tripwire"])}
    manifest[keys["mapped"]] = {"kind": "value", "value": _mapped(keys["device_map"])}
    save_file(tensors, os.path.join(folder, "values.safetensors"))
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, default=str)


class _Unreadable(Exception):
    """A step of a variable path raised: its message names the exception's class and the step."""


def _walk(value: Any, steps: list[list[Any]]) -> Any:
    """``value`` walked along a parsed variable path, one getattr or ``[...]`` at a time."""
    for kind, key, text in steps:
        try:
            value = getattr(value, key) if kind == "attr" else value[key]
        except BaseException as exc:
            raise _Unreadable(f"{type(exc).__name__} at `{text}`") from None
    return value


def _generator_seeds(ns: dict[str, Any]) -> list[int]:
    """initial_seed() of each seeded torch.Generator bound to a name (the diffusers idiom)."""
    try:
        return [int(v.initial_seed()) for v in list(ns.values()) if type(v) is torch.Generator][:_GENERATORS]
    except BaseException:
        return []


def _tripwire_records(module: str) -> list[Any] | None:
    try:
        return list(sys.modules[module].TRIPWIRE.records)
    except BaseException:
        return None


def _mapped(module: str) -> dict[str, list[int]] | None:
    try:
        mapped = sys.modules[module].MAPPED
        return {str(k): sorted(c for c in v if isinstance(c, int)) for k, v in mapped.items()}
    except BaseException:
        return None
