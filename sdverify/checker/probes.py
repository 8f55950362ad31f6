"""The calls a submission is graded on: one recipe per API function that runs a probe.

The sandboxed child runs the recipes on the student's functions, and the grader runs the
very same recipes on the reference (expected values) and on known-mistake variants (to name
a mistake).  One recipe for all three means a difference can only come from the
implementation.  Which probes there are, and their inputs, is the grader's business
(:mod:`.cases`): nothing here imports the reference, so the child never loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from sdverify.schedulers import make_scheduler
from sdverify.zoo import Components

DENOISE_SCHEDULE = 10  # set_timesteps(10); the first DENOISE_STEPS are checked
DENOISE_STEPS = 2


# What a probe is for: a correctness case (points), a second run of a case with the same
# arguments (reproducibility), or a call recorded on the reference that the property suite
# replays (the CFG algebra).  Only the grader reads it; the child runs every probe alike.
ProbeKind = Literal["case", "repeat", "replay"]


@dataclass(frozen=True)
class Probe:
    """One recipe run: ``function`` is the API name it exercises, ``args`` are JSON-able."""

    id: str
    function: str
    args: dict[str, Any] = field(default_factory=dict)
    kind: ProbeKind = "case"


def is_case(probe: Probe) -> bool:
    """A correctness case (points): a first run, not a repeat nor a property-suite call."""
    return probe.kind == "case"


@dataclass
class Plan:
    probes: list[Probe]
    inputs: dict[str, torch.Tensor]  # CPU, contiguous: written to the child as safetensors
    seed: int | None = None  # what the drawn cases among ``probes`` were drawn from (None: none drawn)

    def of(self, function: str) -> list[Probe]:
        return [p for p in self.probes if p.function == function]


@dataclass
class Env:
    """What a recipe runs against: components, the plan's inputs and the target device/dtype."""

    components: Components
    inputs: dict[str, torch.Tensor]
    device: torch.device
    dtype: torch.dtype

    def scheduler(self, name: str):
        return make_scheduler(name, dict(self.components.scheduler.config))

    def tensor(self, key: str) -> torch.Tensor:
        # A fresh copy per call: an implementation that writes into its inputs harms only itself.
        return self.inputs[key].to(self.device).clone()


def _tokenize(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.components.tokenizer, a["prompt"])]


def _encode_prompt(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.components.tokenizer, env.components.text_encoder, a["prompt"])]


def _initial_latents(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.scheduler(a["scheduler"]), torch.Generator().manual_seed(a["seed"]), env.device, env.dtype)]


def _cfg_combine(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    # The inputs come back too: the grader replays in-place changes to them.
    u, cond = env.tensor(a["u"]), env.tensor(a["c"])
    return [fn(u, cond, a["w"]), u, cond]


def _denoise_step(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    sched = env.scheduler(a["scheduler"])
    sched.set_timesteps(DENOISE_SCHEDULE, device=env.device)
    generator = torch.Generator().manual_seed(a["seed"])
    latents, values = env.tensor(f"latents_{a['scheduler']}"), []
    for t in sched.timesteps[:DENOISE_STEPS]:
        cond, uncond = env.tensor(a["cond"]), env.tensor("uncond")
        latents = fn(env.components.unet, sched, latents, t, cond, uncond, a["w"], generator)
        values.append(latents)
        if not isinstance(latents, torch.Tensor):
            break  # the next step could only fail on it
    return values


def _decode_latents(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.components.vae, env.tensor(a["latents"]))]


def _to_pil(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.tensor(a["image"]))]


def _generate(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    c = env.components
    generator = torch.Generator().manual_seed(a["seed"])
    return [
        fn(
            c.tokenizer,
            c.text_encoder,
            c.unet,
            c.vae,
            env.scheduler(a["scheduler"]),
            a["prompt"],
            num_inference_steps=a["steps"],
            guidance_scale=a["w"],
            generator=generator,
        )
    ]


# API function -> how a probe calls it (function, env, the probe's args) -> its values: one entry a function.
RECIPES: dict[str, Callable[[Callable, Env, dict[str, Any]], list[Any]]] = {
    "tokenize": _tokenize,
    "encode_prompt": _encode_prompt,
    "initial_latents": _initial_latents,
    "cfg_combine": _cfg_combine,
    "denoise_step": _denoise_step,
    "decode_latents": _decode_latents,
    "to_pil": _to_pil,
    "generate": _generate,
}


def run_probe(impl: Any, env: Env, probe: Probe) -> list[Any]:
    """Run one recipe on ``impl`` (a module or namespace with the API names); return its values.

    Exceptions from the implementation propagate: the caller decides what they mean.
    """
    recipe = RECIPES.get(probe.function)
    if recipe is None:
        raise ValueError(f"unknown probe function {probe.function!r}")
    return recipe(getattr(impl, probe.function), env, probe.args)
