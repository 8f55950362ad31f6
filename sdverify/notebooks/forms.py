"""The forms in which real lessons hold a stage's value, brought to the one form a check compares.

Token ids come as a tensor [1,77] or [77], a list of ints or a tokenizer's BatchEncoding (a
mapping with ``input_ids``); a post-processed image as a tensor, array or PIL image, CHW or
HWC, with or without a batch dimension, uint8 or float in [0, 1] or [-1, 1].  Each function
returns the canonical tensor, or a sentence saying what was found instead.
"""

from __future__ import annotations

import torch

from sdverify.untrusted.value import UntrustedValue

# A float image whose largest value is above this holds 0..255 levels, not a fraction.
_LEVELS_ABOVE = 1.5


def as_tensor(var: UntrustedValue, tensor: torch.Tensor) -> UntrustedValue:
    """``var`` described as the tensor ``tensor`` (what a check reads of a normalised form)."""
    desc = {"kind": "tensor", "key": var.name, "dtype": str(tensor.dtype), "device": "cpu", "shape": list(tensor.shape)}
    return UntrustedValue(var.name, {**var.desc, **desc}, {var.name: tensor})


def token_ids(var: UntrustedValue) -> UntrustedValue:
    """``var`` as a [1,77]-shaped ids tensor where it holds one of the token-id forms; else as it is."""
    tensor = var.tensor
    if var.kind == "mapping" and "input_ids" in var.desc.get("keys", []):
        tensor = var.tensors.get(f"{var.name}.input_ids")
    elif var.kind == "value" and isinstance(var.value, list):
        try:
            tensor = torch.tensor(var.value, dtype=torch.int64)
        except (TypeError, ValueError, OverflowError):
            return var
    if tensor is None:
        return var
    return as_tensor(var, tensor.unsqueeze(0) if tensor.dim() == 1 else tensor)


def image(var: UntrustedValue) -> list[torch.Tensor] | str:
    """The image as float [1,3,H,W] in [0, 1], read as each range it may hold, or what was wrong."""
    x = var.tensor
    if x is None:
        return f"is {var.describe()}; expected an image (a tensor, array or PIL image)"
    shape = list(x.shape)
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3:
        return f"has shape {shape}; expected an image: [3,H,W] or [H,W,3], with or without a batch"
    if x.shape[-1] == 3 and x.shape[0] != 3:
        x = x.permute(2, 0, 1)
    elif x.shape[0] != 3:
        return f"has shape {shape}; expected 3 colour channels (RGB), first or last"
    if x.dtype == torch.uint8:
        return [x.double().unsqueeze(0) / 255]
    # A float image in [0, 1], the raw decode in [-1, 1] (a dark one lies in [0, 1] too, a
    # bright one beyond 1) or levels 0..255: each reading is tried.
    x = x.double().unsqueeze(0)
    return [x, (x / 2 + 0.5).clamp(0, 1), *([x / 255] if float(x.max()) > _LEVELS_ABOVE else [])]
