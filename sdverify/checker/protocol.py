"""The wire between a sandboxed child and the grader: what travels, and how it is checked.

A child streams one JSON header per event and, for a finished probe, one safetensors
payload with the values' data — never pickle, never stdout, never a verdict.  The grader
hands it one probe at a time on the same channel, after ``ready`` and after each ``done``.  Everything
read here comes from student code, so every field is validated before use: a forged,
oversized or truncated message is that probe's failure, never a grader crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import safetensors.torch
import torch

from sdverify import contract as C
from sdverify.delegation.policy import Use, from_records
from sdverify.results import OutcomeStatus
from sdverify.untrusted.value import UntrustedValue, load_tensors

_HEADER_BYTES = 2**20  # a header is a few hundred bytes of JSON; a MiB is anything but honest
JOB_BYTES = 64 * 2**20  # the job a bwrap child reads: probes, plus a .py submission's source (hex)
# dtypes a probe result may come back in (what torch and numpy produce for these API values).
_DTYPES = frozenset(
    {torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int32, torch.int64, torch.bool}
)


class Connection(Protocol):
    """The two ends of a pipe, as ``multiprocessing.connection.Connection`` provides them."""

    def send_bytes(self, buf: bytes) -> None: ...
    def recv_bytes(self, maxlength: int | None = None) -> bytes: ...
    def poll(self, timeout: float | None = 0.0) -> bool: ...


class ChannelFault(ValueError):
    """The child sent something the protocol does not allow (forged, oversized or cut short)."""


@dataclass
class Outcome:
    """What happened when a probe ran: ``status`` is ok, error, missing, timeout, crashed or skipped."""

    status: OutcomeStatus
    values: list[UntrustedValue] = field(default_factory=list)
    message: str = ""


@dataclass
class SandboxResult:
    outcomes: dict[str, Outcome]
    import_error: str | None = None
    log_tail: str = ""
    uses: list[Use] = field(default_factory=list)  # what the tripwire saw (sdverify.delegation)


def send(conn: Connection, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Child side: one header, plus the payload after a ``done`` event."""
    conn.send_bytes(json.dumps(header).encode())
    if header.get("event") == "done":
        conn.send_bytes(safetensors.torch.save(tensors or {}))


def hand(conn: Connection, probe: dict[str, Any] | None) -> None:
    """Grader side: the child's next probe (None: there is none, it finishes).  A probe's
    arguments (a drawn case's guidance scale, seed, prompt) reach the child only here, when
    it is to run; a child that is already gone reads nothing, and its end is read as usual."""
    try:
        conn.send_bytes(json.dumps(probe).encode())
    except OSError:
        pass


def next_probe(conn: Connection) -> dict[str, Any] | None:
    """Child side: the probe the grader hands over next, or None when there is none."""
    probe = json.loads(conn.recv_bytes(JOB_BYTES))
    return probe if isinstance(probe, dict) else None


def read(conn: Connection, timeout: float) -> tuple[dict[str, Any] | None, bytes | None]:
    """Grader side: the next header (and payload for ``done``); ``(None, None)`` when the child
    closed the pipe before a header.  Raises TimeoutError, or ChannelFault for a bad message
    (a payload over ``CHECK_MAX_RESULT_BYTES`` is refused before it is read)."""
    if not conn.poll(timeout):
        raise TimeoutError
    try:
        raw = conn.recv_bytes(_HEADER_BYTES)
    except EOFError:
        return None, None
    except OSError as exc:
        raise ChannelFault(f"a message over {_HEADER_BYTES} bytes ({exc})") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ChannelFault(f"a header that is not JSON ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("event"), str):
        raise ChannelFault("a header without an event")
    payload = None
    if header["event"] == "done":
        if not conn.poll(timeout):
            raise TimeoutError
        try:
            payload = conn.recv_bytes(C.CHECK_MAX_RESULT_BYTES)
        except EOFError:
            raise ChannelFault("a result cut short: the process ended after its header") from None
        except OSError:
            raise ChannelFault(
                f"a result over {C.CHECK_MAX_RESULT_BYTES // 2**20} MiB (a few contract-sized tensors at most)"
            ) from None
    return header, payload


def values(header: dict[str, Any], payload: bytes, device: torch.device) -> list[UntrustedValue]:
    """The values of a ``done`` header, each checked against what the run could produce:
    devices the run's or CPU, dtypes from the allow-list, data present for every tensor."""
    try:
        tensors = load_tensors(payload, "tensor bytes")
    except ValueError as exc:
        raise ChannelFault(str(exc)) from None
    allowed_devices = {"cpu", str(device)}
    described = header.get("values", [])
    if not isinstance(described, list):
        raise ChannelFault("values that are not a list")
    out = []
    for desc in described:
        if not isinstance(desc, dict):
            raise ChannelFault("a value description that is not an object")
        kind, key = desc.get("kind"), desc.get("key")
        data = None
        if kind in ("tensor", "image"):
            if not isinstance(key, str) or key not in tensors:
                raise ChannelFault(f"a {kind} without its data")
            data = tensors[key]
            if data.dtype not in _DTYPES:
                raise ChannelFault(f"a tensor of dtype {data.dtype}")
        if kind == "tensor" and desc.get("device") not in allowed_devices:
            raise ChannelFault(f"a tensor on device {str(desc.get('device'))[:40]!r}, not {sorted(allowed_devices)}")
        out.append(UntrustedValue(str(key), desc, {str(key): data} if data is not None else {}))
    return out


def uses(header: dict[str, Any], function: str | None) -> list[Use]:
    """The tripwire records a header carries, charged to ``function`` (the probe the grader knows
    was running; None at import time: the records' own, "" or an API function)."""
    at = "at run time" if function else "at import"
    try:
        return from_records(header.get("uses", []), function, at)
    except ValueError as exc:
        raise ChannelFault(str(exc)) from None
