"""The one catalog of known student mistakes: id, stage, message, and how it is simulated.

Every grader reads it: the property suite (:mod:`sdverify.properties.cfg`'s formulas), the
module checker (:mod:`sdverify.checker.mistakes` runs ``simulations`` on its probes) and the
notebook grader (:mod:`sdverify.notebooks.exercises` replays ``replay`` and names results by
``id``), so one mistake has one id and one wording in every report and in the class analytics.
A new mistake is one entry here (and one example file under ``examples/``).

``stage`` is the API function where the mistake is made (:data:`ANY` for one every function
can make); ``simulations`` maps each API function that shows it to the reference function with
the mistake put in (a mistake made in ``cfg_combine`` also shows in ``denoise_step`` and
``generate``).  A grader attaches a mistake to a failed check with :func:`named` alone, so every
report reads it alike: the id in ``CheckResult.mistake``, the words as the message's first line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from PIL import Image

from sdverify import contract as C
from sdverify import reference as R
from sdverify.results import CheckResult

CfgFormula = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ANY = "any"  # the stage of a mistake any API function can make (a missing return)


@dataclass(frozen=True)
class Mistake:
    """A known mistake: what it is called, where it is made, what the student reads."""

    id: str
    stage: str
    message: str
    simulations: Mapping[str, Callable] = field(default_factory=lambda: MappingProxyType({}))
    formula: CfgFormula | None = None  # a CFG mistake as a float64 function of (u, c, w)
    replay: Mapping[str, Any] | None = None  # options of the notebook grader's Exercise-4 replay

    def words(self, **fields: Any) -> str:
        """The message, its ``{fields}`` filled in where a grader knows them (names, values)."""
        return self.message.format(**fields) if fields else self.message


# ------------------------------------------------------------ simulated implementations
def _denoise(*, scale_input: bool = True, combine: Callable = R.cfg_combine) -> Callable:
    def denoise_step(unet, scheduler, latents, t, cond, uncond, guidance_scale, generator=None):
        return R.guided_step(
            unet,
            scheduler,
            latents,
            t,
            cond,
            uncond,
            guidance_scale,
            generator,
            combine=combine,
            scale_input=scale_input,
        )

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
        latents = R.denoise_loop(
            unet, scheduler, latents, cond, uncond, guidance_scale, generator, step=denoise, reverse=reverse
        )
        return decode(vae, latents)

    return generate


def _in_loop(combine: CfgFormula) -> dict[str, Callable]:
    """A CFG mistake as it shows in every API function that guides."""
    return {"denoise_step": _denoise(combine=combine), "generate": _generate(denoise=_denoise(combine=combine))}


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


def _swapped(u, c, w):
    return c + w * (u - c)


def _cond_only(u, c, w):
    return c


def _no_base(u, c, w):
    return w * (c - u)


def _mistakes(*entries: Mistake) -> dict[str, Mistake]:
    catalog: dict[str, Mistake] = {}
    for m in entries:
        if m.id in catalog:
            raise ValueError(f"mistake id {m.id!r} is in the catalog twice")
        catalog[m.id] = replace(m, simulations=MappingProxyType(dict(m.simulations)))  # read-only for graders
    return catalog


# ------------------------------------------------------------------------- the catalog
MISTAKES: dict[str, Mistake] = _mistakes(
    Mistake(
        "param_count_of_another_model",
        "param_count",
        "that is the parameter count of the {other}",
    ),
    Mistake("param_count_in_millions", "param_count", "it looks like millions; store the exact count"),
    Mistake(
        "ids_not_padded",
        "tokenize",
        f"the tokenizer was called without padding='max_length', max_length={C.MAX_TOKENS}: "
        f"the ids must be padded to {C.MAX_TOKENS}",
    ),
    Mistake(
        "tokenize_no_truncation",
        "tokenize",
        f"long prompts must be cut with truncation=True (CLIP takes at most {C.MAX_TOKENS} tokens)",
    ),
    Mistake("batch_encoding", "tokenize", "the tokenizer's BatchEncoding was returned: use .input_ids"),
    Mistake("tokenizer_dict", "tokenize", "a dict of tokenizer outputs was returned: use ['input_ids']"),
    Mistake("ids_as_list", "tokenize", "a Python list was returned: call the tokenizer with return_tensors='pt'"),
    Mistake(
        "pooled_output",
        "encode_prompt",
        f"the pooled output [1,{C.EMBED_DIM}] was returned instead of last_hidden_state "
        f"[1,{C.MAX_TOKENS},{C.EMBED_DIM}]",
    ),
    Mistake(
        "encoder_output_object",
        "encode_prompt",
        "the text encoder's output object was returned: use [0] or .last_hidden_state",
    ),
    Mistake(
        "encoder_output_tuple",
        "encode_prompt",
        "the text encoder's output tuple was returned: take element [0] (last_hidden_state)",
    ),
    Mistake(
        "encode_no_padding",
        "encode_prompt",
        f"the prompt was not padded to {C.MAX_TOKENS} tokens before encoding",
    ),
    Mistake(
        "encode_attention_mask",
        "encode_prompt",
        "the attention mask was passed to the text encoder: SD1.5 encodes the padded ids without a mask, "
        "so the padding positions' embeddings differ",
        {"encode_prompt": _encode_with_mask},
    ),
    Mistake(
        "embeddings_of_wrong_prompt",
        "encode_prompt",
        "embeddings of the wrong prompt (it encodes {other!r} instead of {prompt!r})",
    ),
    Mistake(
        "rand_not_randn",
        "initial_latents",
        "latents look uniform in [0, 1): torch.rand was used where torch.randn (standard normal) belongs",
        {"initial_latents": _latents_rand},
        replay={"init": "rand"},
    ),
    Mistake(
        "latents_image_size",
        "initial_latents",
        f"latents at image resolution: the latent grid is {C.IMAGE_SIZE}/{C.VAE_DOWNSCALE} = {C.LATENT_SIZE}",
    ),
    Mistake(
        "generator_ignored",
        "initial_latents",
        "two calls with generators seeded alike gave different latents: draw the noise with "
        "generator=generator (and on the generator's device)",
    ),
    Mistake(
        "init_noise_sigma_forgotten",
        "initial_latents",
        "latents have std 1 instead of scheduler.init_noise_sigma: multiply the noise by init_noise_sigma "
        "(≈14.6 for Euler-type schedulers, 1 for PNDM/DDIM)",
        {"initial_latents": _latents_unscaled, "generate": _generate(init_sigma=False)},
    ),
    Mistake(
        "last_timestep_first",
        "denoise_step",
        "that is the last (least noisy) timestep; denoising starts at timesteps[0]",
    ),
    Mistake(
        "conditioned_on_wrong_prompt",
        "denoise_step",
        "the U-Net prediction is conditioned on {other!r}, not {prompt!r}",
    ),
    # Before the CFG mistakes: with uncond = cond, guidance is a no-op, so in generate this one's
    # output equals guidance_ignored's, and a wrong unconditional prompt is the likelier cause.
    Mistake(
        "uncond_from_prompt",
        "generate",
        'the unconditional embeddings were computed from the prompt instead of the empty prompt "": '
        "guidance then has nothing to push against",
        {"generate": _generate(uncond_prompt=True)},
    ),
    Mistake(
        "cfg_swapped",
        "cfg_combine",
        "your CFG equals eps_cond + w·(eps_uncond − eps_cond): the two predictions are swapped "
        "(check the order of torch.cat([uncond, cond]) against .chunk(2))",
        _in_loop(_swapped),
        formula=_swapped,
        replay={"swap": True},
    ),
    Mistake(
        "cfg_one_plus_w",
        "cfg_combine",
        "your CFG equals eps_cond + w·(eps_cond − eps_uncond), the (1 + w) convention of the CFG paper; "
        "SD1.5's guidance_scale w means eps_uncond + w·(eps_cond − eps_uncond)",
        formula=lambda u, c, w: c + w * (c - u),
    ),
    Mistake(
        "cfg_wrong_sign",
        "cfg_combine",
        "your CFG equals eps_uncond − w·(eps_cond − eps_uncond): the guidance direction has the wrong sign",
        formula=lambda u, c, w: u - w * (c - u),
    ),
    Mistake(
        "cfg_uncond_not_subtracted",
        "cfg_combine",
        "your CFG equals eps_uncond + w·eps_cond: the '− eps_uncond' inside the bracket is missing",
        formula=lambda u, c, w: u + w * c,
    ),
    Mistake(
        "cfg_inplace",
        "cfg_combine",
        "cfg_combine changed {names} in place (e.g. `eps_cond -= eps_uncond`): the U-Net predictions "
        "must stay intact; compute into a new tensor",
    ),
    Mistake(
        "guidance_ignored",
        "cfg_combine",
        "your CFG returns eps_cond unchanged (as if w = 1): the guidance scale is ignored",
        _in_loop(_cond_only),
        formula=_cond_only,
    ),
    Mistake(
        "condition_ignored",
        "cfg_combine",
        "your CFG returns eps_uncond unchanged: the text condition is ignored",
        formula=lambda u, c, w: u,
    ),
    Mistake(
        "cfg_without_uncond",
        "cfg_combine",
        "the guided noise is w·(eps_cond − eps_uncond): eps_uncond must be added back",
        {"denoise_step": _denoise(combine=_no_base)},
    ),
    Mistake(
        "scale_model_input_forgotten",
        "denoise_step",
        "scale_model_input was not called: sigma-based schedulers (Euler, LMS, Heun) need the U-Net input "
        "divided by sqrt(sigma²+1) via scheduler.scale_model_input(latent_model_input, t)",
        {"denoise_step": _denoise(scale_input=False), "generate": _generate(denoise=_denoise(scale_input=False))},
    ),
    Mistake(
        "prev_sample_missing",
        "denoise_step",
        "a {type_name}, not a tensor: `.prev_sample` is missing after scheduler.step(...)",
    ),
    Mistake(
        "step_tuple",
        "denoise_step",
        "scheduler.step(..., return_dict=False) returns a tuple: take element [0]",
    ),
    Mistake(
        "step_generator_ignored",
        "denoise_step",
        "two runs with generators seeded alike differ: pass generator= to scheduler.step "
        "(DDPM draws noise in every step)",
    ),
    Mistake(
        "ddpm_noise_missing",
        "denoise_step",
        "the posterior mean without noise; DDPM's step adds σ·noise (σ = {std:.4g}) at t > 0",
    ),
    Mistake(
        "scaling_factor_not_divided",
        "decode_latents",
        "the latents were not divided by the VAE scaling factor (vae.config.scaling_factor) before vae.decode",
        {"decode_latents": _decode_unscaled, "generate": _generate(decode=_decode_unscaled)},
    ),
    Mistake(
        "scaling_factor_multiplied",
        "decode_latents",
        "the latents were multiplied by the VAE scaling factor before decoding; divide by it instead "
        "(multiplying belongs to encoding)",
        {"decode_latents": _decode_multiplied},
    ),
    Mistake(
        "decode_rescaled",
        "decode_latents",
        "decode_latents already maps the image to [0, 1]; it must return the raw VAE output in ~[-1, 1] "
        "(rescaling is to_pil's job)",
        {"decode_latents": _decode_rescaled},
    ),
    Mistake("decode_differs", "decode_latents", "the final latents are right but the decode step differs"),
    Mistake("decoder_output", "decode_latents", "vae.decode returns a DecoderOutput, not a tensor: use .sample"),
    Mistake(
        "image_not_tensor",
        "decode_latents",
        f"{{function}} must return the raw decoded tensor [1,3,{C.IMAGE_SIZE},{C.IMAGE_SIZE}]; to_pil converts it",
    ),
    Mistake(
        "image_channels_last",
        "decode_latents",
        f"the image is channels-last [1,{C.IMAGE_SIZE},{C.IMAGE_SIZE},3]; "
        f"the raw image is [1,3,{C.IMAGE_SIZE},{C.IMAGE_SIZE}]",
    ),
    Mistake(
        "pil_not_rescaled",
        "to_pil",
        "the image was not mapped from [-1, 1] to [0, 1] (x / 2 + 0.5) before scaling to 0..255",
        {"to_pil": _pil(_pil_no_rescale)},
    ),
    Mistake(
        "pil_not_clamped",
        "to_pil",
        "values outside [0, 1] were not clamped before the uint8 cast, so they wrapped around "
        "(bright pixels turned dark)",
        {"to_pil": _pil(_pil_no_clamp)},
    ),
    Mistake(
        "pil_bgr",
        "to_pil",
        "the colour channels are in BGR order: red and blue are swapped",
        {"to_pil": _pil(_pil_bgr)},
    ),
    Mistake("pil_numpy_array", "to_pil", "a numpy array was returned: wrap it with PIL.Image.fromarray(array)"),
    Mistake(
        "pil_tensor",
        "to_pil",
        "a tensor was returned: to_pil must build a PIL.Image (Image.fromarray on uint8 HWC)",
    ),
    Mistake("pil_mode", "to_pil", "the image has mode {mode!r}; expected 'RGB' (uint8 HWC array)"),
    Mistake(
        "timesteps_reversed",
        "generate",
        "the timesteps run backwards (walked in increasing order): iterate scheduler.timesteps as given, "
        "from noisy to clean",
        {"generate": _generate(reverse=True)},
        replay={"reverse": True},
    ),
    Mistake("returned_none", ANY, "returned None: the function is missing a return statement"),
    Mistake(
        "numpy_array",
        ANY,
        "a numpy array was returned where a torch.Tensor belongs (torch.from_numpy or keep it a tensor)",
    ),
    Mistake(
        "delegation",
        ANY,
        "delegation: the work must be the submission's own, not handed to another implementation "
        "(a library's pipeline or loop, or the reference)",
    ),
    # Found by the notebook grader against the reference's predictions; in a whole generation
    # it equals cfg_swapped (the formula on swapped inputs), which names it there.
    Mistake(
        "cfg_chunks_swapped",
        "denoise_step",
        "`{uncond}` holds the prediction conditioned on the prompt and `{cond}` the unconditional one: "
        "the batched U-Net output was unpacked in the wrong order (.chunk(2) returns the halves in the "
        "order of torch.cat([...]) in encoder_hidden_states)",
    ),
)


def named(result: CheckResult, mistake: str, context: str | None = None, **fields: Any) -> CheckResult:
    """Failed ``result`` explained as the catalog's ``mistake``: its id in ``result.mistake``
    (what the class page counts), its words (filled with ``fields``) as the message's first
    line (what a student sees of a hidden check), then ``context`` (default: the result's own
    message).  An id outside the catalog raises KeyError: every id a grader emits is catalogued."""
    words = MISTAKES[mistake].words(**fields)
    if result.passed:
        return result
    context = result.message if context is None else context
    message = f"{words}\n{context}" if context else words
    return replace(result, message=message, mistake=mistake)


def simulated(function: str) -> list[tuple[Mistake, Callable]]:
    """The mistakes that show in API ``function``, each with ``function`` as it would be written."""
    return [(m, m.simulations[function]) for m in MISTAKES.values() if function in m.simulations]


def cfg_formulas() -> list[Mistake]:
    """The CFG mistakes that are a formula of (eps_uncond, eps_cond, w)."""
    return [m for m in MISTAKES.values() if m.formula is not None]


def replayed() -> list[tuple[Mistake, Mapping[str, Any]]]:
    """The mistakes the notebook grader can replay in the lesson's generation loop, with the replay's options."""
    return [(m, m.replay) for m in MISTAKES.values() if m.replay is not None]


def uniform_draw(x: torch.Tensor) -> bool:
    """Does ``x`` look like ``torch.rand(...)`` times some scale (``init_noise_sigma``) rather than a normal draw?

    One detector for every grader: no negative values and a mean near half the largest.
    """
    if not x.numel() or not x.is_floating_point():
        return False
    x = x.detach().double()
    top = float(x.max())
    return float(x.min()) >= 0 and abs(float(x.mean()) - top / 2) < 0.05 * top
