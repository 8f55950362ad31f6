"""The calls a submission is graded on: named inputs and one recipe that runs them.

The grader builds the inputs with the reference (trusted), the sandboxed child runs
the recipes on the student's functions, and the grader runs the very same recipes on
the reference (expected values) and on known-mistake variants (to name a mistake).
One recipe for all three means a difference can only come from the implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from sdverify import reference
from sdverify.contract import API_NAMES
from sdverify.schedulers import make_scheduler
from sdverify.zoo import Components

PROMPTS = {
    "astronaut": "a photograph of an astronaut riding a horse",
    "empty": "",
    "long": "an extremely detailed oil painting of "
    + ", ".join(f"a {c} cat number {i}" for i, c in enumerate(["red", "blue", "green"] * 8)),
    "unicode": "Café au lait, naïve façade — 3 cats!!! 🐈",
}
# Scheduler cases: PNDM (SD1.5's default), DDPM (stochastic step: the generator matters)
# and Euler (sigma-based: init_noise_sigma and scale_model_input matter), each with its
# own prompt and guidance scale.
DENOISE_CASES = (("pndm", "astronaut", 7.5), ("ddpm", "unicode", 3.0), ("euler", "astronaut", 7.5))
GENERATE_CASES = (("pndm", "astronaut", 7.5), ("ddpm", "unicode", 4.0), ("euler", "long", 7.5))
CFG_CASES = (7.5, 3.0)  # guidance scales of cfg_combine's correctness cases
DENOISE_SCHEDULE = 10  # set_timesteps(10); the first DENOISE_STEPS are checked
DENOISE_STEPS = 2
GENERATE_STEPS = 3


@dataclass(frozen=True)
class Probe:
    """One recipe run: ``function`` is the API name it exercises, ``args`` are JSON-able."""

    id: str
    function: str
    args: dict[str, Any] = field(default_factory=dict)


def is_case(probe: Probe) -> bool:
    """A correctness case (points): a first run, not a repeat (``,again``) nor a property-suite call."""
    return not probe.id.endswith(",again]") and not probe.id.startswith("cfg_combine[call ")


@dataclass
class Plan:
    probes: list[Probe]
    inputs: dict[str, torch.Tensor]  # CPU, contiguous: written to the child as safetensors

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


def _noise(
    seed: int, shape: tuple[int, ...] = (1, 4, 64, 64), bounds: tuple[float, float] | None = None
) -> torch.Tensor:
    """Standard normal, or uniform within ``bounds`` (low, high)."""
    g = torch.Generator().manual_seed(seed)
    if bounds is None:
        return torch.randn(shape, generator=g)
    low, high = bounds
    return torch.rand(shape, generator=g) * (high - low) + low


def build_plan(env: Env, cfg_calls: list[tuple[torch.Tensor, torch.Tensor, float]]) -> Plan:
    """Inputs computed with the reference on ``env`` plus the probe list.

    ``cfg_calls`` are the (eps_uncond, eps_cond, w) calls the CFG property suite makes,
    recorded on the reference; the child makes them on the student's ``cfg_combine``.
    """
    c = env.components
    inputs: dict[str, torch.Tensor] = {}
    probes: list[Probe] = []
    for label in PROMPTS:
        probes.append(Probe(f"tokenize[{label}]", "tokenize", {"prompt": label}))
    for label in ("astronaut", "empty", "long"):
        probes.append(Probe(f"encode_prompt[{label}]", "encode_prompt", {"prompt": label}))
    for name, seed in (("pndm", 1), ("euler", 2)):
        probes.append(Probe(f"initial_latents[{name}]", "initial_latents", {"scheduler": name, "seed": seed}))
    probes.append(Probe("initial_latents[euler,again]", "initial_latents", {"scheduler": "euler", "seed": 2}))

    inputs["cfg_u"], inputs["cfg_c"] = _noise(70), _noise(71)
    for w in CFG_CASES:
        probes.append(Probe(f"cfg_combine[w={w:g}]", "cfg_combine", {"u": "cfg_u", "c": "cfg_c", "w": w}))
    for i, (u, cnd, w) in enumerate(cfg_calls):
        inputs[f"cfg_u{i}"], inputs[f"cfg_c{i}"] = u.detach().cpu().contiguous(), cnd.detach().cpu().contiguous()
        probes.append(Probe(f"cfg_combine[call {i}]", "cfg_combine", {"u": f"cfg_u{i}", "c": f"cfg_c{i}", "w": w}))

    with torch.no_grad():
        inputs["uncond"] = reference.encode_prompt(c.tokenizer, c.text_encoder, "").cpu()
        for label in {p for _, p, _ in DENOISE_CASES}:
            inputs[f"cond_{label}"] = reference.encode_prompt(c.tokenizer, c.text_encoder, PROMPTS[label]).cpu()
    for i, (name, label, w) in enumerate(DENOISE_CASES):
        sched = env.scheduler(name)
        sched.set_timesteps(DENOISE_SCHEDULE)
        inputs[f"latents_{name}"] = reference.initial_latents(
            sched, torch.Generator().manual_seed(20 + i), "cpu", torch.float32
        )
        args = {"scheduler": name, "prompt": label, "w": w, "seed": 30 + i}
        probes.append(Probe(f"denoise_step[{name}]", "denoise_step", args))
        if name == "ddpm":  # stochastic step: the same generator seed must give the same result
            probes.append(Probe(f"denoise_step[{name},again]", "denoise_step", args))

    inputs["decode_latents"] = _noise(40)
    probes.append(Probe("decode_latents[noise]", "decode_latents", {"latents": "decode_latents"}))
    # Values beyond [-1, 1] on purpose: a decoded image overshoots and must be clamped.
    inputs["image"] = _noise(50, (1, 3, 512, 512), (-1.3, 1.3))
    probes.append(Probe("to_pil[uniform]", "to_pil", {"image": "image"}))
    for i, (name, label, w) in enumerate(GENERATE_CASES):
        args = {"scheduler": name, "prompt": label, "w": w, "seed": 60 + i, "steps": GENERATE_STEPS}
        probes.append(Probe(f"generate[{name}]", "generate", args))
    return Plan(probes, {k: v.contiguous() for k, v in inputs.items()})


def _tokenize(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.components.tokenizer, PROMPTS[a["prompt"]])]


def _encode_prompt(fn: Callable, env: Env, a: dict[str, Any]) -> list[Any]:
    return [fn(env.components.tokenizer, env.components.text_encoder, PROMPTS[a["prompt"]])]


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
        cond, uncond = env.tensor(f"cond_{a['prompt']}"), env.tensor("uncond")
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
            PROMPTS[a["prompt"]],
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


def with_function(name: str, fn: Any) -> SimpleNamespace:
    """The reference API with one function replaced: how a known mistake is simulated."""
    return SimpleNamespace(**{**{n: getattr(reference, n) for n in API_NAMES}, name: fn})
