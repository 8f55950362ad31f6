"""Describe a value where untrusted code made it: a JSON descriptor plus its data as plain tensors.

Runs inside the untrusted process: a module's sandboxed child imports it, a notebook's kernel
executes its text in a fresh namespace (:mod:`sdverify.notebooks.kernel_program`), so a notebook
that rebinds names or patches sdverify's modules cannot change it.  It therefore imports only
the standard library and torch, finds numpy and PIL only if the code already imported them, and
runs none of the value's own methods where that can be avoided (tensor subclasses are unwrapped).

A descriptor is a dict: ``kind`` (tensor, array, image, value, module, scheduler, mapping,
sequence, object), ``type`` (the qualified class name) and the kind's facts; the data of a
tensor, array or image is stored under ``tensors[key]``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

_FIELDS = 8  # the sequence item types (and a shallow mapping's keys) a descriptor names
_TEXT = 300  # characters of a repr (and of a shallow string) a descriptor keeps


def qualname(value: object) -> str:
    """``module.Class`` of ``value``, read without running its ``__class__`` property."""
    cls = object.__getattribute__(value, "__class__")
    return f"{cls.__module__}.{cls.__qualname__}"


def plain_tensor(value: torch.Tensor) -> torch.Tensor:
    """A detached plain ``torch.Tensor`` copy of ``value``.

    Subclasses are unwrapped with their ``__torch_function__`` disabled and called through
    unbound ``torch.Tensor`` methods, so overridden methods of the returned object never run.
    """
    with torch._C.DisableTorchFunctionSubclass():
        base = torch.Tensor.as_subclass(value, torch.Tensor)
        return torch.Tensor.clone(torch.Tensor.detach(base))


def describe(value: Any, key: str, tensors: dict[str, torch.Tensor], *, deep: bool = True) -> dict[str, Any]:
    """The descriptor of ``value``; its data goes to ``tensors`` under ``key`` (and ``key.field``).

    ``deep`` (a notebook's variable) keeps the data of numpy arrays and of a mapping's tensors,
    every key and whole strings; shallow (a module's return value, where the contract asks for a
    tensor or an image) names what came back in a few hundred bytes.
    """
    desc: dict[str, Any] = {"type": qualname(value)}
    np = sys.modules.get("numpy")
    pil = sys.modules.get("PIL.Image")
    if isinstance(value, torch.Tensor):
        data = plain_tensor(value)
        tensors[key] = data.cpu().contiguous()
        desc.update(kind="tensor", key=key, dtype=str(data.dtype), device=str(data.device), shape=list(data.shape))
    elif value is None or isinstance(value, (bool, int, float)):
        desc.update(kind="value", value=value)
    elif isinstance(value, str):
        desc.update(kind="value", value=value if deep else value[:_TEXT])
    elif isinstance(value, (torch.dtype, torch.device)):
        desc.update(kind="value", value=str(value))
    elif isinstance(value, torch.nn.Module):
        params = list(value.parameters())
        desc.update(
            kind="module",
            params=sum(p.numel() for p in params),
            dtype=str(params[0].dtype) if params else None,
            device=str(params[0].device) if params else None,
            training=bool(value.training),
        )
    elif hasattr(value, "timesteps") and hasattr(value, "config") and callable(getattr(value, "step", None)):
        desc.update(kind="scheduler", config=json.loads(json.dumps(dict(value.config), default=str)))
        if isinstance(value.timesteps, torch.Tensor):
            tensors[key + ".timesteps"] = plain_tensor(value.timesteps).cpu().contiguous()
    elif np is not None and isinstance(value, np.ndarray):
        desc.update(kind="array", dtype=str(value.dtype), device="numpy", shape=list(value.shape))
        if deep:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value).copy())
            desc.update(key=key)
    elif np is not None and isinstance(value, np.generic):
        desc.update(kind="value", value=value.item())
    elif pil is not None and np is not None and isinstance(value, pil.Image):
        tensors[key] = torch.from_numpy(np.array(value).copy())
        desc.update(kind="image", key=key, mode=str(value.mode), size=list(value.size), device="PIL")
    elif hasattr(value, "keys") and hasattr(value, "__getitem__"):
        desc.update(kind="mapping", keys=_mapping(value, key, tensors) if deep else _keys(value))
    elif isinstance(value, (list, tuple)):
        desc.update(len=len(value), items=[qualname(v) for v in value[:_FIELDS]])
        desc.update(_plain(value) if deep else {"kind": "sequence"})
    else:
        desc.update(kind="object", repr=repr(value)[:_TEXT])
    return desc


def _mapping(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> list[str]:
    """A mapping's keys; its tensor items' data under ``key.field``."""
    keys = []
    for field in list(value.keys()):
        item = value[field]
        if isinstance(item, torch.Tensor):
            tensors[f"{key}.{field}"] = plain_tensor(item).cpu().contiguous()
        keys.append(str(field))
    return keys


def _keys(value: Any) -> list[str]:
    return [str(field) for field in list(value.keys())[:_FIELDS]]


def _plain(value: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    """A list or tuple of plain values is a value (a notebook's list of timings), else a sequence."""
    try:
        return {"kind": "value", "value": json.loads(json.dumps(value))}
    except (TypeError, ValueError):
        return {"kind": "sequence"}
