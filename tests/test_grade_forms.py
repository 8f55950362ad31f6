"""Spec format 2's check kinds on every form in which real lessons hold a stage's value.

No kernel: values are written here the way the diffusers tutorial writes them (a seeded
``torch.Generator``, batched CFG, ``latents = 1 / 0.18215 * latents``) and handed to the checks
as the extraction describes them.  The lesson is small (64×64, two Euler steps, a negative
prompt), so each replay takes a fraction of a second.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sdverify import reference as R
from sdverify import zoo
from sdverify.notebooks import exercises as X
from sdverify.notebooks.exercises import ExerciseContext, Lesson
from sdverify.notebooks.extraction import KERNEL_GENERATORS, KERNEL_SEED
from sdverify.schedulers import SCHEDULERS, make_scheduler
from sdverify.untrusted.value import UntrustedValue

SEED = 1234  # the generator's; the lesson's is 42
LESSON = Lesson(prompt="a cat", negative_prompt="blurry", steps=2, scheduler="euler", height=64, width=64)


def _tensor(name: str, x: torch.Tensor, kind: str = "tensor") -> UntrustedValue:
    desc = {"kind": kind, "key": name, "dtype": str(x.dtype), "shape": list(x.shape)}
    return UntrustedValue(name, desc, {name: x})


def _lookup(**values: UntrustedValue):
    seeds = {
        KERNEL_SEED: UntrustedValue(KERNEL_SEED, {"kind": "value", "value": 42}),
        KERNEL_GENERATORS: UntrustedValue(KERNEL_GENERATORS, {"kind": "value", "value": [SEED]}),
    }

    def var(name: str) -> UntrustedValue:
        return {**seeds, **values}.get(name) or UntrustedValue(name, {"kind": "missing"})

    return var


@pytest.fixture(scope="module")
def ctx() -> ExerciseContext:
    return ExerciseContext(LESSON, zoo.weights_dir("tiny"), contract_params=False, version=2)


@pytest.fixture(scope="module")
def loop(ctx):
    """The tutorial's loop: noise, each step's (latents, noise_pred, t, next latents), rebound latents, decode."""
    c, w = ctx.components, LESSON.guidance_scale
    generator = torch.Generator().manual_seed(SEED)
    scheduler = make_scheduler(LESSON.scheduler, dict(c.scheduler.config))
    scheduler.set_timesteps(LESSON.steps)
    embeddings = torch.cat([ctx.embeddings(LESSON.negative_prompt), ctx.embeddings(LESSON.prompt)])
    noise = torch.randn(LESSON.latent_shape, generator=generator)
    latents, steps = noise * scheduler.init_noise_sigma, []
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            uncond, text = c.unet(x, t, encoder_hidden_states=embeddings).sample.chunk(2)
        noise_pred = uncond + w * (text - uncond)
        after = scheduler.step(noise_pred, t, latents).prev_sample
        steps.append((latents, noise_pred, t, after))
        latents = after
    with torch.no_grad():
        decoded = c.vae.decode(1 / 0.18215 * latents).sample
    return {"noise": noise, "steps": steps, "final": latents, "decoded": decoded, "embeddings": embeddings}


def test_token_ids_in_every_form_of_a_real_lesson(ctx):
    ids = ctx.components.tokenizer(LESSON.prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    forms = {
        "tensor": _tensor("ids", ids),
        "flat": _tensor("ids", ids[0]),
        "list": UntrustedValue("ids", {"kind": "value", "value": ids[0].tolist()}),
        "nested": UntrustedValue("ids", {"kind": "value", "value": ids.tolist()}),
        "batch_encoding": UntrustedValue("ids", {"kind": "mapping", "keys": ["input_ids"]}, {"ids.input_ids": ids}),
    }
    for form, variable in forms.items():
        assert X.token_ids(ctx, _lookup(ids=variable), value="ids").passed, form
    wrong = X.token_ids(
        ctx, _lookup(ids=UntrustedValue("ids", {"kind": "value", "value": ids[0, :10].tolist()})), value="ids"
    )
    assert not wrong.passed and wrong.details.get("mistake") == "ids_not_padded"
    v1 = ExerciseContext(LESSON, ctx.folder, contract_params=False)  # format 1 keeps its one form
    assert "expected token ids (a tensor)" in X.token_ids(v1, _lookup(ids=forms["list"]), value="ids").message


def test_prompt_embeddings_read_one_half_of_cfgs_concatenation(ctx, loop):
    both = _lookup(emb=_tensor("emb", loop["embeddings"]))
    assert X.prompt_embeddings(ctx, both, value="emb", half="cond").passed
    assert X.prompt_embeddings(ctx, both, value="emb", half="uncond").passed  # the negative prompt's
    swapped = _lookup(emb=_tensor("emb", loop["embeddings"].flip(0)))
    result = X.prompt_embeddings(ctx, swapped, value="emb", half="cond")
    assert not result.passed and result.details.get("mistake") == "embeddings_of_wrong_prompt"
    whole = X.prompt_embeddings(ctx, both, value="emb")
    assert not whole.passed and "has shape [2, 77, 768]; expected [1, 77, 768]" in whole.message


def test_initial_latents_scaled_or_not(ctx, loop):
    sigma = float(ctx.scheduler().init_noise_sigma)
    plain, scaled = _lookup(z=_tensor("z", loop["noise"])), _lookup(z=_tensor("z", loop["noise"] * sigma))
    assert X.initial_latents(ctx, plain, value="z").passed and X.initial_latents(ctx, scaled, value="z").passed
    assert X.initial_latents(ctx, scaled, value="z", scaled=True).details["seed"] == SEED
    assert X.initial_latents(ctx, plain, value="z", scaled=False).passed
    assert X.initial_latents(ctx, plain, value="z", scaled=True).details.get("mistake") == "init_noise_sigma_forgotten"
    assert not X.initial_latents(ctx, scaled, value="z", scaled=False).passed
    uniform = _lookup(z=_tensor("z", torch.rand(LESSON.latent_shape)))
    assert X.initial_latents(ctx, uniform, value="z").details.get("mistake") == "rand_not_randn"
    other = X.initial_latents(ctx, _lookup(z=_tensor("z", torch.randn(LESSON.latent_shape))), value="z")
    assert not other.passed and f"no seed of [42, {SEED}] draws `z`" in other.message


def test_one_step_of_the_lessons_scheduler(ctx, loop):
    latents, noise_pred, t, after = loop["steps"][0]
    values = {"latents": latents, "noise_pred": noise_pred, "t": t, "next": after}
    var = _lookup(**{k: _tensor(k, v) for k, v in values.items()})
    result = X.scheduler_step(ctx, var, value="next")
    assert result.passed, result.message
    values["next"] = after + 0.01
    wrong = X.scheduler_step(ctx, _lookup(**{k: _tensor(k, v) for k, v in values.items()}), value="next")
    assert not wrong.passed and "scheduler.step(noise_pred, t, latents)" in wrong.clause


def test_final_latents_as_they_leave_the_loop_or_rebound(ctx, loop):
    final = loop["final"]
    assert X.final_latents(ctx, _lookup(latents=_tensor("latents", final))).details["seed"] == SEED
    rebound = X.final_latents(ctx, _lookup(latents=_tensor("latents", final / 0.18215)))
    assert rebound.passed and rebound.details["rebound"]
    wrong = X.final_latents(ctx, _lookup(latents=_tensor("latents", loop["noise"])))
    assert not wrong.passed and "no replay from seed(s)" in wrong.message
    assert "2-step EulerDiscreteScheduler + CFG" in wrong.clause


def test_the_raw_decode_from_the_latents_or_the_replay(ctx, loop):
    image, final = _tensor("image", loop["decoded"]), _tensor("latents", loop["final"] / 0.18215)
    assert X.decoded(ctx, _lookup(image=image, latents=final)).passed  # the rebinding idiom
    assert X.decoded(ctx, _lookup(image=image)).passed  # no latents: the replay's decode
    assert not X.decoded(ctx, _lookup(image=_tensor("image", loop["decoded"].flip(-1)))).passed


def test_a_post_processed_image_in_every_form(ctx, loop):
    raw = loop["decoded"]
    unit = (raw / 2 + 0.5).clamp(0, 1)
    hwc = (unit[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    forms = {
        "raw [-1, 1]": _tensor("image", raw),
        "[0, 1] CHW": _tensor("image", unit[0]),
        "[0, 1] HWC batch": _tensor("image", unit.permute(0, 2, 3, 1)),
        "numpy uint8": _tensor("image", torch.from_numpy(np.array(hwc)), kind="array"),
        "PIL": _tensor("image", hwc.clone(), kind="image"),
        "truncated uint8": _tensor("image", (unit[0].permute(1, 2, 0) * 255).to(torch.uint8)),
    }
    for form, variable in forms.items():
        result = X.image(ctx, _lookup(image=variable))
        assert result.passed, (form, result.message)
    mirrored = X.image(ctx, _lookup(image=_tensor("image", hwc.flip(1))))
    assert not mirrored.passed and "no replay from seed(s)" in mirrored.message
    gray = X.image(ctx, _lookup(image=_tensor("image", hwc[..., 0])))
    assert not gray.passed and "expected an image" in gray.message
    small = X.image(ctx, _lookup(image=_tensor("image", hwc[:32, :32])))
    assert "is a 32×32 image; expected 64×64" in small.message
    unread = UntrustedValue("image", {"kind": "unreadable", "error": "AttributeError at `.images`"})
    assert "`image` could not be read: AttributeError at `.images`" in X.decoded(ctx, _lookup(image=unread)).message


LAPTOP_STEPS = ("ddim", "euler_a")  # one deterministic, one stochastic; the rest in the slow tier


@pytest.mark.parametrize(
    "scheduler", [pytest.param(s, marks=() if s in LAPTOP_STEPS else pytest.mark.slow) for s in SCHEDULERS]
)
def test_scheduler_step_judges_the_first_step_of_every_registered_scheduler(scheduler):
    lesson = replace(LESSON, scheduler=scheduler)
    ctx = ExerciseContext(lesson, zoo.weights_dir("tiny"), contract_params=False, version=2)
    step = make_scheduler(scheduler, dict(ctx.components.scheduler.config))
    step.set_timesteps(lesson.steps)
    t = step.timesteps[0]
    latents = torch.randn(lesson.latent_shape, generator=torch.Generator().manual_seed(0)) * step.init_noise_sigma
    noise_pred = torch.randn(lesson.latent_shape, generator=torch.Generator().manual_seed(1))
    after = step.step(noise_pred, t, latents, **R.step_kwargs(step, torch.Generator().manual_seed(2))).prev_sample
    values = {"latents": latents, "noise_pred": noise_pred, "t": t}
    result = X.scheduler_step(
        ctx, _lookup(**{k: _tensor(k, v) for k, v in {**values, "next": after}.items()}), value="next"
    )
    assert result.passed, result.message
    wrong = X.scheduler_step(
        ctx, _lookup(**{k: _tensor(k, v) for k, v in {**values, "next": latents}.items()}), value="next"
    )
    assert not wrong.passed and wrong.clause == "`next` = scheduler.step(noise_pred, t, latents).prev_sample"
