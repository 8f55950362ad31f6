"""Known student mistakes, recognised from what a submission *returns*, never from its source.

Three kinds of signature:

* the type or shape of the returned value (a ``SchedulerOutput`` where a tensor belongs,
  ``[1,12]`` token ids, a pooled ``[1,768]`` embedding, ...);
* a statistic of the values (latents that look uniform came from ``torch.rand``:
  :func:`sdverify.mistakes.uniform_draw`);
* *simulation*: the grader runs the reference with one known mistake put in, on the same
  inputs, and the submission's output matches that — within the same tolerance the
  reference comparison uses — but not the reference's.

The simulated mistakes, their ids and words live in the shared catalog :mod:`sdverify.mistakes`.
"""

from __future__ import annotations

import torch

from sdverify import contract as C
from sdverify.checker.protocol import Value
from sdverify.mistakes import MISTAKES, uniform_draw

CFG_INPLACE = (
    "cfg_combine changed {names} in place (e.g. `eps_cond -= eps_uncond`): the U-Net predictions "
    "must stay intact; compute into a new tensor"
)


def from_cfg(values: list[Value], u: torch.Tensor, c: torch.Tensor, w: float) -> tuple[str, str] | None:
    """A ``cfg_combine`` case's mistake: a known wrong formula (:mod:`sdverify.properties.cfg`'s
    catalog) or inputs changed in place (the probe hands back the inputs after the call)."""
    from sdverify.properties.cfg import cfg_tolerance, name_cfg_mistake

    changed = [
        name
        for name, given, value in zip(("eps_uncond", "eps_cond"), (u, c), values[1:])
        if value.tensor is not None and not torch.equal(value.tensor.to(given.device, given.dtype), given)
    ]
    if changed:
        return "cfg_inplace", CFG_INPLACE.format(names=" and ".join(changed))
    out = values[0].tensor if values else None
    if out is None or out.shape != u.shape:
        return None
    return name_cfg_mistake(out, u, c, w, cfg_tolerance(u.dtype, u, c, scale=1 + 2 * abs(w)))


# ------------------------------------------------------------------ type/shape/statistics
_TYPE_HINTS: dict[tuple[str, str], str] = {
    ("denoise_step", "SchedulerOutput"): "the return value is a SchedulerOutput, not a tensor: use .prev_sample",
    ("denoise_step", "tuple"): "scheduler.step(..., return_dict=False) returns a tuple: take element [0]",
    ("decode_latents", "DecoderOutput"): "vae.decode returns a DecoderOutput, not a tensor: use .sample",
    ("tokenize", "BatchEncoding"): "the tokenizer's BatchEncoding was returned: use .input_ids",
    ("tokenize", "dict"): "a dict of tokenizer outputs was returned: use ['input_ids']",
    ("tokenize", "list"): "a Python list was returned: call the tokenizer with return_tensors='pt'",
    (
        "encode_prompt",
        "BaseModelOutputWithPooling",
    ): "the text encoder's output object was returned: use [0] or .last_hidden_state",
    ("encode_prompt", "tuple"): "the text encoder's output tuple was returned: take element [0] (last_hidden_state)",
    ("generate", "Image"): "generate must return the raw decoded tensor [1,3,512,512]; to_pil converts it",
    ("decode_latents", "Image"): "decode_latents must return the raw decoded tensor; to_pil converts it",
    ("to_pil", "ndarray"): "a numpy array was returned: wrap it with PIL.Image.fromarray(array)",
    ("to_pil", "Tensor"): "a tensor was returned: to_pil must build a PIL.Image (Image.fromarray on uint8 HWC)",
}


# Type signatures that are a catalogued mistake (sdverify.mistakes) report its id, so the
# checker and the notebook grader count them alike.
_CATALOG_IDS = {("denoise_step", "SchedulerOutput"): "prev_sample_missing"}


def from_value(function: str, value: Value) -> tuple[str, str] | None:
    """``(mistake id, words)`` when a value's type or shape is a known mistake's signature."""
    kind = value.desc.get("type", "")
    if value.kind == "image":
        kind = "Image"
    if value.desc.get("type") == "NoneType":
        return "returned_none", "returned None: the function is missing a return statement"
    hint = _TYPE_HINTS.get((function, kind))
    if hint:
        return _CATALOG_IDS.get((function, kind), f"type_{kind}"), hint
    if value.kind == "other" and value.desc.get("type") == "ndarray":
        return (
            "numpy_array",
            "a numpy array was returned where a torch.Tensor belongs (torch.from_numpy or keep it a tensor)",
        )
    shape = tuple(value.tensor.shape) if value.kind == "tensor" and value.tensor is not None else None
    if shape is None:
        return _image_shape_hint(function, value)
    if function == "tokenize" and len(shape) == 2 and shape[0] == 1:
        if shape[1] < C.MAX_TOKENS:
            return "ids_not_padded", (
                f"token ids have shape [1,{shape[1]}]: the tokenizer was called without padding='max_length', "
                f"max_length={C.MAX_TOKENS}"
            )
        if shape[1] > C.MAX_TOKENS:
            return "tokenize_no_truncation", (
                f"token ids have shape [1,{shape[1]}]: long prompts must be cut with truncation=True "
                f"(CLIP takes at most {C.MAX_TOKENS})"
            )
    if function == "encode_prompt":
        if shape == (1, C.EMBED_DIM):
            return "pooled_output", "the pooled output [1,768] was returned instead of last_hidden_state [1,77,768]"
        if len(shape) == 3 and shape[1] != C.MAX_TOKENS:
            return "encode_no_padding", (
                f"embeddings for {shape[1]} positions: the prompt was not padded to {C.MAX_TOKENS} tokens"
            )
    if function == "initial_latents" and shape == (1, C.LATENT_CHANNELS, C.IMAGE_SIZE, C.IMAGE_SIZE):
        return "latents_image_size", (
            f"latents at image resolution: the latent grid is {C.IMAGE_SIZE}/{C.VAE_DOWNSCALE} = {C.LATENT_SIZE}"
        )
    if function in ("decode_latents", "generate") and shape == (1, C.IMAGE_SIZE, C.IMAGE_SIZE, 3):
        return "image_channels_last", "the image is channels-last [1,512,512,3]; the raw image is [1,3,512,512]"
    return None


def _image_shape_hint(function: str, value: Value) -> tuple[str, str] | None:
    if function != "to_pil" or value.kind != "image":
        return None
    if value.desc.get("mode") != "RGB":
        return "pil_mode", f"the image has mode {value.desc.get('mode')!r}; expected 'RGB' (uint8 HWC array)"
    return None


def from_statistics(function: str, tensor: torch.Tensor) -> tuple[str, str] | None:
    """Signatures in the values themselves (no reference needed)."""
    if function == "initial_latents" and uniform_draw(tensor):
        return "rand_not_randn", MISTAKES["rand_not_randn"].message
    return None


NOT_REPRODUCIBLE = {
    "initial_latents": "two calls with generators seeded alike gave different latents: draw the noise with "
    "generator=generator (and on the generator's device)",
    "denoise_step": "two runs with generators seeded alike differ: pass generator= to scheduler.step "
    "(DDPM draws noise in every step)",
}
