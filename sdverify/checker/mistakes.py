"""Known student mistakes, recognised from what a submission *returns*, never from its source.

Three kinds of signature:

* the type or shape of the returned value (a ``SchedulerOutput`` where a tensor belongs,
  ``[1,12]`` token ids, a pooled ``[1,768]`` embedding, ...);
* a statistic of the values (latents with no negative entries came from ``torch.rand``);
* *simulation*: the grader runs the reference with one known mistake put in, on the same
  inputs, and the submission's output matches that — within the same tolerance the
  reference comparison uses — but not the reference's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sdverify import contract as C
from sdverify import reference as R
from sdverify.checker.protocol import Value


@dataclass(frozen=True)
class Mistake:
    """A known mistake in ``function``: ``impl`` is the reference function with it put in."""

    id: str
    function: str
    message: str
    impl: Callable


# ------------------------------------------------------------ simulated implementations
def _denoise(*, scale_input: bool = True, combine: Callable = R.cfg_combine) -> Callable:
    def denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator=None):
        model_input = torch.cat([latents] * 2)
        if scale_input:
            model_input = scheduler.scale_model_input(model_input, t)
        with torch.no_grad():
            eps = unet(model_input, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps = combine(*eps.chunk(2), guidance_scale)
        return scheduler.step(eps, t, latents, **R._step_kwargs(scheduler, generator)).prev_sample

    return denoise_step


def _generate(
    *,
    reverse: bool = False,
    init_sigma: bool = True,
    uncond_prompt: bool = False,
    denoise: Callable = R.denoise_step,
    decode: Callable = R.decode_latents,
) -> Callable:
    def generate(
        tokenizer,
        text_encoder,
        unet,
        vae,
        scheduler,
        prompt,
        num_inference_steps=50,
        guidance_scale=7.5,
        generator=None,
    ):
        cond = R.encode_prompt(tokenizer, text_encoder, prompt)
        uncond = cond if uncond_prompt else R.encode_prompt(tokenizer, text_encoder, "")
        scheduler.set_timesteps(num_inference_steps, device=unet.device)
        latents = R.initial_latents(scheduler, generator, unet.device, cond.dtype)
        if not init_sigma:
            latents = latents / scheduler.init_noise_sigma
        timesteps = scheduler.timesteps.flip(0) if reverse else scheduler.timesteps
        for t in timesteps:
            latents = denoise(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator)
        return decode(vae, latents)

    return generate


def _swapped(u, c, w):
    return c + w * (u - c)


def _cond_only(u, c, w):
    return c


def _no_base(u, c, w):
    return w * (c - u)


def _encode_with_mask(tokenizer, text_encoder, prompt):
    from sdverify.tokenizer import encode_batch

    batch = encode_batch(tokenizer, prompt)
    with torch.no_grad():
        return text_encoder(
            batch.input_ids.to(text_encoder.device), attention_mask=batch.attention_mask.to(text_encoder.device)
        )[0]


def _latents_rand(scheduler, generator, device, dtype):
    draw = generator.device if generator is not None else torch.device(device)
    return (
        torch.rand(C.LATENT_SHAPE, generator=generator, device=draw, dtype=dtype).to(device)
        * scheduler.init_noise_sigma
    )


def _latents_unscaled(scheduler, generator, device, dtype):
    return R.initial_latents(scheduler, generator, device, dtype) / scheduler.init_noise_sigma


def _decode_unscaled(vae, latents):
    with torch.no_grad():
        return vae.decode(latents).sample


def _decode_multiplied(vae, latents):
    with torch.no_grad():
        return vae.decode(latents * vae.config.scaling_factor).sample


def _decode_rescaled(vae, latents):
    return (R.decode_latents(vae, latents) / 2 + 0.5).clamp(0, 1)


def _pil(transform: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def to_pil(image):
        return Image.fromarray(transform(image[0].detach().float().permute(1, 2, 0).cpu().numpy()), mode="RGB")

    return to_pil


def _pil_no_rescale(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


def _pil_no_clamp(x: np.ndarray) -> np.ndarray:
    return ((x / 2 + 0.5) * 255).round().astype(np.int64).astype(np.uint8)  # wraps around


def _pil_bgr(x: np.ndarray) -> np.ndarray:
    return (np.clip(x / 2 + 0.5, 0, 1) * 255).round().astype(np.uint8)[..., ::-1].copy()


SWAPPED_CFG = (
    "your CFG equals eps_cond + w·(eps_uncond − eps_cond): the two predictions are swapped "
    "(check the order of torch.cat([uncond, cond]) against .chunk(2))"
)
NO_SCALE_INPUT = (
    "scale_model_input was not called: sigma-based schedulers (Euler, LMS, Heun) need the U-Net input "
    "divided by sqrt(sigma²+1) via scheduler.scale_model_input(latent_model_input, t)"
)
GUIDANCE_IGNORED = "the guidance scale has no effect: only eps_cond is used (as if w = 1)"

MISTAKES: tuple[Mistake, ...] = (
    Mistake(
        "encode_attention_mask",
        "encode_prompt",
        "the attention mask was passed to the text encoder: SD1.5 encodes the padded ids without a mask, "
        "so the padding positions' embeddings differ",
        _encode_with_mask,
    ),
    Mistake(
        "latents_rand",
        "initial_latents",
        "latents look uniform in [0, 1): torch.rand was used where torch.randn (standard normal) belongs",
        _latents_rand,
    ),
    Mistake(
        "init_noise_sigma_forgotten",
        "initial_latents",
        "latents have std 1 instead of scheduler.init_noise_sigma: multiply the noise by init_noise_sigma "
        "(≈14.6 for Euler-type schedulers, 1 for PNDM/DDIM)",
        _latents_unscaled,
    ),
    Mistake("cfg_swapped", "denoise_step", SWAPPED_CFG, _denoise(combine=_swapped)),
    Mistake("scale_model_input_forgotten", "denoise_step", NO_SCALE_INPUT, _denoise(scale_input=False)),
    Mistake("guidance_ignored", "denoise_step", GUIDANCE_IGNORED, _denoise(combine=_cond_only)),
    Mistake(
        "cfg_without_uncond",
        "denoise_step",
        "the guided noise is w·(eps_cond − eps_uncond): eps_uncond must be added back",
        _denoise(combine=_no_base),
    ),
    Mistake(
        "decode_not_divided",
        "decode_latents",
        "decoded image is 0.18215× too small/large: the latents were not divided by the VAE scaling factor "
        "(vae.config.scaling_factor) before vae.decode",
        _decode_unscaled,
    ),
    Mistake(
        "decode_multiplied",
        "decode_latents",
        "the latents were multiplied by the VAE scaling factor before decoding; divide by it instead "
        "(multiplying belongs to encoding)",
        _decode_multiplied,
    ),
    Mistake(
        "decode_rescaled",
        "decode_latents",
        "decode_latents already maps the image to [0, 1]; it must return the raw VAE output in ~[-1, 1] "
        "(rescaling is to_pil's job)",
        _decode_rescaled,
    ),
    Mistake(
        "pil_not_rescaled",
        "to_pil",
        "the image was not mapped from [-1, 1] to [0, 1] (x / 2 + 0.5) before scaling to 0..255",
        _pil(_pil_no_rescale),
    ),
    Mistake(
        "pil_not_clamped",
        "to_pil",
        "values outside [0, 1] were not clamped before the uint8 cast, so they wrapped around "
        "(bright pixels turned dark)",
        _pil(_pil_no_clamp),
    ),
    Mistake("pil_bgr", "to_pil", "the colour channels are in BGR order: red and blue are swapped", _pil(_pil_bgr)),
    Mistake(
        "timesteps_increasing",
        "generate",
        "timesteps were walked in increasing order: iterate scheduler.timesteps as given (from noisy to clean)",
        _generate(reverse=True),
    ),
    Mistake(
        "generate_init_noise_sigma",
        "generate",
        "the starting latents were not multiplied by scheduler.init_noise_sigma (matters for Euler-type schedulers)",
        _generate(init_sigma=False),
    ),
    Mistake("generate_scale_model_input", "generate", NO_SCALE_INPUT, _generate(denoise=_denoise(scale_input=False))),
    Mistake(
        "uncond_from_prompt",
        "generate",
        'the unconditional embeddings were computed from the prompt instead of the empty prompt "": '
        "guidance then has nothing to push against",
        _generate(uncond_prompt=True),
    ),
    Mistake("generate_guidance_ignored", "generate", GUIDANCE_IGNORED, _generate(denoise=_denoise(combine=_cond_only))),
    Mistake("generate_cfg_swapped", "generate", SWAPPED_CFG, _generate(denoise=_denoise(combine=_swapped))),
    Mistake(
        "generate_decode_not_divided",
        "generate",
        "the final latents were not divided by the VAE scaling factor (0.18215) before decoding",
        _generate(decode=_decode_unscaled),
    ),
)


def simulated(function: str) -> list[Mistake]:
    return [m for m in MISTAKES if m.function == function]


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


def from_value(function: str, value: Value) -> tuple[str, str] | None:
    """``(mistake id, words)`` when a value's type or shape is a known mistake's signature."""
    kind = value.desc.get("type", "")
    if value.kind == "image":
        kind = "Image"
    if value.desc.get("type") == "NoneType":
        return "returned_none", "returned None: the function is missing a return statement"
    hint = _TYPE_HINTS.get((function, kind))
    if hint:
        return f"type_{kind}", hint
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
            return "tokenize_no_padding", (
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
    if function == "initial_latents" and tensor.numel() and tensor.is_floating_point() and float(tensor.min()) >= 0:
        return "latents_rand", next(m.message for m in MISTAKES if m.id == "latents_rand")
    return None


NOT_REPRODUCIBLE = {
    "initial_latents": "two calls with generators seeded alike gave different latents: draw the noise with "
    "generator=generator (and on the generator's device)",
    "denoise_step": "two runs with generators seeded alike differ: pass generator= to scheduler.step "
    "(DDPM draws noise in every step)",
}
