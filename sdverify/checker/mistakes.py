"""Known student mistakes, recognised from what a submission *returns*, never from its source.

Three kinds of signature:

* the type or shape of the returned value (a ``SchedulerOutput`` where a tensor belongs,
  ``[1,12]`` token ids, a pooled ``[1,768]`` embedding, ...);
* a statistic of the values (latents that look uniform came from ``torch.rand``:
  :func:`sdverify.mistakes.uniform_draw`);
* *simulation*: the grader runs the reference with one known mistake put in, on the same
  inputs, and the submission's output matches that — within the same tolerance the
  reference comparison uses — but not the reference's.

Every mistake recognised here is an id of the shared catalog :mod:`sdverify.mistakes`, which
holds its words; this module only says which signature shows which id.
"""

from __future__ import annotations

from typing import Any

import torch

from sdverify import contract as C
from sdverify.mistakes import uniform_draw
from sdverify.untrusted.value import UntrustedValue

# A recognised mistake: its catalog id and the fields its words take (sdverify.mistakes.named).
Found = tuple[str, dict[str, Any]]


def from_cfg(values: list[UntrustedValue], u: torch.Tensor, c: torch.Tensor, w: float) -> Found | None:
    """A ``cfg_combine`` case's mistake: a known wrong formula (:mod:`sdverify.properties.cfg`'s
    catalog) or inputs changed in place (the probe hands back the inputs after the call)."""
    from sdverify.properties.cfg import cfg_tolerance, name_cfg_mistake

    changed = [
        name
        for name, given, value in zip(("eps_uncond", "eps_cond"), (u, c), values[1:])
        if value.tensor is not None and not torch.equal(value.tensor.to(given.device, given.dtype), given)
    ]
    if changed:
        return "cfg_inplace", {"names": " and ".join(changed)}
    out = values[0].tensor if values else None
    if out is None or out.shape != u.shape:
        return None
    found = name_cfg_mistake(out, u, c, w, cfg_tolerance(u.dtype, u, c, scale=1 + 2 * abs(w)))
    return (found, {}) if found else None


# ------------------------------------------------------------------ type/shape/statistics
# (API function, type of the returned value) -> the catalogued mistake it is the signature of.
_TYPE_SIGNATURES: dict[tuple[str, str], str] = {
    ("denoise_step", "SchedulerOutput"): "prev_sample_missing",
    ("denoise_step", "tuple"): "step_tuple",
    ("decode_latents", "DecoderOutput"): "decoder_output",
    ("tokenize", "BatchEncoding"): "batch_encoding",
    ("tokenize", "dict"): "tokenizer_dict",
    ("tokenize", "list"): "ids_as_list",
    ("encode_prompt", "BaseModelOutputWithPooling"): "encoder_output_object",
    ("encode_prompt", "tuple"): "encoder_output_tuple",
    ("generate", "Image"): "image_not_tensor",
    ("decode_latents", "Image"): "image_not_tensor",
    ("to_pil", "ndarray"): "pil_numpy_array",
    ("to_pil", "Tensor"): "pil_tensor",
}


def from_value(function: str, value: UntrustedValue) -> Found | None:
    """The known mistake whose signature a value's type or shape is."""
    kind = "Image" if value.kind == "image" else value.type_name
    if kind == "NoneType":
        return "returned_none", {}
    if (function, kind) in _TYPE_SIGNATURES:
        return _TYPE_SIGNATURES[function, kind], {"type_name": kind, "function": function}
    if value.kind == "array":
        return "numpy_array", {}
    shape = tuple(value.tensor.shape) if value.kind == "tensor" and value.tensor is not None else None
    if shape is None:
        return _image_mode(function, value)
    return _shape_signature(function, shape)


def _shape_signature(function: str, shape: tuple[int, ...]) -> Found | None:
    found = None
    if function == "tokenize" and len(shape) == 2 and shape[0] == 1 and shape[1] != C.MAX_TOKENS:
        found = "ids_not_padded" if shape[1] < C.MAX_TOKENS else "tokenize_no_truncation"
    elif function == "encode_prompt" and shape == (1, C.EMBED_DIM):
        found = "pooled_output"
    elif function == "encode_prompt" and len(shape) == 3 and shape[1] != C.MAX_TOKENS:
        found = "encode_no_padding"
    elif function == "initial_latents" and shape == (1, C.LATENT_CHANNELS, C.IMAGE_SIZE, C.IMAGE_SIZE):
        found = "latents_image_size"
    elif function in ("decode_latents", "generate") and shape == (1, C.IMAGE_SIZE, C.IMAGE_SIZE, 3):
        found = "image_channels_last"
    return (found, {}) if found else None


def _image_mode(function: str, value: UntrustedValue) -> Found | None:
    if function != "to_pil" or value.kind != "image" or value.desc.get("mode") == "RGB":
        return None
    return "pil_mode", {"mode": value.desc.get("mode")}


def from_statistics(function: str, tensor: torch.Tensor) -> Found | None:
    """Signatures in the values themselves (no reference needed)."""
    if function == "initial_latents" and uniform_draw(tensor):
        return "rand_not_randn", {}
    return None


# API function -> the mistake two runs from generators seeded alike that differ show.
NOT_REPRODUCIBLE = {"initial_latents": "generator_ignored", "denoise_step": "step_generator_ignored"}
