"""Which probes a submission is graded on: fixed cases, and cases drawn per run.

The fixed cases are documented (docs/checker.md) and the same in every run.  Beside them,
each run draws guidance scales, seeds and a prompt from a seed the grader keeps
(:func:`draw`): a submission special-cased to the documented values loses the drawn cases.
The seed is printed in the report, so a regrade with ``--probe-seed`` draws the same cases,
and the child sees a probe's arguments only when the grader hands it that probe.

The grader computes every input here with the reference (trusted); the sandboxed child
never imports this module.
"""

from __future__ import annotations

import random
import secrets

import torch

from sdverify import reference
from sdverify.checker.probes import DENOISE_SCHEDULE, Env, Plan, Probe

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
GENERATE_STEPS = 3

# Drawn cases: the scheduler of each is fixed (so a mistake specific to one scheduler costs the
# same in every run), the values are drawn.  DDPM for denoise_step: its step uses the drawn seed.
DRAWN_CFG = 3  # cfg_combine cases, each with its own guidance scale
DRAWN_DENOISE = "ddpm"
DRAWN_GENERATE = "pndm"
# Guidance scales are drawn from this range, away from the documented ones and from 0 and 1
# (where several mistakes coincide with the formula), in steps of 0.05.
DRAWN_SCALES = (1.5, 12.0)
_DOCUMENTED = (0.0, 1.0, *CFG_CASES, *(w for _, _, w in DENOISE_CASES + GENERATE_CASES))
_WORDS = (
    ("a watercolour", "an oil painting", "a photograph", "a pencil sketch", "a render"),
    ("of a red fox", "of a lighthouse", "of two cats", "of a teapot", "of an old tram"),
    ("at dawn", "in the snow", "on the moon", "under a bridge", "in a forest"),
)


def new_seed() -> int:
    """A probe seed for a run that was given none."""
    return secrets.randbelow(2**31)


def _scale(rng: random.Random) -> float:
    while True:
        w = round(rng.uniform(*DRAWN_SCALES) * 20) / 20
        if all(abs(w - d) >= 0.25 for d in _DOCUMENTED):
            return w


def draw(seed: int) -> list[Probe]:
    """The drawn cases of a run: ``cfg_combine[drawnK]``, ``denoise_step[drawn]``, ``generate[drawn]``.

    Their ids are the same in every run (one row per check in class files); their arguments
    come from ``seed`` alone, and need no inputs beyond the fixed plan's.
    """
    rng = random.Random(seed)
    probes = [
        Probe(f"cfg_combine[drawn{i + 1}]", "cfg_combine", {"u": "cfg_u", "c": "cfg_c", "w": _scale(rng)})
        for i in range(DRAWN_CFG)
    ]
    denoise = {"scheduler": DRAWN_DENOISE, "cond": "cond_astronaut", "w": _scale(rng), "seed": rng.randrange(2**31)}
    probes.append(Probe("denoise_step[drawn]", "denoise_step", denoise))
    prompt = " ".join(rng.choice(words) for words in _WORDS)
    generate = {"scheduler": DRAWN_GENERATE, "prompt": prompt, "w": _scale(rng), "seed": rng.randrange(2**31)}
    probes.append(Probe("generate[drawn]", "generate", {**generate, "steps": GENERATE_STEPS}))
    return probes


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
    """The fixed cases: inputs computed with the reference on ``env``, plus the probe list.

    ``cfg_calls`` are the (eps_uncond, eps_cond, w) calls the CFG property suite makes,
    recorded on the reference; the child makes them on the student's ``cfg_combine``.
    """
    c = env.components
    inputs: dict[str, torch.Tensor] = {}
    probes: list[Probe] = []
    for label, text in PROMPTS.items():
        probes.append(Probe(f"tokenize[{label}]", "tokenize", {"prompt": text}))
    for label in ("astronaut", "empty", "long"):
        probes.append(Probe(f"encode_prompt[{label}]", "encode_prompt", {"prompt": PROMPTS[label]}))
    for name, seed in (("pndm", 1), ("euler", 2)):
        probes.append(Probe(f"initial_latents[{name}]", "initial_latents", {"scheduler": name, "seed": seed}))
    probes.append(
        Probe("initial_latents[euler,again]", "initial_latents", {"scheduler": "euler", "seed": 2}, kind="repeat")
    )

    inputs["cfg_u"], inputs["cfg_c"] = _noise(70), _noise(71)
    for w in CFG_CASES:
        probes.append(Probe(f"cfg_combine[w={w:g}]", "cfg_combine", {"u": "cfg_u", "c": "cfg_c", "w": w}))
    for i, (u, cnd, w) in enumerate(cfg_calls):
        inputs[f"cfg_u{i}"], inputs[f"cfg_c{i}"] = u.detach().cpu().contiguous(), cnd.detach().cpu().contiguous()
        args = {"u": f"cfg_u{i}", "c": f"cfg_c{i}", "w": w}
        probes.append(Probe(f"cfg_combine[call {i}]", "cfg_combine", args, kind="replay"))

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
        args = {"scheduler": name, "cond": f"cond_{label}", "w": w, "seed": 30 + i}
        probes.append(Probe(f"denoise_step[{name}]", "denoise_step", args))
        if name == "ddpm":  # stochastic step: the same generator seed must give the same result
            probes.append(Probe(f"denoise_step[{name},again]", "denoise_step", args, kind="repeat"))

    inputs["decode_latents"] = _noise(40)
    probes.append(Probe("decode_latents[noise]", "decode_latents", {"latents": "decode_latents"}))
    # Values beyond [-1, 1] on purpose: a decoded image overshoots and must be clamped.
    inputs["image"] = _noise(50, (1, 3, 512, 512), (-1.3, 1.3))
    probes.append(Probe("to_pil[uniform]", "to_pil", {"image": "image"}))
    for i, (name, label, w) in enumerate(GENERATE_CASES):
        args = {"scheduler": name, "prompt": PROMPTS[label], "w": w, "seed": 60 + i, "steps": GENERATE_STEPS}
        probes.append(Probe(f"generate[{name}]", "generate", args))
    return Plan(probes, {k: v.contiguous() for k, v in inputs.items()})
