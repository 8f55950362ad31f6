"""The grader's side of an untrusted value: its descriptor and data, and the bounded reads that bring them.

Whatever crossed from untrusted code (a notebook kernel's snapshot files, a sandboxed child's
log and payload) is read here with a bound, never followed through a link, never unpickled.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

_DATA_KINDS = ("tensor", "array", "image")


@dataclass
class UntrustedValue:
    """One value as :func:`sdverify.untrusted.describer.describe` described it, plus its data.

    ``desc`` comes from untrusted code: read its fields with ``.get``; ``kind`` is ``missing``
    for a name that was not defined and ``error`` for a value that could not be described.
    """

    name: str
    desc: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.desc.get("kind", "missing"))

    @property
    def type_name(self) -> str:
        """The class' own name (``Tensor``, ``ndarray``, ``NoneType``)."""
        return str(self.desc.get("type", "object")).rsplit(".", 1)[-1]

    @property
    def tensor(self) -> torch.Tensor | None:
        """The data of a tensor, array or image (None for any other kind)."""
        if self.kind not in _DATA_KINDS:
            return None
        return self.tensors.get(str(self.desc.get("key", self.name)))

    @property
    def value(self) -> Any:
        return self.desc.get("value")

    def describe(self) -> str:
        """What was found, in the words a feedback message uses (``a torch.Tensor of shape [1,4]...``)."""
        d, kind, data = self.desc, self.kind, self.tensor
        if kind == "missing":
            return "not defined"
        if kind == "error":
            return f"not readable ({d.get('error')})"
        if kind == "unreadable":  # a step of a variable path raised (sdverify.notebooks.paths)
            return f"unreadable ({d.get('error')})"
        if kind == "tensor" and data is not None:
            what = "torch.Tensor" if self.type_name == "Tensor" else f"{self.type_name} (a torch.Tensor subclass)"
            return f"a {what} of shape {_dims(data.shape)}, dtype {data.dtype}, on {d.get('device')}"
        if kind == "image":
            return f"a PIL image of size {d.get('size')}, mode {d.get('mode')}"
        if kind == "array":
            return f"a numpy.ndarray of shape {_dims(d.get('shape', []))}, dtype {d.get('dtype')}"
        if kind == "value" and "len" not in d:
            return "None" if self.value is None else f"{self.type_name} {self.value!r}"
        text = f"a {self.type_name}"
        if "len" in d:
            text += f" of length {d['len']}"
        if d.get("keys"):
            text += f" with fields {d['keys'][:8]}"
        return text


def _dims(shape: Any) -> str:
    return "[" + ",".join(str(n) for n in shape) + "]" if isinstance(shape, (list, tuple, torch.Size)) else "?"


def read_bounded(path: Path, limit: int, *, tail: bool = False, start: int = 0) -> bytes:
    """At most ``limit`` bytes of ``path`` (its last ones after ``start``, with ``tail``), only
    if it is a regular file: untrusted code can write there, so a FIFO, a link or a flood is
    refused (ValueError, naming the file) before anything is read; a flood's tail costs a seek."""
    if path.parent.is_symlink():
        raise ValueError(f"{path.parent.name} is a symbolic link")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"{path.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if tail:
            f.seek(max(start, info.st_size - limit))
        elif info.st_size > limit:
            raise ValueError(f"{path.name} is {info.st_size >> 20} MiB, over the {limit >> 20} MiB limit")
        return f.read(limit + 1)[:limit]


def load_tensors(data: bytes, what: str) -> dict[str, torch.Tensor]:
    """The tensors of safetensors bytes ``what`` names; garbage is a ValueError saying so."""
    try:
        return safetensors.torch.load(data)
    except Exception as exc:  # SafetensorError is no ValueError: garbage bytes are the untrusted side's fault
        raise ValueError(f"{what}: unreadable ({exc})") from None
