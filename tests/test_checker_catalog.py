"""The mistake catalog: every wrong submission fails the check meant to catch it, naming
its mistake, and loses points in its function only; every correct-but-different submission
passes everything, with full marks.

One test per submission; the reference expectations are built once per worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sdverify.checker import API_NAMES, check_submission
from sdverify.mistakes import MISTAKES

# The whole catalog is the slow tier; the laptop tier checks one wrong and the reference (test_checker_cli).
pytestmark = pytest.mark.slow

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"

# submission -> (the check that must fail, words its message must contain (the named mistake)).
WRONG = {
    "wrong_tokenize_no_padding": ("tokenize.reference[astronaut]", "without padding='max_length'"),
    "wrong_tokenize_no_truncation": ("tokenize.reference[long]", "truncation=True"),
    "wrong_tokenize_batch_encoding": ("tokenize.reference[astronaut]", "use .input_ids"),
    "wrong_encode_pooled": ("encode_prompt.reference[astronaut]", "pooled output"),
    "wrong_encode_attention_mask": ("encode_prompt.reference[astronaut]", "attention mask was passed"),
    "wrong_encode_model_output": ("encode_prompt.reference[astronaut]", ".last_hidden_state"),
    "wrong_latents_rand": ("initial_latents.reference[pndm]", "torch.rand was used"),
    "wrong_latents_no_sigma": ("initial_latents.reference[euler]", "instead of scheduler.init_noise_sigma"),
    "wrong_latents_no_generator": ("initial_latents.reproducible", "generator=generator"),
    "wrong_latents_image_size": ("initial_latents.reference[pndm]", "latents at image resolution"),
    "wrong_cfg_swapped": ("cfg_combine.reference[w=7.5]", "the two predictions are swapped"),
    "wrong_cfg_paper_convention": ("cfg_combine.reference[w=7.5]", "(1 + w) convention"),
    "wrong_cfg_inplace": ("cfg_combine.reference[w=7.5]", "in place"),
    # Right at the documented scales only: the drawn cases catch it (no mistake to name).
    "wrong_cfg_documented_scales_only": ("cfg_combine.reference[drawn1]", "cfg_combine[drawn1]"),
    "wrong_denoise_scheduler_output": ("denoise_step.reference[pndm]", "`.prev_sample` is missing"),
    "wrong_denoise_no_scale_input": ("denoise_step.reference[euler]", "scale_model_input was not called"),
    "wrong_denoise_chunk_order": ("denoise_step.reference[pndm]", "the two predictions are swapped"),
    "wrong_denoise_no_generator": ("denoise_step.reproducible", "pass generator= to scheduler.step"),
    "wrong_denoise_guidance_ignored": ("denoise_step.reference[pndm]", "guidance scale is ignored"),
    "wrong_decode_no_scaling": ("decode_latents.reference[noise]", "not divided by the VAE scaling factor"),
    "wrong_decode_multiply": ("decode_latents.reference[noise]", "multiplied by the VAE scaling factor"),
    "wrong_decode_decoder_output": ("decode_latents.reference[noise]", "use .sample"),
    "wrong_decode_rescaled": ("decode_latents.reference[noise]", "already maps the image to [0, 1]"),
    "wrong_pil_no_rescale": ("to_pil.reference[uniform]", "not mapped from [-1, 1]"),
    "wrong_pil_no_clamp": ("to_pil.reference[uniform]", "not clamped"),
    "wrong_pil_bgr": ("to_pil.reference[uniform]", "BGR"),
    "wrong_pil_returns_array": ("to_pil.reference[uniform]", "PIL.Image.fromarray"),
    "wrong_generate_timesteps_reversed": ("generate.reference[pndm]", "walked in increasing order"),
    "wrong_generate_uncond_from_prompt": ("generate.reference[pndm]", "instead of the empty prompt"),
    "wrong_generate_no_init_sigma": ("generate.reference[euler]", "init_noise_sigma"),
    "wrong_generate_returns_pil": ("generate.reference[pndm]", "to_pil converts it"),
}
# Wrong only off the documented cases: the drawn cases catch it, and no catalog mistake explains it.
NAMELESS = {"wrong_cfg_documented_scales_only"}
CORRECT = sorted(p.stem for p in CATALOG.glob("correct_*.py"))


def test_catalog_is_complete():
    wrong = sorted(p.stem for p in CATALOG.glob("wrong_*.py"))
    assert wrong == sorted(WRONG), "every wrong submission needs an expectation here"
    assert len(wrong) >= 20 and len(CORRECT) >= 8
    assert {check.split(".")[0] for check, _ in WRONG.values()} == set(API_NAMES)


@pytest.mark.parametrize("name", sorted(WRONG))
def test_wrong_submission_fails_with_its_mistake_named(name: str, sandbox_level: str):
    check_id, words = WRONG[name]
    report = check_submission(str(CATALOG / f"{name}.py"))
    assert report.isolation == sandbox_level
    by_id = {c.id: c for c in report.checks}
    assert not report.passed
    assert not by_id[check_id].passed, f"{check_id} passed"
    assert words in by_id[check_id].message, by_id[check_id].message
    named = {c.mistake for c in report.checks if c.mistake}
    assert named <= set(MISTAKES), named  # one catalog
    if name not in NAMELESS:
        assert by_id[check_id].mistake in named, named
    # Only the mistaken function (or one built on it) fails; what is implemented elsewhere passes.
    mistaken = check_id.split(".")[0]
    implemented_failures = {c.group for c in report.failed() if c.status != "missing"}
    allowed = {mistaken, "encode_prompt"} if mistaken == "tokenize" else {mistaken}
    assert implemented_failures <= allowed, [c.id for c in report.failed() if c.status != "missing"]
    # Points: the mistaken function loses (some of) its correctness points, the rest keep theirs.
    implemented = {c.group for c in report.checks if c.status != "missing"} - {"sandbox"}
    points = report.points_by_group()
    assert points[mistaken][0] < points[mistaken][1], f"{mistaken} kept all its points"
    assert all(points[f][0] == points[f][1] > 0 for f in implemented - allowed), points


@pytest.mark.parametrize("name", CORRECT)
def test_correct_variant_passes_everything(name: str, sandbox_level: str):
    report = check_submission(str(CATALOG / f"{name}.py"))
    assert report.passed, "\n".join(f"{c.id}: {c.message}" for c in report.failed())
    assert report.score == report.max_score == 100
