"""The reference pipeline's per-stage shape/dtype trace, as a syrupy snapshot.

Shapes and dtypes are the contract's, the same for every preset; times are left out.
Update with ``pytest tests/test_snapshots_trace.py --snapshot-update`` after a deliberate
change to what the pipeline records.
"""

from __future__ import annotations

import torch

from sdverify import reference
from sdverify.schedulers import make_scheduler


def test_reference_trace_shapes_snapshot(sd_tokenizer, sd_components, snapshot):
    c = sd_components
    reference.generate(
        sd_tokenizer, c.text_encoder, c.unet, c.vae, make_scheduler("ddim"), "a cat sitting on a beach at sunset",
        num_inference_steps=2, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert reference.generate.last_trace.shapes() == snapshot
