"""Scheduler invariants for every scheduler SD1.5 users pick, under the SD1.5 config."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from sdverify import contract as C
from sdverify import reference
from sdverify.properties import failures
from sdverify.properties import scheduler_invariants as S
from sdverify.properties.strategies import FLOAT_DTYPES
from sdverify.schedulers import SCHEDULERS, SIGMA_BASED, init_noise_sigma, make_scheduler, sigmas, timesteps

NAMES = sorted(SCHEDULERS)
SMALL = (1, C.LATENT_CHANNELS, 8, 8)  # step algebra is elementwise: the full 64x64 adds nothing
# Step loops run the whole schedule; LMS integrates its coefficients with scipy at every
# step, so the step properties draw N up to 25 (set_timesteps itself is checked up to 1000).
MAX_LOOP_STEPS = 25
seeds = st.integers(0, 2**32 - 1)


def model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in noise prediction of the sample's shape and dtype."""
    return torch.tanh(x)


@given(name=st.sampled_from(NAMES), n=st.integers(1, C.NUM_TRAIN_TIMESTEPS))
@example(name="pndm", n=1)  # the PLMS warm-up needs two timesteps: one entry, no repeat
@example(name="pndm", n=2)
@example(name="heun", n=1)
def test_set_timesteps_invariants(name, n):
    scheduler = make_scheduler(name)
    failed = failures(S.timestep_properties(scheduler, n))
    # Exactly the documented upstream findings fail (none for most (name, n)); see upstream_findings.
    assert set(failed) == set(S.upstream_findings(name, n)), failed
    assert S.init_noise_sigma_property(scheduler).passed


@pytest.mark.parametrize("form", ["float", "0-d tensor", "numpy"])
def test_scheduler_attributes_read_the_same_in_every_diffusers_form(form):
    # diffusers 0.42 made Euler's init_noise_sigma a 0-d tensor; older versions give floats.
    scheduler = make_scheduler("euler")
    scheduler.set_timesteps(10)
    sigma, ts, sig = init_noise_sigma(scheduler), timesteps(scheduler), sigmas(scheduler)
    assert isinstance(sigma, float) and sigma > 1
    convert = {"float": lambda t: t.tolist(), "0-d tensor": lambda t: t, "numpy": lambda t: t.numpy()}[form]
    sigma_t = torch.tensor(sigma)
    stand_in = SimpleNamespace(init_noise_sigma=convert(sigma_t), timesteps=convert(ts), sigmas=convert(sig))
    assert init_noise_sigma(stand_in) == pytest.approx(sigma)
    assert torch.equal(timesteps(stand_in).to(ts.dtype), ts) and torch.allclose(sigmas(stand_in).to(sig.dtype), sig)


@pytest.mark.parametrize("name", NAMES)
def test_upstream_findings_at_1000_steps_are_hit(name):
    # Hypothesis draws N = 1000 only sometimes: the documented findings are asserted here every run.
    failed = failures(S.timestep_properties(make_scheduler(name), C.NUM_TRAIN_TIMESTEPS))
    assert set(failed) == set(S.upstream_findings(name, C.NUM_TRAIN_TIMESTEPS)), failed


@pytest.mark.parametrize("name", ["ddpm", "ddim", "pndm"])
def test_finding_leading_spacing_with_1000_steps_steps_past_the_alpha_table(name):
    # Documented finding: SD1.5's steps_offset=1 with 'leading' spacing gives timestep 1000 at
    # N = 1000, one past alphas_cumprod; the first step then fails.  Asserts current behaviour.
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(C.NUM_TRAIN_TIMESTEPS)
    assert int(scheduler.timesteps[0]) == C.NUM_TRAIN_TIMESTEPS
    x = torch.randn(SMALL)
    with pytest.raises(IndexError):
        scheduler.step(model(x, 0), scheduler.timesteps[0], x)


@pytest.mark.parametrize("name", ["dpm", "unipc"])
def test_finding_linspace_rounding_repeats_a_timestep_at_1000_steps(name):
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(C.NUM_TRAIN_TIMESTEPS)
    ts = scheduler.timesteps
    assert (ts[1:] == ts[:-1]).nonzero().flatten().tolist() == [499] and int(ts[499]) == 500


@pytest.mark.parametrize("name", sorted(SIGMA_BASED))
def test_finding_sigma_schedulers_with_one_step_start_at_timestep_zero(name):
    # Documented finding: with N = 1, 'linspace' spacing gives linspace(0, 999, 1)[::-1] = [0.0],
    # so the only step starts at the *least* noisy sigma, sqrt((1 - a0) / a0) ~ 0.029, and
    # init_noise_sigma follows it: a one-step generation starts from (almost) no noise.
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(1)
    a0 = float(scheduler.alphas_cumprod[0])
    assert scheduler.timesteps.tolist() == [0.0]
    assert float(scheduler.init_noise_sigma) == pytest.approx(math.sqrt((1 - a0) / a0), rel=1e-6)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "pndm"])
