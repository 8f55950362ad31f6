"""The contract's numbers, and the zoo presets that must honour them."""

from __future__ import annotations

import inspect

import pytest
from diffusers.models import AutoencoderKL

from sdverify import contract as C
from sdverify.flops import count_stage_flops
from sdverify.presets import PRESETS, get_preset
from sdverify.zoo import count_params, meta_components


def test_shapes_follow_from_the_architecture():
    assert C.TOKEN_IDS_SHAPE == (1, 77)
    assert C.EMBEDDINGS_SHAPE == (1, 77, 768)
    assert C.LATENT_SHAPE == (1, 4, 64, 64)
    assert C.IMAGE_SHAPE == (1, 3, 512, 512)
    assert C.LATENT_COMPRESSION == 48 == (512 * 512 * 3) // (64 * 64 * 4)
    assert C.VAE_SCALING_FACTOR == 0.18215


def test_parameter_counts_add_up():
    assert (C.PARAMS_TEXT_ENCODER, C.PARAMS_VAE, C.PARAMS_UNET) == (123_060_480, 83_653_863, 859_520_964)
    assert C.PARAMS_TOTAL == 1_066_235_307


def test_sd15_preset_reproduces_the_parameter_counts_exactly():
    text_encoder, unet, vae = meta_components("sd15")
    counts = {"text_encoder": count_params(text_encoder), "vae": count_params(vae), "unet": count_params(unet)}
    assert counts == get_preset("sd15").expected_params
    assert sum(counts.values()) == C.PARAMS_TOTAL


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_keeps_the_tensor_interface(name):
    preset = get_preset(name)
    assert preset.text_encoder["hidden_size"] == C.EMBED_DIM
    assert preset.text_encoder["max_position_embeddings"] == C.MAX_TOKENS
    assert preset.text_encoder["vocab_size"] == C.VOCAB_SIZE
    assert preset.unet["cross_attention_dim"] == C.EMBED_DIM
    assert preset.unet["sample_size"] == C.LATENT_SIZE
    assert 2 ** (len(preset.vae["block_out_channels"]) - 1) == C.VAE_DOWNSCALE
    # SD1.5's vae/config.json has no scaling_factor key: the class default applies.
    default = inspect.signature(AutoencoderKL.__init__).parameters["scaling_factor"].default
    assert preset.vae.get("scaling_factor", default) == C.VAE_SCALING_FACTOR


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'sd21'.*\['sd15', 'tiny'\]"):
        get_preset("sd21")


def test_denoising_loop_dominates_the_flops():
    """The lesson's claim, counted: 50 CFG steps at 512x512 on the real architecture."""
    flops = count_stage_flops("sd15")
    assert flops.unet_pass == pytest.approx(0.80e12, rel=0.02)
    assert flops.vae_decode == pytest.approx(2.5e12, rel=0.02)
    assert flops.shares()["denoise"] >= C.MIN_DENOISE_FLOP_SHARE
    assert flops.denoise == 2 * C.NUM_INFERENCE_STEPS * flops.unet_pass
