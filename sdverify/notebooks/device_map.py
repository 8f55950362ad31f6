"""Run a lesson written for a GPU on the grading CPU, when its spec says so (``map_device``).

Installed in the notebook kernel before any student cell (:func:`kernel_setup` runs this
file's source there, as the delegation tripwire is run), it maps:

- ``"cuda"``, ``"cuda:N"``, ``torch.device("cuda")`` (and a bare index given to ``.to``/``.cuda``)
  passed to any torch function or tensor method, ``.cuda()`` and ``torch.load`` onto ``"cpu"``;
- float16/bfloat16 (``.half()``, ``dtype=``, ``torch_dtype=`` through ``.to``,
  ``torch.set_default_dtype``) onto float32: on a CPU float16 is 13x slower and 0.012 away
  from float32 after a tiny 50-step generation, ten times the replay tolerance
  (docs/grading.md), and the expected values are float32;
- ``torch.autocast("cuda")`` onto a disabled autocast, ``torch.Generator("cuda")`` onto a CPU
  generator, ``torch.cuda`` queries onto answers for one device that is the CPU (seeds seed
  the CPU generator, the one the replays follow).

It records which cells it mapped what in (``MAPPED``); the extraction cell reads that back for
the report.
Torch and the standard library only: the kernel need not import sdverify.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

KERNEL_MODULE = "_sdverify_device_map"  # where a kernel keeps it (the extraction cell reads MAPPED)
GRADING_DEVICE = "cpu"
HALF = (torch.float16, torch.bfloat16)
_CUDA = re.compile(r"cuda(?::\d+)?")
# "device" | "dtype" | "autocast" | "torch.cuda" -> execution counts of the cells that needed it
MAPPED: dict[str, set[Any]] = {}
_where: Callable[[], Any] = lambda: None  # noqa: E731 - install() sets what says which cell runs


def _note(kind: str) -> None:
    MAPPED.setdefault(kind, set()).add(_where())


def is_cuda(value: Any) -> bool:
    """``value`` names a CUDA device (a string or a ``torch.device``)."""
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and _CUDA.fullmatch(value) is not None


def _map(value: Any) -> Any:
    if is_cuda(value):
        _note("device")
        return GRADING_DEVICE
    if isinstance(value, torch.dtype) and value in HALF:
        _note("dtype")
        return torch.float32
    return value


_MAPPABLE = (str, torch.device, torch.dtype)
# Their dtype reinterprets bytes, it asks for no precision (safetensors reads float16 files so).
_REINTERPRET = (torch.Tensor.view, torch.frombuffer)


class DeviceMap(TorchFunctionMode):
    """Rewrites the device and dtype arguments of every torch call made while it is active."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            _note("device")
            return args[0].to(GRADING_DEVICE, non_blocking=kwargs.get("non_blocking", False))
        if func in (torch.Tensor.half, torch.Tensor.bfloat16):
            _note("dtype")
            return args[0].float()
        if func is torch.Tensor.to and len(args) > 1 and type(args[1]) is int:  # .to(0): CUDA device 0
            _note("device")
            args = (args[0], GRADING_DEVICE, *args[2:])
        if func in _REINTERPRET:
            return func(*args, **kwargs)
        if any(isinstance(a, _MAPPABLE) for a in args):
            args = tuple(_map(a) for a in args)
        if "device" in kwargs or "dtype" in kwargs:
            kwargs = {k: _map(v) if k in ("device", "dtype") else v for k, v in kwargs.items()}
        return func(*args, **kwargs)


class _GeneratorType(type(torch.Generator)):  # type: ignore[misc]
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _TORCH_GENERATOR)


_TORCH_GENERATOR = torch.Generator


class Generator(torch.Generator, metaclass=_GeneratorType):
    """``torch.Generator`` that makes a CPU generator when asked for a CUDA one."""

    def __new__(cls, device: Any = GRADING_DEVICE) -> Generator:
        return super().__new__(cls, _map(device))  # type: ignore[call-arg]


class autocast(torch.autocast):  # torch.autocast's own name: it replaces it
    """``torch.autocast`` that disables itself for ``"cuda"``: float16 is computed in float32 here."""

    def __init__(self, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True, **kwargs: Any) -> None:
        if is_cuda(device_type):
            _note("autocast")
            device_type, dtype, enabled = GRADING_DEVICE, None, False
        super().__init__(device_type, dtype=dtype, enabled=enabled, **kwargs)


