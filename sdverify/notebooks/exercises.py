"""The checks an exercise spec can name, computed in the grader from extracted values.

Each check is ``fn(ctx, var, **params) -> CheckResult``: ``ctx`` holds the lesson and
the reference components (the same zoo files the kernel loaded, float32 on CPU),
``var(name)`` returns a :class:`~sdverify.untrusted.value.UntrustedValue` of the exercise's
snapshot.  Parameters listed in ``register(...)`` name notebook variables (their
defaults are the lesson's names); the spec may rename them.  Checks compare against
references recomputed on the notebook's *own* upstream values (its ``z_t``, its
``eps_uncond``...), so one mistake costs points only where it is made.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch

from sdverify import contract as C
from sdverify import reference as R
from sdverify import zoo
from sdverify.mistakes import MISTAKES, named, replayed, uniform_draw
from sdverify.notebooks import forms
from sdverify.notebooks.extraction import KERNEL_GENERATORS, KERNEL_SEED
from sdverify.properties.cfg import name_cfg_mistake
from sdverify.results import CheckResult, compare_tensors, fail, ok
from sdverify.schedulers import SCHEDULERS, make_scheduler
from sdverify.untrusted.value import UntrustedValue

VarLookup = Callable[[str], UntrustedValue]


@lru_cache(maxsize=2)
def _components(folder: Path) -> zoo.Components:
    return zoo.load_components(folder, private=True)  # never a view of a file a kernel can reach


# The kernel reports at most this many generators' seeds; a forged report gets no more replays.
MAX_GENERATOR_SEEDS = 16
# U-Net predictions an ExerciseContext keeps: Exercise 3 asks for at most four (two prompts,
# the latents as given and as scaled by scale_model_input).
UNET_PREDICTIONS_KEPT = 8
CheckFn = Callable[..., CheckResult]
HALVES = ("uncond", "cond")  # the order of CFG's concatenated batch (diffusers' lessons and pipelines)


@dataclass(frozen=True)
class Lesson:
    """What the lesson asks for: the facts the checks compare against."""

    prompt: str = "a cat sitting on a beach at sunset"
    seed: int = 42
    steps: int = C.NUM_INFERENCE_STEPS
    guidance_scale: float = C.GUIDANCE_SCALE
    scheduler: str = "ddpm"
    # Spec format 2 only (a v1 [lesson] cannot name them):
    negative_prompt: str = ""  # the unconditional prompt of CFG
    height: int = C.IMAGE_SIZE
    width: int = C.IMAGE_SIZE

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (1, C.LATENT_CHANNELS, self.height // C.VAE_DOWNSCALE, self.width // C.VAE_DOWNSCALE)

    @property
    def image_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.height, self.width)

    def facts(self) -> dict[str, Any]:
        """The facts a verdict depends on; v2's at their defaults are left out, so a v1 spec's
        exercise definitions (resume digests) stay what they were."""
        v2 = {f.name: f.default for f in fields(Lesson) if f.name not in V1_FACTS}
        return {k: v for k, v in asdict(self).items() if k not in v2 or v != v2[k]}


V1_FACTS = ("prompt", "seed", "steps", "guidance_scale", "scheduler")  # the [lesson] keys of format 1


@dataclass(frozen=True)
class CheckDef:
    fn: CheckFn
    variables: tuple[str, ...]  # parameters whose values are notebook variable names (paths in v2)
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # parameter -> the values it takes


CHECKS: dict[str, CheckDef] = {}


def register(*variables: str, choices: Mapping[str, tuple[Any, ...]] | None = None) -> Callable[[CheckFn], CheckFn]:
    def add(fn: CheckFn) -> CheckFn:
        CHECKS[fn.__name__] = CheckDef(fn, variables, choices or {})
        return fn

    return add


@dataclass
class ExerciseContext:
    """Reference side of grading: components loaded once, references cached per worker."""

    lesson: Lesson
    folder: Path
    contract_params: bool  # True for the sd15 preset or real weights: counts must be SD1.5's
    version: int = 1  # the spec's format: 2 accepts every form in which real lessons hold a value
    # False where only pass or fail matters (the drafter's question): a failure is not named, so
    # no mistaken generation is replayed for it (each is a whole generation).
    names_mistakes: bool = True
    _cache: dict[Any, Any] = field(default_factory=dict)
    _predictions: dict[Any, torch.Tensor] = field(default_factory=dict)  # see unet()

    @property
    def components(self) -> zoo.Components:
        return _components(self.folder)  # one load for every exercise's facts

    def scheduler(self):
        """A fresh scheduler of the lesson's kind, from the weights' scheduler config."""
        return make_scheduler(self.lesson.scheduler, dict(self.components.scheduler.config))

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def timesteps(self) -> torch.Tensor:
        def compute() -> torch.Tensor:
            scheduler = self.scheduler()
            scheduler.set_timesteps(self.lesson.steps)
            return scheduler.timesteps

        return self.cached("timesteps", compute)

    def embeddings(self, prompt: str) -> torch.Tensor:
        c = self.components
        return self.cached(("embed", prompt), lambda: R.encode_prompt(c.tokenizer, c.text_encoder, prompt))

    def unet(self, latents: torch.Tensor, t: torch.Tensor, prompt: str) -> torch.Tensor:
        """The U-Net's prediction, kept for the last few inputs: one notebook's checks ask it
        of the same latents several times (a class's latents all differ: the memory stays bounded)."""
        x = latents.detach().float().contiguous()
        key = (prompt, float(t), tuple(x.shape), hashlib.sha256(x.numpy().tobytes()).hexdigest())
        if key not in self._predictions:
            with torch.no_grad():
                self._predictions[key] = self.components.unet(
                    x, t, encoder_hidden_states=self.embeddings(prompt)
                ).sample
            while len(self._predictions) > UNET_PREDICTIONS_KEPT:
                self._predictions.pop(next(iter(self._predictions)))
        return self._predictions[key]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.components.vae.decode(latents.float()).sample

    def noise(self, seed: int) -> torch.Tensor:
        """The lesson's first draw from ``seed`` (what a CPU generator seeded alike draws too)."""

        def compute() -> torch.Tensor:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return torch.randn(self.lesson.latent_shape)

        return self.cached(("noise", seed), compute)

    def param_counts(self) -> dict[str, int]:
        counts = self.cached("params", self.components.param_counts)
        return {**counts, "total": sum(counts.values())}

    def replay(self, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The lesson's Exercise 4, replayed from ``seed``: (final latents, image).

        Draws in the lesson's order, ``z`` first, then each step's noise (DDPM, Euler...),
        from ``torch.manual_seed(seed)``: on the CPU, what a ``torch.Generator`` seeded alike
        and passed to ``randn`` and ``scheduler.step`` draws too.  Two U-Net calls per step,
        as the lesson writes them (a batched call rounds differently).
        """

        def compute() -> tuple[torch.Tensor, torch.Tensor]:
            z = self._denoised(seed)
            return z, R.decode_latents(self.components.vae, z)

        return self.cached(("replay", seed), compute)

    def mistaken_replay(self, seed: int, mistake: Mapping[str, Any]) -> torch.Tensor | None:
        """The final latents of :meth:`replay` with a catalog mistake made (its ``replay`` options),
        or None when that simulation cannot run on the lesson's scheduler: not the mistake made."""

        def compute() -> torch.Tensor | None:
            try:  # e.g. reversed timesteps run multistep and sigma schedulers off their tables
                return self._denoised(seed, **mistake)
            except Exception:
                return None

        return self.cached(("replay", seed, tuple(sorted(mistake.items()))), compute)

    def _denoised(self, seed: int, *, reverse: bool = False, swap: bool = False, init: str = "randn") -> torch.Tensor:
        w = self.lesson.guidance_scale
        combine = (lambda u, k, w: R.cfg_combine(k, u, w)) if swap else R.cfg_combine
        step = partial(R.guided_step, combine=combine, batched=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cond, uncond = self.embeddings(self.lesson.prompt), self.embeddings(self.lesson.negative_prompt)
            scheduler = self.scheduler()
            scheduler.set_timesteps(self.lesson.steps)
            draw = torch.rand if init == "rand" else torch.randn
            z = draw(self.lesson.latent_shape) * scheduler.init_noise_sigma
            return R.denoise_loop(self.components.unet, scheduler, z, cond, uncond, w, step=step, reverse=reverse)

    def replay_seeds(self, var: VarLookup) -> list[int]:
        """Seeds a replay tries: the lesson's, the one the kernel last set (``torch.initial_seed()``
        when the variables were read), then each seeded ``torch.Generator``'s (so a comment full of
        seeds costs nothing, and ``generator=`` idioms replay)."""
        generators = var(KERNEL_GENERATORS).value
        found = [var(KERNEL_SEED).value, *(generators[:MAX_GENERATOR_SEEDS] if isinstance(generators, list) else [])]
        kernel = [s for s in found if isinstance(s, int) and not isinstance(s, bool)]
        return list(dict.fromkeys([self.lesson.seed, *kernel]))


# --- helpers ---------------------------------------------------------------------


def _tensor(id: str, var: UntrustedValue, shape: Sequence[int] | None, what: str) -> torch.Tensor | CheckResult:
    """The variable as a tensor of ``shape``, or a failure saying what was found instead."""
    expected = f"{what} (a tensor{' of shape ' + str(list(shape)) if shape else ''})"
    if var.kind == "unreadable":
        return fail(id, f"`{var.name}` could not be read: {var.desc.get('error')}")
    if var.tensor is None:
        return fail(id, f"`{var.name}` is {var.describe()}; expected {expected}")
    if shape is not None and tuple(var.tensor.shape) != tuple(shape):
        return fail(id, f"`{var.name}` has shape {list(var.tensor.shape)}; expected {list(shape)}")
    return var.tensor


def _tensors(
    id: str, clause: str, *wanted: tuple[UntrustedValue, Sequence[int] | None, str]
) -> list[torch.Tensor] | CheckResult:
    """Each ``(variable, shape, what)`` as a tensor, or the first failure labelled with ``clause``."""
    found = []
    for var, shape, what in wanted:
        got = _tensor(id, var, shape, what)
        if isinstance(got, CheckResult):
            return _labelled(got, clause)
        found.append(got)
    return found


def _scalar(var: UntrustedValue) -> float | None:
    if var.kind == "value" and isinstance(var.value, (int, float)) and not isinstance(var.value, bool):
        return float(var.value)
    if var.tensor is not None and var.tensor.numel() == 1:
        return float(var.tensor.reshape(()).item())
    return None


def _timestep(ctx: ExerciseContext, t: float) -> torch.Tensor:
    """A timestep read from the notebook as the lesson's scheduler holds it: its own entry where
    it has one (int64 for DDPM, float for LMS or Euler, whose ``step`` refuses an integer tensor)."""
    steps = ctx.timesteps()
    found = (steps.double() == t).nonzero()
    if len(found):
        return steps[int(found[0, 0])]
    return torch.tensor(int(t)) if t == int(t) else torch.tensor(t)


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> bool:
    return actual.shape == expected.shape and bool(((actual.double() - expected.double()).abs() <= atol).all())


def _labelled(result: CheckResult, clause: str, prefix: str = "") -> CheckResult:
    message = f"{prefix}: {result.message}" if prefix and not result.passed else result.message
    return replace(result, clause=clause, message=message)


def normal_statistics(x: torch.Tensor) -> tuple[float, float, str | None]:
    """(mean, std, problem): is ``x`` a plausible standard-normal sample?

    Bounds are ``NORMAL_SIGMAS`` standard errors of the sample mean (1/sqrt(n)) and std
    (1/sqrt(2n)); uniform draws (``torch.rand``) are named in the catalog's words.
    """
    x = x.detach().double().reshape(-1)
    n = x.numel()
    mean, std = float(x.mean()), float(x.std())
    if not math.isfinite(mean) or not math.isfinite(std):
        return mean, std, "contains NaN or inf"
    if uniform_draw(x):
        return mean, std, MISTAKES["rand_not_randn"].message
    if abs(mean) > C.GRADE_NORMAL_SIGMAS / math.sqrt(n) or abs(std - 1) > C.GRADE_NORMAL_SIGMAS / math.sqrt(2 * n):
        return mean, std, f"mean {mean:.4f} and std {std:.4f} are not those of a standard normal sample of {n} values"
    return mean, std, None


# --- Exercise 1 -------------------------------------------------------------------

_COMPONENT_WORDS = {
    "text_encoder": "CLIP text encoder",
    "vae": "VAE",
    "unet": "U-Net",
    "total": "three models together",
}


@register("value")
def param_count(ctx: ExerciseContext, var: VarLookup, *, value: str, component: str) -> CheckResult:
    """A parameter count equals the loaded component's (and SD1.5's with real-size weights)."""
    id, clause = f"{value}", f"`{value}` = parameters of the {_COMPONENT_WORDS.get(component, component)}"
    counts = ctx.param_counts()
    if component not in counts:
        raise ValueError(f"param_count: component {component!r} unknown; expected one of {sorted(counts)}")
    expected = counts[component]
    contract = {
        "text_encoder": C.PARAMS_TEXT_ENCODER,
        "vae": C.PARAMS_VAE,
        "unet": C.PARAMS_UNET,
        "total": C.PARAMS_TOTAL,
    }
    v = var(value)
    got = _scalar(v)
    if got is None:
        return fail(id, f"`{value}` is {v.describe()}; expected an int, the number of parameters", clause)
    if ctx.contract_params and expected != contract[component]:
        return fail(
            id,
            f"the loaded {_COMPONENT_WORDS[component]} has {expected:,} parameters, "
            f"not SD1.5's {contract[component]:,}",
            clause,
        )
    if got == expected:
        return ok(id, clause, value=int(got))
    result = fail(
        id, f"`{value}` = {got:,.0f} but the {_COMPONENT_WORDS[component]} has {expected:,} parameters", clause
    )
    other = next((k for k, n in counts.items() if n == got), None)
    if other:
        return named(result, "param_count_of_another_model", other=_COMPONENT_WORDS[other])
    if abs(got * 1e6 - expected) < 1e6:
        return named(result, "param_count_in_millions")
    return result


# --- Exercise 2 -------------------------------------------------------------------


@register("value")
def token_ids(ctx: ExerciseContext, var: VarLookup, *, value: str = "token_ids") -> CheckResult:
    """Token ids of the lesson prompt: [1,77] int64, BOS..EOS then EOS padding."""
    id, clause = (
        value,
        f"`{value}` = tokenizer(prompt, padding='max_length', max_length={C.MAX_TOKENS}, truncation=True)",
    )
    found = forms.token_ids(var(value)) if ctx.version >= 2 else var(value)  # v2: list, [77], BatchEncoding
    got = _tensors(id, clause, (found, None, "token ids"))
    if isinstance(got, CheckResult):
        return got
    (ids,) = got
    if tuple(ids.shape) != C.TOKEN_IDS_SHAPE:
        result = fail(id, f"`{value}` has shape {list(ids.shape)}; expected {list(C.TOKEN_IDS_SHAPE)}", clause)
        if ids.shape[-1] < C.MAX_TOKENS:
            return named(result, "ids_not_padded")
        return result
    if ids.dtype != C.TOKEN_DTYPE:
        return fail(
            id, f"`{value}` has dtype {ids.dtype}; expected {C.TOKEN_DTYPE} (what the tokenizer returns)", clause
        )
    expected = R.tokenize(ctx.components.tokenizer, ctx.lesson.prompt)
    return _labelled(compare_tensors(id, ids, expected, atol=0), clause, f"ids of {ctx.lesson.prompt!r}")


@register("value", choices={"half": ("cond", "uncond")})
def prompt_embeddings(
    ctx: ExerciseContext, var: VarLookup, *, value: str, prompt: str | None = None, half: str | None = None
) -> CheckResult:
    """CLIP ``last_hidden_state`` of ``prompt`` (the lesson prompt by default; "" for uncond).

    With ``half``, ``value`` is CFG's concatenation [uncond, cond] ([2,77,768]) and the check
    reads that half (whose prompt is then the default: the negative prompt for "uncond").
    """
    if prompt is None:
        prompt = ctx.lesson.negative_prompt if half == "uncond" else ctx.lesson.prompt
    id, clause = value, f"`{value}` = text_encoder(ids of {prompt!r}).last_hidden_state"
    found = var(value)
    if half is not None:
        clause = f"`{value}`[{HALVES.index(half)}] = text_encoder(ids of {prompt!r}).last_hidden_state"
        shape = (len(HALVES), *C.EMBEDDINGS_SHAPE[1:])
        got = _tensors(id, clause, (found, shape, "CFG's [uncond, cond] embeddings"))
        if isinstance(got, CheckResult):
            return got
        found = forms.as_tensor(found, got[0][HALVES.index(half)].unsqueeze(0))
    got = _tensors(id, clause, (found, C.EMBEDDINGS_SHAPE, f"CLIP embeddings of {prompt!r}"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    result = compare_tensors(id, x.float(), ctx.embeddings(prompt), atol=C.GRADE_ATOL_FP32, clause=clause)
    if not result.passed:
        for other in {ctx.lesson.prompt, ctx.lesson.negative_prompt} - {prompt}:
            if _close(x, ctx.embeddings(other), C.GRADE_ATOL_FP32):
                result = named(result, "embeddings_of_wrong_prompt", f"in `{value}`", other=other, prompt=prompt)
    return result


# --- Exercise 3 -------------------------------------------------------------------


@register("value")
def scheduler_setup(ctx: ExerciseContext, var: VarLookup, *, value: str = "scheduler") -> CheckResult:
    """The lesson's scheduler class, from the weights' config, with ``set_timesteps(steps)``."""
    cls = SCHEDULERS[ctx.lesson.scheduler][1]
    id, clause = (
        value,
        f"`{value}` = {cls}.from_pretrained(model_id, subfolder='scheduler'), set_timesteps({ctx.lesson.steps})",
    )
    v = var(value)
    if v.kind != "scheduler":
        return fail(id, f"`{value}` is {v.describe()}; expected a {cls}", clause)
    if not v.type_name == cls:
        return fail(id, f"`{value}` is {v.describe()}; the lesson uses {cls}", clause)
    steps = v.tensors.get(f"{value}.timesteps")
    expected = ctx.timesteps()
    if steps is None or steps.shape != expected.shape:
        n = "no" if steps is None else len(steps)
        return fail(
            id,
            f"`{value}` has {n} timesteps; expected {len(expected)}: call {value}.set_timesteps({ctx.lesson.steps})",
            clause,
        )
    return compare_tensors(id, steps, expected, atol=0, clause=clause)


@register("value", "dtype", "device")
def latent_noise(
    ctx: ExerciseContext, var: VarLookup, *, value: str = "z_t", dtype: str = "dtype", device: str = "device"
) -> CheckResult:
    """A standard-normal latent [1,4,64,64] in the notebook's own dtype and on its device."""
    id, clause = value, f"`{value}` ~ N(0, 1), shape {list(ctx.lesson.latent_shape)}, on `{device}` in `{dtype}`"
    got = _tensors(id, clause, (var(value), ctx.lesson.latent_shape, "the initial latent"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    has_dtype, has_device = str(x.dtype), str(var(value).desc.get("device"))
    want_dtype, want_device = var(dtype), var(device)
    if want_dtype.kind == "value" and str(want_dtype.value) != has_dtype:
        return fail(id, f"`{value}` is {has_dtype} but `{dtype}` is {want_dtype.value}", clause)
    if want_device.kind == "value" and torch.device(str(want_device.value)).type != torch.device(has_device).type:
        return fail(id, f"`{value}` is on {has_device} but `{device}` is {want_device.value}", clause)
    mean, std, problem_text = normal_statistics(x)
    if problem_text == MISTAKES["rand_not_randn"].message:
        return named(fail(id, problem_text, clause, mean=mean, std=std), "rand_not_randn", f"in `{value}`")
    if problem_text:
        return fail(id, f"`{value}`: {problem_text}", clause, mean=mean, std=std)
    return ok(id, clause, mean=mean, std=std)


@register("value")
def timestep(ctx: ExerciseContext, var: VarLookup, *, value: str = "t", index: int = 0) -> CheckResult:
    """``t`` is ``scheduler.timesteps[index]`` (the first, noisiest step by default)."""
    id, clause = value, f"`{value}` = scheduler.timesteps[{index}]"
    steps = ctx.timesteps()
    got = _scalar(var(value))
    if got is None:
        return fail(id, f"`{value}` is {var(value).describe()}; expected a timestep", clause)
    expected = float(steps[index])
    if got == expected:
        return ok(id, clause, value=got)
    result = fail(id, f"`{value}` = {got:g}; expected {expected:g}", clause)
    if got == float(steps[-1]):
        return named(result, "last_timestep_first")
    return result


@register("value", "latents", "timestep")
def unet_prediction(
    ctx: ExerciseContext,
    var: VarLookup,
    *,
    value: str,
    prompt: str | None = None,
    latents: str = "z_t",
    timestep: str = "t",
) -> CheckResult:
    """``unet(latents, t, embeddings of prompt).sample`` on the notebook's own latents and t."""
    prompt = ctx.lesson.prompt if prompt is None else prompt
    id, clause = (
        value,
        f"`{value}` = unet({latents}, {timestep}, encoder_hidden_states=<embeddings of {prompt!r}>).sample",
    )
    got = _tensors(
        id,
        clause,
        (var(value), ctx.lesson.latent_shape, "a noise prediction"),
        (var(latents), ctx.lesson.latent_shape, "the latent"),
    )
    if isinstance(got, CheckResult):
        return got
    x, z = got
    t = _scalar(var(timestep))
    if t is None:
        return fail(id, f"cannot recompute: `{timestep}` is {var(timestep).describe()}", clause)
    t_tensor = _timestep(ctx, t)
    result = compare_tensors(id, x.float(), ctx.unet(z, t_tensor, prompt), atol=C.GRADE_ATOL_FP32, clause=clause)
    if not result.passed:
        for other in {ctx.lesson.prompt, ctx.lesson.negative_prompt} - {prompt}:
            if _close(x, ctx.unet(z, t_tensor, other), C.GRADE_ATOL_FP32):
                result = named(result, "conditioned_on_wrong_prompt", f"in `{value}`", other=other, prompt=prompt)
    return result


@register("value", "uncond", "cond", "latents", "timestep")
def cfg_combination(
    ctx: ExerciseContext,
    var: VarLookup,
    *,
    value: str = "eps_cfg",
    uncond: str = "eps_uncond",
    cond: str = "eps_cond",
    latents: str = "z_t",
    timestep: str = "t",
) -> CheckResult:
    """CFG applied to the notebook's own predictions with the lesson's guidance scale, and
    those predictions not the reference's swapped (a batched call's halves unpacked in the
    wrong order makes a formula that holds on mislabelled variables)."""
    w = ctx.lesson.guidance_scale
    id, clause = value, f"`{value}` = {uncond} + {w:g} · ({cond} − {uncond})"
    got = _tensors(
        id, clause, *((var(name), ctx.lesson.latent_shape, "a noise prediction") for name in (value, uncond, cond))
    )
    if isinstance(got, CheckResult):
        return got
    out, u, c = (x.double() for x in got)
    atol = C.GRADE_ATOL_FP32 * (1 + 2 * abs(w))
    result = compare_tensors(id, out, R.cfg_combine(u, c, w), atol=atol, clause=clause)
    if not result.passed:
        mistake = name_cfg_mistake(out, u, c, w, atol)
        if mistake:
            result = named(result, mistake, "")
    elif _chunks_swapped(ctx, var, u, c, latents, timestep):
        result = named(fail(id, "", clause), "cfg_chunks_swapped", uncond=uncond, cond=cond)
    return result


def _chunks_swapped(
    ctx: ExerciseContext, var: VarLookup, u: torch.Tensor, c: torch.Tensor, latents: str, timestep: str
) -> bool:
    """Are ``u`` and ``c`` the reference's (cond, uncond) predictions at the notebook's ``latents``
    and ``timestep``, as given to the U-Net or scaled by ``scale_model_input``?  False when
    those are not there to recompute from."""
    z, t = var(latents).tensor, _scalar(var(timestep))
    if z is None or t is None or tuple(z.shape) != ctx.lesson.latent_shape or _close(u, c, C.GRADE_ATOL_FP32):
        return False
    t_tensor = _timestep(ctx, t)
    scheduler = ctx.scheduler()
    scheduler.set_timesteps(ctx.lesson.steps)
    try:
        inputs = [z.float(), scheduler.scale_model_input(z.float(), t_tensor)]
    except Exception:  # t is not one of this scheduler's timesteps
        inputs = [z.float()]
    return any(
        _close(u, ctx.unet(x, t_tensor, ctx.lesson.prompt), C.GRADE_ATOL_FP32)
        and _close(c, ctx.unet(x, t_tensor, ctx.lesson.negative_prompt), C.GRADE_ATOL_FP32)
        for x in inputs
    )


def ddpm_posterior_mean_std(
    scheduler, eps: torch.Tensor, t: torch.Tensor, sample: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """(posterior mean, noise std) of one ``scheduler.step``, via its public API.

    ``step`` returns mean + std·n with n drawn from the generator; two seeded calls give
    two equations, solved for the scalar std by least squares, then for the mean.  A
    deterministic scheduler (no ``generator`` parameter, or no noise) gives std 0.
    """
    outs, noises = [], []
    for seed in (0, 1):
        noises.append(torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed), dtype=sample.dtype))
        fresh = copy.deepcopy(scheduler)  # a multistep scheduler's step moves its state on
        kwargs = R.step_kwargs(fresh, torch.Generator().manual_seed(seed))
        outs.append(fresh.step(eps, t, sample, **kwargs).prev_sample)
    dn, do = (noises[0] - noises[1]).double(), (outs[0] - outs[1]).double()
    std = float((do * dn).sum() / (dn * dn).sum())
    return outs[0].double() - std * noises[0].double(), std


@register("value", "latents", "noise_pred", "timestep")
def ddpm_step(
    ctx: ExerciseContext,
    var: VarLookup,
    *,
    value: str = "z_t_minus_1",
    latents: str = "z_t",
    noise_pred: str = "eps_cfg",
    timestep: str = "t",
) -> CheckResult:
    """One DDPM step from the notebook's own latent and guided prediction.

    DDPM adds fresh noise, so the check is on the deterministic part: the residual
    from the posterior mean, divided by the step's std, must be a standard-normal draw.
    """
    return _step(ctx, var, "a DDPM step", value, latents, noise_pred, timestep)


@register("value", "latents", "noise_pred", "timestep")
def scheduler_step(
    ctx: ExerciseContext,
    var: VarLookup,
    *,
    value: str,
    latents: str = "latents",
    noise_pred: str = "noise_pred",
    timestep: str = "t",
) -> CheckResult:
    """One step of the lesson's scheduler (any registered one) from the notebook's own values.

    The reference is a fresh scheduler's step: a multistep scheduler (PNDM, LMS, DPM-Solver,
    UniPC, Heun) remembers earlier steps, so read its step at the loop's first timestep.
    """
    return _step(ctx, var, f"a {SCHEDULERS[ctx.lesson.scheduler][1]} step", value, latents, noise_pred, timestep)


def _step(
    ctx: ExerciseContext, var: VarLookup, what: str, value: str, latents: str, noise_pred: str, timestep: str
) -> CheckResult:
    """``value`` is one step of the lesson's scheduler; a stochastic step is judged on its deterministic part."""
    id, clause = value, f"`{value}` = scheduler.step({noise_pred}, {timestep}, {latents}).prev_sample"
    v = var(value)
    if v.kind == "mapping" and "prev_sample" in v.desc.get("keys", []):
        type_name = v.type_name
        return named(fail(id, "", clause), "prev_sample_missing", f"in `{value}`", type_name=type_name)
    got = _tensors(
        id,
        clause,
        (v, ctx.lesson.latent_shape, "the next latent"),
        (var(latents), ctx.lesson.latent_shape, "the latent"),
        (var(noise_pred), ctx.lesson.latent_shape, "the guided prediction"),
    )
    if isinstance(got, CheckResult):
        return got
    x, z, eps = got
    t = _scalar(var(timestep))
    if t is None:
        return fail(id, f"cannot recompute: `{timestep}` is {var(timestep).describe()}", clause)
    scheduler = ctx.scheduler()
    scheduler.set_timesteps(ctx.lesson.steps)
    mean, std = ddpm_posterior_mean_std(scheduler, eps.float(), _timestep(ctx, t), z.float())
    if std == 0:
        return compare_tensors(id, x.double(), mean, atol=C.GRADE_ATOL_FP32, clause=clause)
    residual = (x.double() - mean) / std
    if float(residual.abs().max()) * std <= C.GRADE_ATOL_FP32:
        return named(fail(id, "", clause), "ddpm_noise_missing", f"in `{value}`", std=std)
    _, _, problem_text = normal_statistics(residual)
    if problem_text:
        return fail(
            id,
            f"`{value}` is not {what} from `{latents}` with `{noise_pred}`: its deviation from the "
            f"posterior mean, in units of the step's σ = {std:.4g}, {problem_text}",
            clause,
        )
    return ok(id, clause, noise_std=std)


# --- Exercise 4 -------------------------------------------------------------------


@register("value")
def image_shape(ctx: ExerciseContext, var: VarLookup, *, value: str = "image") -> CheckResult:
    """The decoded image: [1,3,512,512], finite."""
    id, clause = f"{value}_shape", f"`{value}` is the raw VAE output, shape {list(ctx.lesson.image_shape)}"
    got = _tensors(id, clause, (var(value), ctx.lesson.image_shape, "the decoded image"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    if not bool(torch.isfinite(x).all()):
        return fail(id, f"`{value}` contains NaN or inf", clause)
    return ok(id, clause)


@register("value", "latents")
def image_decode(ctx: ExerciseContext, var: VarLookup, *, value: str = "image", latents: str = "z") -> CheckResult:
    """``image`` is ``vae.decode(latents / scaling_factor).sample`` of the notebook's final latents.

    The rebinding idiom (``latents = 1 / 0.18215 * latents`` then ``vae.decode(latents)``)
    leaves the divided latents in ``latents``: accepted when, times the scaling factor, they
    are the final latents of a replay (:func:`generation_replay`'s, cached).
    """
    sf = ctx.components.vae.config["scaling_factor"]
    id, clause = f"{value}_decode", f"`{value}` = vae.decode({latents} / vae.config.scaling_factor).sample"
    got = _tensors(
        id,
        clause,
        (var(value), ctx.lesson.image_shape, "the decoded image"),
        (var(latents), ctx.lesson.latent_shape, "the final latent"),
    )
    if isinstance(got, CheckResult):
        return got
    x, z = got
    result = compare_tensors(id, x.float(), ctx.decode(z / sf), atol=C.GRADE_ATOL_FP32, clause=clause)
    if result.passed or not _close(x, ctx.decode(z), C.GRADE_ATOL_FP32):
        if not result.passed and _close(x, ctx.decode(z * sf), C.GRADE_ATOL_FP32):
            result = named(result, "scaling_factor_multiplied", f"`{latents}` (scaling factor {sf:g})")
        return result
    if _rebound(ctx, var, z.float(), sf):
        return ok(id, clause, rebound=True)
    return named(result, "scaling_factor_not_divided", f"`{latents}` (scaling factor {sf:g})")


def _rebound(ctx: ExerciseContext, var: VarLookup, z: torch.Tensor, sf: float) -> bool:
    """Were the final latents ``z`` already divided by the scaling factor ``sf`` (rebound)?
    Yes when ``z · sf``, not ``z``, is a replay's final latents: the correct replay from any
    of the notebook's seeds, or one with a catalog mistake made in the loop."""
    for seed in ctx.replay_seeds(var):
        final = ctx.replay(seed)[0]
        if _close(z, final, C.GRADE_ATOL_REPLAY):
            return False
        if _close(z * sf, final, C.GRADE_ATOL_REPLAY):
            return True
    return _replayed_mistake(ctx, ctx.replay_seeds(var), z * sf) is not None


@register("value", "latents")
def generation_replay(ctx: ExerciseContext, var: VarLookup, *, value: str = "image", latents: str = "z") -> CheckResult:
    """The image equals the lesson replayed from one of the notebook's seeds (same RNG draws).

    Seeds tried: :meth:`ExerciseContext.replay_seeds`.  On a mismatch, known mistakes are
    replayed to name the one made; one that cannot run on this scheduler is not the one.
    """
    cls = SCHEDULERS[ctx.lesson.scheduler][1]
    id = f"{value}_replay"
    clause = (
        f"`{value}` = the lesson's {ctx.lesson.steps}-step {cls} + CFG generation replayed from the notebook's seed"
    )
    try:
        return _generation_replay(ctx, var, id, clause, value, latents)
    except Exception as exc:  # a grader fault: reported under this check's one id
        return fail(id, f"could not be checked: {type(exc).__name__}: {exc}", clause)


def _generation_replay(
    ctx: ExerciseContext, var: VarLookup, id: str, clause: str, value: str, latents: str
) -> CheckResult:
    got = _tensors(id, clause, (var(value), ctx.lesson.image_shape, "the decoded image"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    seeds = ctx.replay_seeds(var)
    replays = {seed: ctx.replay(seed) for seed in seeds}
    for seed, (_, image) in replays.items():
        if _close(x, image, C.GRADE_ATOL_REPLAY):
            return ok(id, clause, seed=seed, max_abs_diff=float((x.double() - image.double()).abs().max()))
    result = compare_tensors(id, x.float(), replays[seeds[0]][1], atol=C.GRADE_ATOL_REPLAY, clause=clause)
    z = var(latents).tensor
    if ctx.names_mistakes and z is not None and tuple(z.shape) == ctx.lesson.latent_shape:
        sf = ctx.components.vae.config["scaling_factor"]
        for final in (z.float(), z.float() * sf):  # as computed, or rebound to latents / scaling factor
            if any(_close(final, replay[0], C.GRADE_ATOL_REPLAY) for replay in replays.values()):
                return named(
                    result, "decode_differs", f"the final latents `{latents}` match the replay but `{value}` does not"
                )
            mistake = _replayed_mistake(ctx, seeds, final)
            if mistake:
                return named(result, mistake, f"the final latents `{latents}` match a replay with this mistake")
    return replace(result, message=f"no replay from seed(s) {seeds} reproduces `{value}`: {result.message}")


def _replayed_mistake(ctx: ExerciseContext, seeds: Sequence[int], z: torch.Tensor) -> str | None:
    """The catalog mistake whose replay, from one of ``seeds``, ends at the final latents ``z``."""
    for mistake, options in replayed():
        for seed in seeds:
            replay = ctx.mistaken_replay(seed, options)
            if replay is not None and _close(z, replay, C.GRADE_ATOL_REPLAY):
                return mistake.id
    return None


# --- v2: the forms in which real lessons hold a stage's value --------------------------


@register("value", choices={"scaled": ("either", True, False)})
def initial_latents(
    ctx: ExerciseContext, var: VarLookup, *, value: str = "latents", scaled: str | bool = "either"
) -> CheckResult:
    """The initial noise drawn from one of the notebook's seeds, times ``scheduler.init_noise_sigma``
    (``scaled = true``), as drawn (``false``) or either."""
    sigma = float(ctx.scheduler().init_noise_sigma)
    wanted = {True: (sigma,), False: (1.0,), "either": (1.0, sigma)}[scaled]
    words = {True: f" · init_noise_sigma ({sigma:g})", False: "", "either": f" (· init_noise_sigma = {sigma:g} or not)"}
    id, clause = value, f"`{value}` = randn({list(ctx.lesson.latent_shape)}) from the lesson's seed{words[scaled]}"
    got = _tensors(id, clause, (var(value), ctx.lesson.latent_shape, "the initial latents"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    seeds = ctx.replay_seeds(var)
    for seed in seeds:
        noise = ctx.noise(seed)
        if any(_close(x, noise * scale, C.GRADE_ATOL_FP32) for scale in wanted):
            return ok(id, clause, seed=seed)
        if _close(x, noise, C.GRADE_ATOL_FP32):
            return named(fail(id, "", clause), "init_noise_sigma_forgotten", f"in `{value}`")
    if uniform_draw(x):
        return named(fail(id, "", clause), "rand_not_randn", f"in `{value}`")
    first = ctx.noise(seeds[0]) * wanted[-1]
    result = compare_tensors(id, x.float(), first, atol=C.GRADE_ATOL_FP32, clause=clause)
    return replace(result, message=f"no seed of {seeds} draws `{value}`: {result.message}")


@register("value")
def final_latents(ctx: ExerciseContext, var: VarLookup, *, value: str = "latents") -> CheckResult:
    """The loop's final latents: the lesson's generation replayed from one of the notebook's seeds
    (as they leave the loop, or already divided by the VAE's scaling factor)."""
    id = value
    clause = f"`{value}` = the final latents of the lesson's {ctx.lesson.steps}-step {_scheduler_words(ctx)} loop"
    got = _tensors(id, clause, (var(value), ctx.lesson.latent_shape, "the final latents"))
    if isinstance(got, CheckResult):
        return got
    (x,) = got
    sf = ctx.components.vae.config["scaling_factor"]
    seeds = ctx.replay_seeds(var)
    for seed in seeds:
        final = ctx.replay(seed)[0]
        for scale in (1.0, sf):
            if _close(x.float() * scale, final, C.GRADE_ATOL_REPLAY):
                return ok(id, clause, seed=seed, rebound=scale != 1.0)
    result = compare_tensors(id, x.float(), ctx.replay(seeds[0])[0], atol=C.GRADE_ATOL_REPLAY, clause=clause)
    for z in (x.float(), x.float() * sf) if ctx.names_mistakes else ():
        mistake = _replayed_mistake(ctx, seeds, z)
        if mistake:
            return named(result, mistake, f"`{value}` matches a replay with this mistake")
    return replace(result, message=f"no replay from seed(s) {seeds} reproduces `{value}`: {result.message}")


def _scheduler_words(ctx: ExerciseContext) -> str:
    return f"{SCHEDULERS[ctx.lesson.scheduler][1]} + CFG"


@register("value", "latents")
def decoded(ctx: ExerciseContext, var: VarLookup, *, value: str = "image", latents: str = "latents") -> CheckResult:
    """The raw VAE decode [1,3,H,W]: ``vae.decode`` of the notebook's final ``latents`` (divided by
    the scaling factor, or rebound to them divided) where they are there, else the replay's."""
    z = var(latents)
    if z.kind == "tensor" and z.tensor is not None and tuple(z.tensor.shape) == ctx.lesson.latent_shape:
        return image_decode(ctx, var, value=value, latents=latents)
    return generation_replay(ctx, var, value=value, latents=latents)


@register("value")
def image(ctx: ExerciseContext, var: VarLookup, *, value: str = "image") -> CheckResult:
    """The post-processed image (tensor, array or PIL; CHW or HWC; uint8 or float in [0, 1] or
    [-1, 1]; with or without a batch dimension) of the lesson replayed from one of its seeds."""
    id = f"{value}_pixels"
    clause = f"`{value}` = the image of the lesson's {ctx.lesson.steps}-step {_scheduler_words(ctx)} generation"
    found = forms.image(var(value))
    if isinstance(found, str):
        return fail(id, f"`{value}` {found}", clause)
    readings = found
    expected, shape = tuple(ctx.lesson.image_shape), readings[0].shape
    if tuple(shape) != expected:
        return fail(id, f"`{value}` is a {shape[2]}×{shape[3]} image; expected {expected[2]}×{expected[3]}", clause)
    atol = C.GRADE_ATOL_REPLAY + C.GRADE_ATOL_PIXEL  # an image is judged to its 8-bit levels
    seeds = ctx.replay_seeds(var)
    references = {seed: (ctx.replay(seed)[1].double() / 2 + 0.5).clamp(0, 1) for seed in seeds}
    for seed, reference in references.items():
        for x in readings:
            if _close(x, reference, atol):
                return ok(id, clause, seed=seed, max_abs_diff=float((x - reference).abs().max()))
    result = compare_tensors(id, readings[-1], references[seeds[0]], atol=atol, clause=clause)
    result = replace(result, message=f"no replay from seed(s) {seeds} reproduces `{value}`: {result.message}")
    for mistake, image_made in _mistaken_images(ctx, seeds):
        if any(_close(x, image_made, atol) for x in readings):
            return named(result, mistake, f"`{value}` is the image of a generation with this mistake")
    return result


def _mistaken_images(ctx: ExerciseContext, seeds: Sequence[int]) -> Iterator[tuple[str, torch.Tensor]]:
    """(mistake, the [0, 1] image it makes) for the decode's scaling mistakes and each replayed
    mistake of the loop, from each of ``seeds``; lazily, so a match stops the work."""
    if not ctx.names_mistakes:
        return
    sf = ctx.components.vae.config["scaling_factor"]

    def unit(z: torch.Tensor, scale: float) -> torch.Tensor:
        return (ctx.decode(z * scale).double() / 2 + 0.5).clamp(0, 1)

    for seed in seeds:
        final = ctx.replay(seed)[0]
        yield "scaling_factor_not_divided", unit(final, 1.0)
        yield "scaling_factor_multiplied", unit(final, sf)
    for mistake, options in replayed():
        for seed in seeds:
            z = ctx.mistaken_replay(seed, options)
            if z is not None:
                yield mistake.id, unit(z, 1 / sf)


@register("names")
def stage_timings(
    ctx: ExerciseContext, var: VarLookup, *, names: Sequence[str] = ("clip_time", "denoise_time", "vae_time")
) -> CheckResult:
    """Stage times are positive numbers of seconds (reported to the teacher, not compared)."""
    id, clause = "stage_timings", f"{', '.join(f'`{n}`' for n in names)} are positive durations in seconds"
    timings = {name: _scalar(var(name)) for name in names}
    bad = [
        f"`{n}` is {var(n).describe()}" for n, s in timings.items() if s is None or not s > 0 or not math.isfinite(s)
    ]
    if bad:
        return fail(
            id, "; ".join(bad) + "; expected a positive number of seconds (time.perf_counter() differences)", clause
        )
    return ok(id, clause, timings=timings)