def test_finding_leading_schedulers_with_one_step_start_at_timestep_one(name):
    # The discrete-time side of the same corner: 'leading' spacing gives [0] + steps_offset = [1].
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [1]


@given(name=st.sampled_from(NAMES), n=st.integers(1, MAX_LOOP_STEPS), seed=seeds, dtype=st.sampled_from(FLOAT_DTYPES))
def test_every_step_keeps_shape_dtype_device_and_stays_finite(name, n, seed, dtype):
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(n)
    x = (torch.randn(SMALL, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma).to(dtype)
    failed = failures(S.step_properties(scheduler, x, model, torch.Generator().manual_seed(seed)))
    assert failed == {}


@given(name=st.sampled_from(NAMES), n=st.integers(1, 10), seed=st.integers(0, 2**31))
def test_seeded_generators_reproduce_and_only_stochastic_schedulers_depend_on_them(name, n, seed):
    x = torch.randn(SMALL, generator=torch.Generator().manual_seed(seed))
    assert failures(S.reproducibility(name, n, seed, x, model)) == {}


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_not():
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(10)
    x, t = torch.randn(SMALL), scheduler.timesteps[3]

    def step(eta, seed):
        return scheduler.step(model(x, t), t, x, eta=eta, generator=torch.Generator().manual_seed(seed)).prev_sample

    assert torch.equal(step(0.0, 1), step(0.0, 2))
    assert not torch.equal(step(1.0, 1), step(1.0, 2))


@given(n=st.integers(1, C.NUM_TRAIN_TIMESTEPS), data=st.data(), seed=seeds)
@example(n=C.NUM_TRAIN_TIMESTEPS, data=None, seed=0)
def test_ddim_step_with_the_true_noise_lands_on_the_forward_process(n, data, seed):
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(n)
    index = data.draw(st.integers(0, len(scheduler.timesteps) - 1)) if data is not None else 0
    g = torch.Generator().manual_seed(seed)
    x0, eps = (torch.randn(SMALL, generator=g, dtype=torch.float64) for _ in range(2))
    if int(scheduler.timesteps[index]) >= C.NUM_TRAIN_TIMESTEPS:  # the documented N = 1000 finding
        assert "timesteps.range" in S.upstream_findings("ddim", n)
        with pytest.raises(IndexError):
            S.ddim_exact_step(scheduler, x0, eps, index)
        return
    result = S.ddim_exact_step(scheduler, x0, eps, index)
    assert result.passed, str(result)


@given(n=st.integers(1, C.NUM_TRAIN_TIMESTEPS - 1), data=st.data(), seed=seeds)
def test_ddpm_step_with_the_true_noise_is_the_closed_form_posterior(n, data, seed):
    scheduler = make_scheduler("ddpm")
    scheduler.set_timesteps(n)
    index = data.draw(st.integers(0, n - 1))
    g = torch.Generator().manual_seed(seed)
    x0, eps = (torch.randn(SMALL, generator=g, dtype=torch.float64) for _ in range(2))
    result = S.ddpm_posterior_property(scheduler, x0, eps, index, seed)
    assert result.passed, str(result)


def test_ddim_closed_form_catches_a_final_step_that_ignores_the_config():
    # set_alpha_to_one=False means the last step lands on alphas_cumprod[0], not on 1.
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(10)
    scheduler.final_alpha_cumprod = torch.tensor(1.0)
    x0, eps = torch.randn(2, *SMALL, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert S.ddim_exact_step(scheduler, x0, eps, 8).passed  # interior steps are unaffected
    result = S.ddim_exact_step(scheduler, x0, eps, 9)
    assert not result.passed and "t_prev=-99" in result.message


@pytest.mark.parametrize("name", NAMES)
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(name):
    assert S.alphas_cumprod_property(make_scheduler(name)).passed


@pytest.mark.parametrize("name", NAMES)
def test_full_cfg_loop_over_the_tiny_unet_stays_finite(name, sd_tokenizer, sd_components):
    cond = reference.encode_prompt(sd_tokenizer, sd_components.text_encoder, "a cat sitting on a beach at sunset")
    uncond = reference.encode_prompt(sd_tokenizer, sd_components.text_encoder, "")
    result = S.full_loop_finite(sd_components.unet, make_scheduler(name), cond, uncond, 5, seed=0)
    assert result.passed, str(result)
