"""GPU suite, memory and robustness: a derived peak-memory ceiling, the reference against
StableDiffusionPipeline's peak, float16 finiteness end to end, and ``torch.compile``.

Peaks need the CUDA allocator's counters, so the memory claims skip on CPU (their checks
are unit-tested in test_gpu_plumbing.py); finiteness and the compiled U-Net run there too
(tiny preset, float32; compile through aot_eager).
"""

from __future__ import annotations

import pytest
import torch

from sdverify.gpu import memory, suite
from sdverify.results import compare_tensors

pytestmark = pytest.mark.gpu

NO_ALLOCATOR = "peak memory is read from the CUDA caching allocator; the CPU has no such counter"


@pytest.fixture(scope="module")
def generations(gpu_config, gpu_components, gpu_report):
    peaks, images = suite.generation_peaks(gpu_components, gpu_config)
    for peak in peaks.values():
        gpu_report.add_peak(peak)
    print(memory.format_peaks(list(peaks.values())))
    return peaks, images


def test_generation_peaks_under_the_derived_ceiling(gpu_config, gpu_components, generations):
    peaks, _ = generations
    if not peaks:
        pytest.skip(NO_ALLOCATOR)
    c = gpu_components
    ceiling = memory.generation_ceiling([c.text_encoder, c.unet, c.vae], gpu_config.dtype)
    print(f"ceiling {ceiling.describe()}")
    failed = [str(r) for r in (memory.check_ceiling(p, ceiling) for p in peaks.values()) if not r.passed]
    assert not failed, "\n".join(failed)


def test_reference_uses_no_more_memory_than_pipeline(generations):
    peaks, _ = generations
    if not peaks:
        pytest.skip(NO_ALLOCATOR)
    result = memory.check_reference_vs_pipeline(peaks["reference"], peaks["pipeline"])
    assert result.passed, str(result)


@pytest.mark.parametrize("name", ["reference", "pipeline"])
def test_generation_is_finite_end_to_end(gpu_config, generations, name):
    _, images = generations
    image = images[name]
    assert image.dtype == gpu_config.dtype
    bad = int((~torch.isfinite(image)).sum())
    assert bad == 0, f"{name}: {bad} of {image.numel()} pixels are inf/NaN in {gpu_config.dtype}"


def test_compiled_unet_gives_the_same_image(gpu_config, gpu_components, generations):
    _, images = generations
    compiled = suite.to_unit_range(suite.compiled_unet_image(gpu_components, gpu_config))
    result = compare_tensors(
        "compile.same_image",
        compiled,
        images["reference"],
        atol=gpu_config.pipeline_atol,
        clause=f"torch.compile(unet, backend={gpu_config.compile_backend!r}) keeps the image",
    )
    print(result)
    assert result.passed, str(result)