def _cuda_autocast(enabled: bool = True, dtype: torch.dtype = torch.float16, cache_enabled: bool = True) -> autocast:
    return autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def _seed(seed: int, **_: Any) -> None:
    torch.random.default_generator.manual_seed(int(seed))  # not torch.manual_seed: it calls torch.cuda's


def _load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    """``torch.load`` that puts what was saved on a GPU on the CPU."""
    if map_location is None or is_cuda(map_location):
        map_location = GRADING_DEVICE
    return _TORCH_LOAD(f, map_location, *args, **kwargs)


_TORCH_LOAD = torch.load
_SET_DEFAULT_DTYPE = torch.set_default_dtype


def _query(answer: Any) -> Any:
    def query(*args: Any, **kwargs: Any) -> Any:
        _note("torch.cuda")
        return answer(*args, **kwargs) if callable(answer) else answer

    return query


# torch.cuda's functions lessons call, answered for one device that is the CPU.
CUDA_QUERIES: dict[str, Any] = {
    "is_available": True,
    "device_count": 1,
    "current_device": 0,
    "get_device_name": f"{GRADING_DEVICE} (sdverify: cuda mapped to the grading CPU)",
    "is_bf16_supported": False,
    "memory_allocated": 0,
    "max_memory_allocated": 0,
    "memory_reserved": 0,
    "max_memory_reserved": 0,
    **dict.fromkeys(
        ("set_device", "synchronize", "empty_cache", "ipc_collect", "reset_peak_memory_stats", "init"), None
    ),
    "manual_seed": _seed,
    "manual_seed_all": _seed,
    "seed": lambda: torch.random.default_generator.seed(),
    "seed_all": lambda: torch.random.default_generator.seed(),
    "initial_seed": lambda: torch.random.default_generator.initial_seed(),
    "get_rng_state": lambda *_, **__: torch.random.default_generator.get_state(),
    "set_rng_state": lambda state, *_, **__: torch.random.default_generator.set_state(state),
}


def install(where: Callable[[], Any]) -> DeviceMap:
    """Map from now on, in this process (the mode stays entered for the kernel's life);
    ``where()`` says which cell is running (its execution count)."""
    global _where
    _where = where
    for name, answer in CUDA_QUERIES.items():
        setattr(torch.cuda, name, _query(answer))
    torch.Generator = Generator  # type: ignore[misc]
    torch.autocast = torch.amp.autocast = autocast  # type: ignore[misc,assignment]
    torch.cuda.amp.autocast = _cuda_autocast  # type: ignore[misc,assignment]
    torch.load = _load
    torch.set_default_dtype = lambda d: _SET_DEFAULT_DTYPE(_map(d))
    mode = DeviceMap()
    mode.__enter__()
    return mode


def kernel_setup() -> str:
    """Code that installs the map in a notebook kernel and keeps it in ``sys.modules[KERNEL_MODULE]``."""
    from pathlib import Path

    from sdverify.delegation.tripwire import PSEUDO_FILES

    source = Path(__file__).read_text()
    return (
        "import builtins as _sdv_b, sys as _sdv_sys, types as _sdv_types\n"
        f"_sdv_m = _sdv_types.ModuleType({KERNEL_MODULE!r})\n"
        f"_sdv_sys.modules[{KERNEL_MODULE!r}] = _sdv_m\n"
        f"_sdv_b.exec(_sdv_b.compile({source!r}, {PSEUDO_FILES + 'device-map>'!r}, 'exec'), _sdv_m.__dict__)\n"
        "_sdv_m.MODE = _sdv_m.install(lambda: getattr(get_ipython().displayhook, 'prompt_count', None))\n"
        "del _sdv_b, _sdv_sys, _sdv_types, _sdv_m"
    )


def as_graded(value: Any) -> Any:
    """A device or dtype a notebook variable names (``"cuda"``, ``"torch.float16"``), as the map ran it."""
    if is_cuda(value):
        return GRADING_DEVICE
    return "torch.float32" if value in ("torch.float16", "torch.bfloat16") else value


def describe(mapped: dict[str, list[int]]) -> str:
    """The report's note: what the map did, in which cells (notebook indices)."""
    labels = {
        "device": "cuda devices -> cpu",
        "dtype": "float16/bfloat16 -> float32",
        "autocast": "autocast('cuda') disabled",
        "torch.cuda": "torch.cuda calls answered for the CPU",
    }
    done = "; ".join(f"{label} in cells {mapped[k]}" for k, label in labels.items() if mapped.get(k))
    return "the lesson's GPU code ran on the grading CPU in float32 (spec [lesson] map_device = true)" + (
        f": {done}" if done else "; nothing needed mapping"
    )
