"""GPU suite, end to end: SD1.5 in float16 on CUDA (``pytest -m gpu``).

With ``--sdverify-device cpu`` the same tests run the tiny preset in float32, so CI
exercises their logic without a GPU.
"""

from __future__ import annotations

import pytest
import torch

from sdverify import reference
from sdverify.gpu import suite
from sdverify.results import compare_tensors
from sdverify.schedulers import make_scheduler

pytestmark = pytest.mark.gpu


def _scheduler(components, name: str):
    return make_scheduler(name, dict(components.scheduler.config))


@pytest.fixture(scope="module")
def reference_runs(gpu_config, gpu_components):
    """One recorded reference generation (50 steps on CUDA) per scheduler, under deterministic settings."""
    runs = {}
    for name in ("pndm", "ddpm"):
        scheduler = _scheduler(gpu_components, name)
        with suite.deterministic(), suite.recording(gpu_components, scheduler) as record:
            image = suite.reference_image(gpu_components, scheduler, gpu_config.steps, gpu_config.seed)
        runs[name] = (record, image, len(scheduler.timesteps))
    return runs


@pytest.mark.parametrize("name", ["pndm", "ddpm"])
def test_every_stage_has_contract_shape_dtype_and_is_finite(gpu_config, gpu_components, reference_runs, name):
    record, image, num_steps = reference_runs[name]
    token_ids = reference.tokenize(gpu_components.tokenizer, suite.PROMPT)
    results = suite.check_run(record, token_ids, image, gpu_config.dtype, num_steps)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert num_steps >= gpu_config.steps


def test_reference_matches_stable_diffusion_pipeline(gpu_config, gpu_components, reference_runs):
    _, image, _ = reference_runs["pndm"]
    pipe = suite.make_pipeline(gpu_components, _scheduler(gpu_components, "pndm"))
    with suite.deterministic():
        theirs = suite.pipeline_image(pipe, gpu_config.steps, gpu_config.seed)
    result = compare_tensors(
        "pipeline.equivalence",
        suite.to_unit_range(image),
        theirs,
        atol=gpu_config.pipeline_atol,
        clause="reference image == StableDiffusionPipeline image",
    )
    assert result.passed, str(result)


def test_batched_cfg_equals_two_unet_calls(gpu_config, gpu_components):
    latents, t, embeddings = suite.unet_inputs(gpu_config)
    with torch.inference_mode():
        batched = gpu_components.unet(latents, t, encoder_hidden_states=embeddings).sample
        separate = suite.unet_two_calls(gpu_components.unet, latents, t, embeddings)
    result = compare_tensors("cfg.batched_vs_two_calls", batched, separate, atol=gpu_config.batched_cfg_atol)
    assert result.passed, str(result)


def test_same_seed_twice_gives_identical_image(gpu_config, gpu_components, reference_runs):
    _, first, _ = reference_runs["pndm"]
    with suite.deterministic():
        again = suite.reference_image(
            gpu_components, _scheduler(gpu_components, "pndm"), gpu_config.steps, gpu_config.seed
        )
    assert torch.equal(first, again), f"max |diff| {float((first.float() - again.float()).abs().max()):.3g}"


def test_tiny_checker_run_passes_on_the_device(gpu_config):
    if not gpu_config.on_cuda:
        pytest.skip("on CPU the checker's own test suite covers this run")
    from sdverify.checker import check_submission

    # The kit's own reference, so the process level (bwrap passes no GPU into the sandbox).
    report = check_submission(None, preset="tiny", device=str(gpu_config.device), sandbox="process")
    failed = [f"{check.id}: {check.message}" for check in report.failed()]
    assert report.passed, (
        f"score {report.score}/{report.max_score}, error {report.error}:\n" + "\n".join(failed) + "\n" + report.output
    )
