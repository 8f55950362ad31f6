"""Peak GPU memory of a generation, and the claims the suite holds it to.

Peaks come from the CUDA caching allocator (``max_memory_allocated`` after
``reset_peak_memory_stats``): the bytes tensors really held, not what the allocator
reserved, so the figure does not depend on what ran before in the process.  The CPU
has no such counter; there the claims are unit-tested on given peaks.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sdverify import contract as C
from sdverify.gpu.timing import synchronize
from sdverify.results import CheckResult, fail, ok

GB = 1e9


@dataclass(frozen=True)
class Peak:
    """One run's peak allocation and what was already resident (weights, inputs) when it began."""

    name: str
    peak_bytes: int
    resident_bytes: int

    @property
    def activation_bytes(self) -> int:
        return self.peak_bytes - self.resident_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "peak_bytes": self.peak_bytes, "resident_bytes": self.resident_bytes}


def measure_peak(name: str, fn: Callable[[], Any], device: torch.device) -> Peak:
    """Peak bytes allocated on ``device`` while ``fn()`` runs (CUDA only)."""
    if device.type != "cuda":
        raise ValueError(f"peak memory is read from the CUDA allocator; {device} has none")
    synchronize(device)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    resident = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return Peak(name, torch.cuda.max_memory_allocated(device), resident)


@dataclass(frozen=True)
class Ceiling:
    """The derivation of the generation's memory ceiling (contract.py says why each term)."""

    weight_bytes: int
    activation_bytes: int
    slack_bytes: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.activation_bytes + self.slack_bytes

    def describe(self) -> str:
        return (
            f"{self.total / GB:.2f} GB = weights {self.weight_bytes / GB:.2f} GB + activations "
            f"{self.activation_bytes / GB:.2f} GB + slack {self.slack_bytes / GB:.2f} GB"
        )


def generation_ceiling(modules: list[torch.nn.Module], dtype: torch.dtype) -> Ceiling:
    """Ceiling for one CFG generation at the contract's image size with these modules' weights."""
    weight_bytes = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    itemsize = torch.empty((), dtype=dtype).element_size()
    feature_map = C.MEMORY_VAE_FEATURE_MAP_CHANNELS * C.IMAGE_SIZE**2 * itemsize
    return Ceiling(weight_bytes, C.MEMORY_LIVE_FEATURE_MAPS * feature_map, C.MEMORY_SLACK_BYTES)


def check_ceiling(peak: Peak, ceiling: Ceiling) -> CheckResult:
    """The generation's own footprint (its weights plus what it allocated above the resident
    set) stays under the ceiling, whatever else earlier tests left on the device."""
    footprint = ceiling.weight_bytes + peak.activation_bytes
    clause = f"one generation needs under {ceiling.describe()}"
    details: dict[str, Any] = {
        "footprint_bytes": footprint,
        "ceiling_bytes": ceiling.total,
        "peak_bytes": peak.peak_bytes,
    }
    if footprint < ceiling.total:
        return ok("memory.generation_ceiling", clause, **details)
    return fail(
        "memory.generation_ceiling",
        f"{peak.name} needed {footprint / GB:.2f} GB: weights {ceiling.weight_bytes / GB:.2f} GB + "
        f"{peak.activation_bytes / GB:.2f} GB allocated during the run (device peak {peak.peak_bytes / GB:.2f} GB); "
        "activations kept alive, or attention materialised?",
        clause,
        **details,
    )


def check_reference_vs_pipeline(reference: Peak, pipeline: Peak) -> CheckResult:
    limit = C.MAX_REFERENCE_OVER_PIPELINE_MEMORY
    clause = f"the reference peaks at no more than {limit}x StableDiffusionPipeline's peak"
    ratio = reference.peak_bytes / pipeline.peak_bytes
    if ratio <= limit:
        return ok("memory.reference_vs_pipeline", clause, ratio=ratio)
    return fail(
        "memory.reference_vs_pipeline",
        f"reference {reference.peak_bytes / GB:.3f} GB vs pipeline {pipeline.peak_bytes / GB:.3f} GB "
        f"(ratio {ratio:.3f}, limit {limit})",
        clause,
        ratio=ratio,
    )


def format_peaks(peaks: list[Peak]) -> str:
    rows = [("run", "peak GB", "resident GB", "above resident GB")]
    rows += [
        (p.name, f"{p.peak_bytes / GB:.3f}", f"{p.resident_bytes / GB:.3f}", f"{p.activation_bytes / GB:.3f}")
        for p in peaks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
