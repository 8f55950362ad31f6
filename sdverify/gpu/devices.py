"""Which device the GPU suite runs on, why it is skipped, and one GPU per pytest-xdist worker.

``--sdverify-device`` defaults to ``cuda``.  ``cpu`` runs the same tests on the ``tiny``
preset so CI exercises their logic on every push.  With ``pytest -n N`` on a machine
with several GPUs, worker ``gwK`` of an sdverify session takes the K-th visible GPU (round
robin) through ``CUDA_VISIBLE_DEVICES``, which it sets before CUDA is initialised, so each
worker sees exactly one card as ``cuda:0`` (:func:`sdverify.gpu.session.claim_worker`).
"""

from __future__ import annotations

import os
import platform
import re

import torch

DEFAULT_DEVICE = "cuda"


def resolve_device(option: str | None) -> torch.device:
    """The suite's device from the option value (None: cuda); only cpu and cuda[:N] are valid."""
    text = option or DEFAULT_DEVICE
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"--sdverify-device {text!r} is not usable by the gpu suite; expected 'cuda', 'cuda:N' or 'cpu'"
        )
    return device


def cuda_skip_reason(device: torch.device) -> str | None:
    """Why the suite cannot run on ``device`` here, or None when it can."""
    if device.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return (
            f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() == False "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
            "use --sdverify-device cpu to run this suite's logic on the tiny preset"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        return f"no CUDA device {device}: only {count} visible"
    return None


def device_name(device: torch.device) -> str:
    """Human name of the device: the CUDA product name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def visible_gpus(cuda_visible_devices: str | None, count: int) -> list[str]:
    """GPU ids the workers share: the parent's ``CUDA_VISIBLE_DEVICES`` list, else ``0..count-1``."""
    if cuda_visible_devices is not None:
        return [d.strip() for d in cuda_visible_devices.split(",") if d.strip()]
    return [str(i) for i in range(count)]


def worker_index(worker_id: str) -> int:
    """``gw3`` -> 3 (pytest-xdist worker ids)."""
    match = re.fullmatch(r"gw(\d+)", worker_id)
    if not match:
        raise ValueError(f"not a pytest-xdist worker id: {worker_id!r}; expected 'gw<N>'")
    return int(match.group(1))


def gpu_for_worker(worker_id: str, gpus: list[str]) -> str | None:
    """The GPU id worker ``worker_id`` should see (round robin), or None when there are none."""
    return gpus[worker_index(worker_id) % len(gpus)] if gpus else None
