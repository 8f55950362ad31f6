"""Per-GPU facts and absolute time budgets for the GPU suite, keyed by the CUDA device name.

Peaks are NVIDIA datasheet figures: dense (no 2:4 sparsity) FP16/BF16 tensor-core and
plain FP32 TFLOP/s.  Budgets are for the suite's workload (SD1.5 architecture, float16,
512x512, 50 PNDM steps, batched CFG, SDPA attention, no ``torch.compile``) and are about
three times the typical published figure for ``StableDiffusionPipeline`` on that card
(diffusers' "Accelerated PyTorch 2.0" benchmark table; fal-ai/stable-diffusion-benchmarks:
A100 80GB SXM 1.60 s per 50-step image with SDPA), so a healthy runner never trips them
and a broken one (CPU fallback, fp32 by mistake, a missing synchronise) always does.
A card not in the table gets no absolute budget; relative claims still apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    key: str
    pattern: str  # regex searched in torch.cuda.get_device_name(), case-insensitive
    peak_tflops_fp16: float
    peak_tflops_fp32: float
    end_to_end_s: float  # budget: one 50-step fp16 generation, prompt to image
    unet_cfg_step_ms: float  # budget: one batched-CFG U-Net call (batch 2, 64x64 latents)


# More specific patterns first: "H100 PCIe" before "H100".  ``\b`` keeps L4 from
# matching L40S and A10 from matching A100.
GPUS: tuple[GpuSpec, ...] = (
    GpuSpec("H200", r"\bH200\b", 989.4, 67.0, 4.0, 60.0),
    GpuSpec("H100 PCIe", r"\bH100\b.*\bPCIe\b", 756.0, 51.0, 5.0, 75.0),
    GpuSpec("H100", r"\bH100\b", 989.4, 67.0, 4.0, 60.0),
    GpuSpec("A100", r"\bA100\b", 312.0, 19.5, 7.0, 110.0),
    GpuSpec("L4", r"\bL4\b", 121.0, 30.3, 18.0, 300.0),
    GpuSpec("A10G", r"\bA10G?\b", 125.0, 31.2, 15.0, 250.0),
    GpuSpec("T4", r"\bT4\b", 65.0, 8.1, 30.0, 500.0),
)


def lookup(gpu_name: str) -> GpuSpec | None:
    """The table row for a CUDA device name such as ``"NVIDIA H100 80GB HBM3"``, or None."""
    for spec in GPUS:
        if re.search(spec.pattern, gpu_name, flags=re.IGNORECASE):
            return spec
    return None


def spec_by_key(key: str) -> GpuSpec:
    """A table row by its key (for ``--sdverify-budget-gpu``), naming the keys on a miss."""
    for spec in GPUS:
        if spec.key.lower() == key.lower():
            return spec
    raise ValueError(f"unknown GPU budget key {key!r}; expected one of {[s.key for s in GPUS]}")


@dataclass(frozen=True)
class Budget:
    """The absolute limits applied on this run: a table row times a scale."""

    spec: GpuSpec
    scale: float

    @property
    def end_to_end_s(self) -> float:
        return self.spec.end_to_end_s * self.scale

    @property
    def unet_cfg_step_s(self) -> float:
        return self.spec.unet_cfg_step_ms / 1000 * self.scale


def resolve_budget(gpu_name: str, *, scale: float = 1.0, gpu_key: str | None = None) -> Budget | None:
    """Budget for this run: ``gpu_key`` overrides detection; scale 0 turns budgets off."""
    if scale < 0:
        raise ValueError(f"budget scale must be >= 0 (0 turns absolute budgets off), got {scale}")
    if scale == 0:
        return None
    spec = spec_by_key(gpu_key) if gpu_key else lookup(gpu_name)
    return Budget(spec, scale) if spec else None
