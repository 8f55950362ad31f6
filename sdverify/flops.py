"""FLOPs of each pipeline stage, counted with ``torch.utils.flop_counter`` on the meta device.

Meta tensors carry shapes but no data, so the full SD1.5 architecture is counted in
about a second on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from sdverify import contract as C
from sdverify.zoo import meta_components


def _count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@dataclass(frozen=True)
class StageFlops:
    """FLOPs of one pipeline call split by stage."""

    text_encoder_pass: int  # one CLIP pass on [1,77]
    unet_pass: int  # one U-Net pass on a single [1,4,64,64] latent
    vae_decode: int  # one decode of [1,4,64,64]
    steps: int
    cfg: bool

    @property
    def clip(self) -> int:
        return self.text_encoder_pass * (2 if self.cfg else 1)

    @property
    def denoise(self) -> int:
        return self.unet_pass * self.steps * (2 if self.cfg else 1)

    @property
    def total(self) -> int:
        return self.clip + self.denoise + self.vae_decode

    def shares(self) -> dict[str, float]:
        return {
            "clip": self.clip / self.total,
            "denoise": self.denoise / self.total,
            "vae": self.vae_decode / self.total,
        }


def count_stage_flops(preset: str = "sd15", steps: int = C.NUM_INFERENCE_STEPS, cfg: bool = True) -> StageFlops:
    """Count FLOPs of ``preset`` at the contract's shapes (512x512 image, 64x64 latents)."""
    text_encoder, unet, vae = meta_components(preset)
    meta = torch.device("meta")
    ids = torch.zeros(C.TOKEN_IDS_SHAPE, dtype=torch.long, device=meta)
    latents = torch.empty(C.LATENT_SHAPE, device=meta)
    embeddings = torch.empty(C.EMBEDDINGS_SHAPE, device=meta)
    timestep = torch.tensor([999], device=meta)
    with torch.no_grad():
        return StageFlops(
            text_encoder_pass=_count(lambda: text_encoder(ids)),
            unet_pass=_count(lambda: unet(latents, timestep, encoder_hidden_states=embeddings)),
            vae_decode=_count(lambda: vae.decode(latents)),
            steps=steps,
            cfg=cfg,
        )
