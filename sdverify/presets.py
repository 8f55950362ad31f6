"""Component configurations of the offline model zoo.

``sd15`` is the real SD1.5 architecture (configs as published in the SD1.5 repo's
``unet/``, ``vae/``, ``text_encoder/`` and ``scheduler/`` folders, read from
``sdverify/published``).  ``tiny`` keeps the contract's tensor interface ([1,77] ids
-> [1,77,768] text, [1,4,64,64] latents, [1,3,512,512] images) with as little compute
as the classes allow, so a 50-step CFG loop runs in seconds on a laptop CPU.  It has the
published key sets; only the size values below differ (the zoo writes them into the
published files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdverify import contract as C
from sdverify import published
from sdverify.errors import UsageError

# The published SD1.5 configs (sdverify/published), as arguments of their classes.
SD15_SCHEDULER: dict[str, Any] = published.model_kwargs("scheduler")
# SD1.5's text_encoder/config.json keeps CLIP's original ids (pooled output then uses
# argmax(input_ids)); last_hidden_state does not depend on them.
_SD15_TEXT: dict[str, Any] = published.model_kwargs("text_encoder")
_SD15_UNET: dict[str, Any] = published.model_kwargs("unet")
# No scaling_factor key: SD1.5's vae/config.json predates it; diffusers' default is SD1.5's 0.18215.
_SD15_VAE: dict[str, Any] = published.model_kwargs("vae")


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
        raise UsageError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}") from None
