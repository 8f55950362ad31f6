"""Invariants of the diffusers schedulers SD1.5 users pick, as reusable checks.

Counts and repeats are each scheduler's own documented behaviour, measured under the
SD1.5 config for every ``num_inference_steps`` in 1..1000:

* PNDM with ``skip_prk_steps`` returns N + 1 timesteps for N >= 2: its PLMS warm-up
  repeats the second timestep (``[t0, t1, t1, t2, ...]``); for N = 1 it returns one.
* Heun (2nd order) returns 2N - 1: every timestep after the first appears twice.
* The others return N, strictly decreasing.

Where the SD1.5 config drives a scheduler outside these invariants, :func:`upstream_findings`
names the property and explains why (tests assert exactly those failures, so a fix
upstream shows up as a test to update, never as silence).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from sdverify import contract as C
from sdverify import reference
from sdverify.properties.untrusted import call, dims, tensor_result
from sdverify.reference import step_kwargs  # what the pipeline passes: eta=0, generator
from sdverify.results import CheckResult, compare_tensors, fail, ok
from sdverify.schedulers import SCHEDULERS, SIGMA_BASED, STOCHASTIC, init_noise_sigma, make_scheduler, scheduler_name
from sdverify.schedulers import sigmas as sigmas_of
from sdverify.schedulers import timesteps as timesteps_of

DISCRETE_TIME = frozenset(SCHEDULERS) - SIGMA_BASED
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# DDIM/DDPM steps take their coefficients as scalars in alphas_cumprod's dtype (float32,
# e.g. ``alpha_prod_t ** 0.5``, ``1 - alpha_prod_t``), so even float64 samples match the
# float64 closed form only to float32 rounding, amplified where the step divides by
# sqrt(alpha_bar_t) (large t: up to 1/0.068) or by 1 - alpha_bar_t (small t: up to 1/0.0017).
# Measured <= 3e-5 at |x| ~ 4 over all steps of N in {1, 2, 10, 50, 1000}; the bound is this
# many float32 eps times that amplification (a wrong coefficient moves the result by O(0.01-1)).
CLOSED_FORM_EPS = 16


def _name(scheduler) -> str:
    name = scheduler_name(scheduler)
    if name is None:
        raise ValueError(f"{type(scheduler).__name__} is not one of the registered schedulers {sorted(SCHEDULERS)}")
    return name


def expected_timestep_count(name: str, num_inference_steps: int) -> int:
    """How many entries ``set_timesteps(N)`` documents for scheduler ``name``."""
    return TRAITS[name].count(num_inference_steps)


def documented_repeats(name: str, length: int) -> list[int]:
    """Indices ``i`` with ``timesteps[i] == timesteps[i + 1]`` that the scheduler documents."""
    return TRAITS[name].repeats(length)


def upstream_findings(name: str, num_inference_steps: int) -> dict[str, str]:
    """Property id -> explanation, for the (scheduler, N) where upstream breaks an invariant.

    Found by Hypothesis over N in 1..1000 with the SD1.5 scheduler config (diffusers 0.42).
    """
    return dict(TRAITS[name].findings) if num_inference_steps == C.NUM_TRAIN_TIMESTEPS else {}


def timestep_properties(scheduler, num_inference_steps: int) -> list[CheckResult]:
    """``set_timesteps(N)``: documented count, range [0, 999], dtype, order, repeatability."""
    name = _name(scheduler)
    n = num_inference_steps
    _, failure = call("timesteps.count", scheduler.set_timesteps, n, expected="None (timesteps set in place)")
    if failure is not None:
        return [failure]
    ts = timesteps_of(scheduler).clone()
    values = ts.double()
    results = []

    want = expected_timestep_count(name, n)
    clause = f"set_timesteps({n}) gives {want} timesteps (the scheduler's documented count)"
    results.append(
        ok("timesteps.count", clause)
        if len(ts) == want
        else fail("timesteps.count", f"{len(ts)} timesteps, expected {want}", clause)
    )

    top = C.NUM_TRAIN_TIMESTEPS - 1
    clause = f"every timestep lies in [0, {top}]"
    outside = values[(values < 0) | (values > top)].tolist()
    results.append(
        fail("timesteps.range", f"timesteps outside [0, {top}]: {outside[:5]}", clause)
        if outside
        else ok("timesteps.range", clause)
    )

    integral = name in DISCRETE_TIME
    clause = "integer timesteps (discrete-time)" if integral else "float timesteps (sigma-based)"
    dtype_ok = (not ts.is_floating_point()) if integral else ts.is_floating_point()
    results.append(
        ok("timesteps.dtype", clause) if dtype_ok else fail("timesteps.dtype", f"timesteps are {ts.dtype}", clause)
    )

    steps = values[1:] - values[:-1]
    clause = "timesteps are non-increasing"
    rising = (steps > 0).nonzero().flatten().tolist()
    results.append(
        fail(
            "timesteps.non_increasing",
            f"timesteps rise after positions {rising[:5]}: {values.tolist()[:10]}...",
            clause,
        )
        if rising
        else ok("timesteps.non_increasing", clause)
    )

    clause = "strictly decreasing except where the scheduler documents a repeat"
    repeats = (steps == 0).nonzero().flatten().tolist()
    allowed = documented_repeats(name, len(ts))
    unexpected = sorted(set(repeats) - set(allowed))
    results.append(
        fail(
            "timesteps.strictly_decreasing",
            f"timestep repeated at positions {unexpected[:5]} (values {[values[i].item() for i in unexpected[:5]]}); "
            f"{name} documents repeats only at {allowed[:5]}",
            clause,
        )
        if unexpected
        else ok("timesteps.strictly_decreasing", clause)
    )

    clause = "calling set_timesteps twice gives the same timesteps"
    scheduler.set_timesteps(n)
    again = timesteps_of(scheduler)
    results.append(
        ok("timesteps.idempotent", clause)
        if torch.equal(again, ts)
        else fail(
            "timesteps.idempotent", f"second call gave {again.tolist()[:8]}..., first {ts.tolist()[:8]}...", clause
        )
    )
    return results


def init_noise_sigma_property(scheduler) -> CheckResult:
    """1 for discrete-time schedulers; from the largest sigma for sigma-based ones.

    Sigma-based schedulers start at ``max_sigma`` with 'linspace'/'trailing' spacing and at
    ``sqrt(max_sigma**2 + 1)`` otherwise (diffusers' rule); call after ``set_timesteps``.
    """
    name = _name(scheduler)
    got = init_noise_sigma(scheduler)
    if name in DISCRETE_TIME:
        want, how = 1.0, "1 (discrete-time)"
    else:
        max_sigma = float(sigmas_of(scheduler).max())
        linear = scheduler.config.timestep_spacing in ("linspace", "trailing")
        want = max_sigma if linear else math.sqrt(max_sigma**2 + 1)
        how = "max(sigmas)" if linear else "sqrt(max(sigmas)^2 + 1)"
    clause = f"init_noise_sigma is {how}"
    if math.isclose(got, want, rel_tol=1e-6):
        return ok("scheduler.init_noise_sigma", clause, value=got)
    return fail("scheduler.init_noise_sigma", f"init_noise_sigma is {got:g}, expected {want:g}", clause)


def step_properties(
    scheduler, sample: torch.Tensor, model: Model, generator: torch.Generator | None = None
) -> list[CheckResult]:
    """Run the whole schedule from ``sample``; every step keeps shape/dtype/device and stays finite.

    Also checks ``scale_model_input`` at every step: the identity for discrete-time schedulers,
    division by ``sqrt(sigma**2 + 1)`` (sigma of the current step) for sigma-based ones.
    Call after ``set_timesteps``.
    """
    name = _name(scheduler)
    ids = ("step.shape_dtype_device", "step.finite", "step.scale_model_input")
    clauses = {
        "step.shape_dtype_device": "prev_sample keeps the sample's shape, dtype and device",
        "step.finite": "prev_sample is finite at every step",
        "step.scale_model_input": (
            "scale_model_input is the identity"
            if name in DISCRETE_TIME
            else "scale_model_input divides by sqrt(sigma^2 + 1)"
        ),
    }
    failures: dict[str, CheckResult] = {}
    x = sample
    for i, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(x, t)
        if "step.scale_model_input" not in failures:
            if name in DISCRETE_TIME:
                expected = x
            else:
                sigma = float(sigmas_of(scheduler)[scheduler.step_index])
                expected = x.double() / math.sqrt(sigma**2 + 1)
            # The sigma table is float32: a float64 sample is scaled with float32 precision.
            eps = max(torch.finfo(x.dtype).eps, torch.finfo(torch.float32).eps)
            atol = 4 * eps * float(x.abs().max())
            result = compare_tensors("step.scale_model_input", scaled.double(), expected.double(), atol=atol)
            if not result.passed:
                failures["step.scale_model_input"] = fail(
                    "step.scale_model_input",
                    f"step {i} (t={float(t):g}): {result.message}",
                    clauses["step.scale_model_input"],
                )
        out = scheduler.step(model(scaled, t), t, x, **step_kwargs(scheduler, generator)).prev_sample
        where = f"step {i} (t={float(t):g})"
        bad = tensor_result(
            "step.shape_dtype_device", out, shape=x.shape, dtype=x.dtype, device=x.device,
            clause=clauses["step.shape_dtype_device"], what=f"{where}: step returned",
        )  # fmt: skip
        if isinstance(bad, CheckResult):
            failures.setdefault("step.shape_dtype_device", bad)
            break
        bad = tensor_result(
            "step.finite", out, finite=True, clause=clauses["step.finite"], what=f"{where}: prev_sample has"
        )
        if isinstance(bad, CheckResult):
            failures.setdefault("step.finite", bad)
            break
        x = out
    return [failures.get(id, ok(id, clauses[id])) for id in ids]


def run_schedule(scheduler, sample: torch.Tensor, model: Model, generator: torch.Generator | None) -> torch.Tensor:
    """The final sample after every step of the current schedule."""
    x = sample
    for t in scheduler.timesteps:
        x = scheduler.step(
            model(scheduler.scale_model_input(x, t), t), t, x, **step_kwargs(scheduler, generator)
        ).prev_sample
    return x


def noise_drawn(name: str, scheduler) -> str:
    """``"visible"``, ``"negligible"`` or ``"none"``: the noise the current schedule's steps add.

    DDPM draws noise at every t > 0, but on the step that leaves the grid (previous
    timestep < 0) the posterior variance is 0, clamped to 1e-20: noise of std 1e-10, below
    rounding for most elements (with one step that is all there is).  Euler-ancestral adds
    ``sigma_up`` noise on every step whose target sigma is > 0; with one step it goes
    straight to sigma 0 and draws nothing.  Schedulers outside ``STOCHASTIC`` never draw.
    """
    return TRAITS[name].noise(scheduler) if name in STOCHASTIC else "none"


def _posterior_noise(scheduler) -> str:
    if any(_previous(scheduler, i) >= 0 for i in range(len(scheduler.timesteps))):
        return "visible"
    return "negligible" if bool((scheduler.timesteps > 0).any()) else "none"


def _ancestral_noise(scheduler) -> str:
    return "visible" if bool((scheduler.sigmas[1:] > 0).any()) else "none"


def reproducibility(
    name: str, num_inference_steps: int, seed: int, sample: torch.Tensor, model: Model
) -> list[CheckResult]:
    """Same generator seed -> same result; stochastic schedulers differ across seeds, the others do not."""

    def final(generator_seed: int) -> torch.Tensor:
        scheduler = make_scheduler(name)
        scheduler.set_timesteps(num_inference_steps)
        return run_schedule(scheduler, sample.clone(), model, torch.Generator().manual_seed(generator_seed))

    first, again, other = final(seed), final(seed), final(seed + 1)
    probe = make_scheduler(name)
    probe.set_timesteps(num_inference_steps)
    noise = noise_drawn(name, probe)
    clause = "the same generator seed reproduces the result"
    results = [
        ok("step.same_seed_same_result", clause)
        if torch.equal(first, again)
        else fail("step.same_seed_same_result", "two runs with the same seed differ", clause)
    ]
    same = torch.equal(first, other)
    if noise == "visible":
        clause = "different generator seeds give different results (noise is drawn)"
        results.append(
            fail("step.seeds_matter", "seeds s and s+1 gave identical results", clause)
            if same
            else ok("step.seeds_matter", clause)
        )
    elif noise == "none":
        clause = "no noise is drawn: the result does not depend on the generator"
        results.append(
            ok("step.seeds_matter", clause) if same else fail("step.seeds_matter", "seeds s and s+1 differ", clause)
        )
    else:
        clause = (
            "not compared: the only noise has std 1e-10 (DDPM's step off the grid), below rounding for most elements"
        )
        results.append(ok("step.seeds_matter", clause, noise=noise))
    return results


def alphas_cumprod_property(scheduler) -> CheckResult:
    """``alphas_cumprod`` is strictly decreasing and inside (0, 1): more noise at every later t."""
    a = scheduler.alphas_cumprod.double()
    clause = "alphas_cumprod is strictly decreasing in (0, 1)"
    if not bool(((a > 0) & (a < 1)).all()):
        return fail(
            "scheduler.alphas_cumprod", f"values outside (0, 1): min {float(a.min()):g}, max {float(a.max()):g}", clause
        )
    rising = ((a[1:] - a[:-1]) >= 0).nonzero().flatten().tolist()
    if rising:
        return fail("scheduler.alphas_cumprod", f"not strictly decreasing after positions {rising[:5]}", clause)
    return ok("scheduler.alphas_cumprod", clause)


def _alpha_bar(scheduler, t: int, before_start: float) -> float:
    return float(scheduler.alphas_cumprod[t]) if t >= 0 else before_start


def _closed_form_atol(scheduler, t: int, *tensors: torch.Tensor) -> float:
    magnitude = max(float(x.abs().max()) for x in tensors)
    eps = torch.finfo(scheduler.alphas_cumprod.dtype).eps
    a_t = float(scheduler.alphas_cumprod[t])
    return CLOSED_FORM_EPS * eps * magnitude * (1 / math.sqrt(a_t) + 1 / (1 - a_t))


def _previous(scheduler, index: int) -> int:
    """The timestep a step at ``timesteps[index]`` goes to (< 0: past the end of the grid).

    DDIM strides down by num_train // N; DDPM goes to the next entry of its schedule (the
    two agree except for the shifted grid of N = 1000, see :func:`upstream_findings`).
    """
    if TRAITS[_name(scheduler)].previous_is_next_entry:
        return int(scheduler.timesteps[index + 1]) if index + 1 < len(scheduler.timesteps) else -1
    return int(scheduler.timesteps[index]) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps


# --------------------------------------------------------------------- scheduler traits
_LEADING_OVERFLOW = (
    "timesteps.range",
    "'leading' spacing plus steps_offset=1 shifts the grid 0..999 up by one: timestep 1000 appears, "
    "and step() at it raises IndexError (alphas_cumprod has 1000 entries)",
)
_LINSPACE_REPEAT = (
    "timesteps.strictly_decreasing",
    "'linspace' spacing rounds linspace(0, 999, 1001) to integers, which repeats timestep 500",
)


def _no_noise(scheduler) -> str:
    return "none"


@dataclass(frozen=True)
class Traits:
    """What one scheduler documents beyond the common invariants; the defaults are the common case."""

    count: Callable[[int], int] = lambda n: n  # entries set_timesteps(N) makes
    repeats: Callable[[int], list[int]] = lambda length: []  # documented i with timesteps[i] == timesteps[i + 1]
    findings: tuple[tuple[str, str], ...] = ()  # upstream breaks at N = num_train_timesteps (property id, why)
    noise: Callable[[Any], str] = _no_noise  # noise_drawn() of a STOCHASTIC scheduler's current schedule
    previous_is_next_entry: bool = False  # a step goes to the next grid entry, not t - num_train // N


# One entry per registered scheduler (sdverify.schedulers.SCHEDULERS): a new scheduler is one line.
TRAITS: dict[str, Traits] = {
    # PNDM's PRK warm-up: one extra entry and timesteps[1] == timesteps[2].
    "pndm": Traits(
        count=lambda n: n + 1 if n >= 2 else 1,
        repeats=lambda length: [1] if length >= 3 else [],
        findings=(_LEADING_OVERFLOW,),
    ),
    "ddpm": Traits(findings=(_LEADING_OVERFLOW,), noise=_posterior_noise, previous_is_next_entry=True),
    "ddim": Traits(findings=(_LEADING_OVERFLOW,)),
    "euler": Traits(),
    "euler_a": Traits(noise=_ancestral_noise),
    "lms": Traits(),
    "dpm": Traits(findings=(_LINSPACE_REPEAT,)),
    # Heun's second-order steps: every interior timestep twice (two model calls per step).
    "heun": Traits(count=lambda n: 2 * n - 1, repeats=lambda length: list(range(1, length - 1, 2))),
    "unipc": Traits(findings=(_LINSPACE_REPEAT,)),
}
if set(TRAITS) != set(SCHEDULERS):
    raise RuntimeError(f"scheduler traits missing for {sorted(set(SCHEDULERS) - set(TRAITS))}")


def ddim_exact_step(scheduler, x0: torch.Tensor, eps: torch.Tensor, index: int) -> CheckResult:
    """With the true noise, one DDIM step (eta=0) from ``add_noise(x0, eps, t)`` lands on
    ``add_noise(x0, eps, t_prev)``: the model's x0 estimate is exact, so is the step.

    Below t = 0 DDIM uses alphas_cumprod[0] (SD1.5's ``set_alpha_to_one=False``), or 1.
    Call after ``set_timesteps``.  Exact in exact arithmetic; compared within float32 rounding
    of the scheduler's coefficients (``CLOSED_FORM_EPS``).
    """
    t = int(scheduler.timesteps[index])
    prev = _previous(scheduler, index)
    x_t = scheduler.add_noise(x0, eps, torch.tensor([t]))
    final = 1.0 if scheduler.config.set_alpha_to_one else float(scheduler.alphas_cumprod[0])
    a_prev = _alpha_bar(scheduler, prev, final)
    expected = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    out = scheduler.step(eps, t, x_t, eta=0.0).prev_sample
    clause = "a DDIM step with the true eps lands on add_noise(x0, eps, t_prev)"
    atol = _closed_form_atol(scheduler, t, x0, eps)
    result = compare_tensors("ddim.exact_step", out, expected, atol=atol, clause=clause)
    return result if result.passed else replace(result, message=f"t={t} -> t_prev={prev}: {result.message}")


def ddpm_posterior_property(scheduler, x0: torch.Tensor, eps: torch.Tensor, index: int, seed: int) -> CheckResult:
    """With the true eps, DDPM's step is the closed-form posterior ``mu + sigma * z``.

    ``mu = sqrt(a_prev) beta / (1 - a_t) x0 + sqrt(alpha) (1 - a_prev) / (1 - a_t) x_t`` and
    ``sigma^2 = (1 - a_prev) / (1 - a_t) beta`` ("fixed_small"), where ``alpha = a_t / a_prev``,
    ``beta = 1 - alpha`` over the inference stride; ``z`` is the normal draw of the seeded
    generator, reproduced here (DDPM draws one tensor of the sample's shape, and none at t = 0).
    """
    t = int(scheduler.timesteps[index])
    a_t = float(scheduler.alphas_cumprod[t])
    a_prev = _alpha_bar(scheduler, _previous(scheduler, index), 1.0)
    alpha = a_t / a_prev
    beta = 1 - alpha
    x_t = scheduler.add_noise(x0, eps, torch.tensor([t]))
    mu = math.sqrt(a_prev) * beta / (1 - a_t) * x0 + math.sqrt(alpha) * (1 - a_prev) / (1 - a_t) * x_t
    sigma = math.sqrt(max((1 - a_prev) / (1 - a_t) * beta, 1e-20)) if t > 0 else 0.0
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed), dtype=x0.dtype)
    out = scheduler.step(eps, t, x_t, generator=torch.Generator().manual_seed(seed)).prev_sample
    clause = "a DDPM step with the true eps is the closed-form posterior mean plus sigma·z"
    atol = _closed_form_atol(scheduler, t, x0, eps, z)
    result = compare_tensors("ddpm.posterior", out, mu + sigma * z, atol=atol, clause=clause)
    return result if result.passed else replace(result, message=f"t={t}: {result.message}")


def full_loop_finite(
    unet, scheduler, cond: torch.Tensor, uncond: torch.Tensor, num_inference_steps: int, seed: int
) -> CheckResult:
    """A whole CFG loop of the reference ``denoise_step`` over ``unet`` keeps the latents finite."""
    name = scheduler_name(scheduler) or type(scheduler).__name__
    clause = f"{num_inference_steps} CFG steps with {name} keep the latents finite and {dims(C.LATENT_SHAPE)}"
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(num_inference_steps)
    latents = reference.initial_latents(scheduler, generator, cond.device, cond.dtype)
    for i, t in enumerate(scheduler.timesteps):
        latents = reference.denoise_step(unet, scheduler, latents, t, cond, uncond, C.GUIDANCE_SCALE, generator)
        checked = tensor_result(
            "scheduler.full_loop_finite", latents, shape=C.LATENT_SHAPE, finite=True, clause=clause,
            what=f"step {i} (t={float(t):g}) returned",
        )  # fmt: skip
        if isinstance(checked, CheckResult):
            return checked
    return ok("scheduler.full_loop_finite", clause)
