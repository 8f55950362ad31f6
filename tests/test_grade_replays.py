"""The notebook grader's replays and idiom-proof checks, on values written the way lessons write them.

No kernel: the "notebook" is a loop in this file, written as a lesson writes it (a seeded
``torch.Generator`` passed to ``randn`` and ``scheduler.step``, batched CFG, the rebinding
decode ``z = 1 / 0.18215 * z``), independent of the grader's replay (two U-Net calls per
step, the global seed).  A replay decodes a 512×512 image (seconds each on 2 cores), so the
laptop tier keeps the CFG check only; it grades the generator and rebinding idioms in a whole
notebook (tests/test_grade_metamorphic.py's edits).  Whole notebooks per scheduler:
tests/test_grade_idioms.py.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from sdverify import contract as C
from sdverify import zoo
from sdverify.mistakes import MISTAKES
from sdverify.notebooks.exercises import ExerciseContext, Lesson, cfg_combination, generation_replay, image_decode
from sdverify.notebooks.extraction import KERNEL_GENERATORS, KERNEL_SEED
from sdverify.schedulers import SCHEDULERS, make_scheduler
from sdverify.untrusted.value import UntrustedValue

STEPS = 3  # enough for a multistep scheduler (LMS, DPM, UniPC, PNDM) to use its history
SEED = 1234  # the generator's; the lesson's is 42


def _tensor(name: str, x: torch.Tensor) -> UntrustedValue:
    meta = {"kind": "tensor", "dtype": str(x.dtype), "device": "cpu", "shape": list(x.shape)}
    return UntrustedValue(name, meta, {name: x})


def _lookup(values: dict[str, UntrustedValue]):
    def var(name: str) -> UntrustedValue:
        return values.get(name) or UntrustedValue(name, {"kind": "missing"})

    return var


def _lesson_loop(ctx: ExerciseContext, *, swapped: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents as left after ``z = 1 / 0.18215 * z``, image), by the diffusers documentation's loop."""
    c, w = ctx.components, ctx.lesson.guidance_scale
    generator = torch.Generator().manual_seed(SEED)
    scheduler = make_scheduler(ctx.lesson.scheduler, dict(c.scheduler.config))
    scheduler.set_timesteps(ctx.lesson.steps)
    extra = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    embeddings = torch.cat([ctx.embeddings(""), ctx.embeddings(ctx.lesson.prompt)])
    z = torch.randn(C.LATENT_SHAPE, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(torch.cat([z] * 2), t)
        with torch.no_grad():
            noise_pred = c.unet(x, t, encoder_hidden_states=embeddings).sample
        uncond, text = noise_pred.chunk(2)
        if swapped:
            uncond, text = text, uncond
        z = scheduler.step(uncond + w * (text - uncond), t, z, **extra).prev_sample
    z = 1 / 0.18215 * z
    with torch.no_grad():
        return z, c.vae.decode(z).sample


def _snapshot(z: torch.Tensor, image: torch.Tensor):
    return _lookup(
        {
            "z": _tensor("z", z),
            "image": _tensor("image", image),
            KERNEL_SEED: UntrustedValue(KERNEL_SEED, {"kind": "value", "value": 42}),
            KERNEL_GENERATORS: UntrustedValue(KERNEL_GENERATORS, {"kind": "value", "value": [SEED]}),
        }
    )


@pytest.fixture(scope="module")
def tiny() -> zoo.Path:
    return zoo.weights_dir("tiny")


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_lesson_written_with_a_generator_and_a_rebound_decode_replays_on_every_scheduler(tiny, scheduler):
    ctx = ExerciseContext(Lesson(scheduler=scheduler, steps=STEPS), tiny, contract_params=False)
    var = _snapshot(*_lesson_loop(ctx))
    replay, decode = generation_replay(ctx, var), image_decode(ctx, var)
    assert replay.passed, replay.message
    assert replay.details["seed"] == SEED
    assert f"{STEPS}-step {SCHEDULERS[scheduler][1]} + CFG" in replay.clause
    assert decode.passed and decode.details == {"rebound": True}, decode.message

    # Swapped halves in every step: named by a replay, whatever replays cannot run here
    # (reversed timesteps run LMS, Euler, DPM, UniPC... off their tables).
    var = _snapshot(*_lesson_loop(ctx, swapped=True))
    replay, decode = generation_replay(ctx, var), image_decode(ctx, var)
    assert (replay.id, replay.passed, replay.details.get("mistake")) == ("image_replay", False, "cfg_swapped")
    assert "could not be checked" not in replay.message
    assert decode.passed, decode.message  # the decode itself was right


@pytest.mark.slow
def test_the_decode_of_undivided_latents_is_still_named(tiny):
    ctx = ExerciseContext(Lesson(scheduler="lms", steps=STEPS), tiny, contract_params=False)
    z, _ = _lesson_loop(ctx)
    final = z * 0.18215  # the loop's own latents, decoded without the division
    with torch.no_grad():
        image = ctx.components.vae.decode(final).sample
    result = image_decode(ctx, _snapshot(final, image))
    assert (result.passed, result.details.get("mistake")) == (False, "scaling_factor_not_divided")


def test_a_batched_cfg_unpacked_in_the_wrong_order_is_named(tiny):
    """The formula holds on the notebook's own, mislabelled variables; the reference's
    predictions at its latents and timestep show the swap."""
    ctx = ExerciseContext(Lesson(), tiny, contract_params=False)
    z = torch.randn(C.LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    t = ctx.timesteps()[0]
    u, c = ctx.unet(z, t, ""), ctx.unet(z, t, ctx.lesson.prompt)
    w = ctx.lesson.guidance_scale

    def check(uncond: torch.Tensor, cond: torch.Tensor):
        values = {"z_t": z, "t": t, "eps_uncond": uncond, "eps_cond": cond, "eps_cfg": uncond + w * (cond - uncond)}
        return cfg_combination(ctx, _lookup({k: _tensor(k, v) for k, v in values.items()}))

    assert check(u, c).passed
    swapped = check(c, u)
    assert (swapped.passed, swapped.details.get("mistake")) == (False, "cfg_chunks_swapped")
    assert MISTAKES["cfg_chunks_swapped"].words(uncond="eps_uncond", cond="eps_cond") in swapped.message
