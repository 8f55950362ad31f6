"""Component configurations of the offline model zoo.

``sd15`` is the real SD1.5 architecture (configs as published in the SD1.5 repo's
``unet/``, ``vae/``, ``text_encoder/`` and ``scheduler/`` folders).  ``tiny`` keeps
the contract's tensor interface ([1,77] ids -> [1,77,768] text, [1,4,64,64]
latents, [1,3,512,512] images) with as little compute as the classes allow, so a
50-step CFG loop runs in seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdverify import contract as C

SD15_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": C.NUM_TRAIN_TIMESTEPS,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

_SD15_TEXT: dict[str, Any] = {
    "vocab_size": C.VOCAB_SIZE,
    "hidden_size": C.EMBED_DIM,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": C.MAX_TOKENS,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 768,
    # SD1.5's text_encoder/config.json keeps CLIP's original ids (pooled output
    # then uses argmax(input_ids)); last_hidden_state does not depend on them.
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
}

_SD15_UNET: dict[str, Any] = {
    "sample_size": C.LATENT_SIZE,
    "in_channels": C.LATENT_CHANNELS,
    "out_channels": C.LATENT_CHANNELS,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": C.EMBED_DIM,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
}

_SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": C.LATENT_CHANNELS,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": C.IMAGE_SIZE,
    "scaling_factor": C.VAE_SCALING_FACTOR,
}


@dataclass(frozen=True)
class Preset:
    """Configs of one zoo entry; ``expected_params`` is set where the counts are contractual."""

    name: str
    text_encoder: dict[str, Any]
    unet: dict[str, Any]
    vae: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=lambda: dict(SD15_SCHEDULER))
    expected_params: dict[str, int] | None = None


SD15 = Preset(
    "sd15",
    _SD15_TEXT,
    _SD15_UNET,
    _SD15_VAE,
    expected_params={
        "text_encoder": C.PARAMS_TEXT_ENCODER,
        "vae": C.PARAMS_VAE,
        "unet": C.PARAMS_UNET,
    },
)

TINY = Preset(
    "tiny",
    # 768 wide because the contract says [1,77,768]; one layer, a thin MLP.
    {**_SD15_TEXT, "intermediate_size": 32, "num_hidden_layers": 1},
    # Three levels of 8/16/32 channels; attention only at 16x16 with 2 heads, where
    # it is cheap (at 32x32 the CPU attention kernel dominated the step time).
    {
        **_SD15_UNET,
        "layers_per_block": 1,
        "block_out_channels": (8, 16, 32),
        "down_block_types": ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        "attention_head_dim": 2,
        "norm_num_groups": 4,
    },
    # Four levels (an 8x spatial factor, as SD1.5) of very few channels.
    {
        **_SD15_VAE,
        "block_out_channels": (4, 4, 8, 8),
        "layers_per_block": 1,
        "norm_num_groups": 4,
    },
)

PRESETS: dict[str, Preset] = {p.name: p for p in (TINY, SD15)}


def get_preset(name: str) -> Preset:
    """Look a preset up by name, naming the choices on a miss."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
