"""The three ways lessons build a scheduler for SD1.5, and what a built scheduler gives (for fixtures and tests).

- ``from_pretrained``: ``X.from_pretrained(repo, subfolder="scheduler")``, which reads
  ``scheduler/scheduler_config.json``;
- ``from_config``: ``X.from_config(pipe.scheduler.config)``, the config of the pipeline's
  PNDM scheduler (which carries PNDM's own defaults, e.g. ``timestep_spacing="leading"``);
- ``by_hand``: ``X(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdverify.schedulers import scheduler_class

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "scheduler_idioms.json"
IDIOMS = ("from_pretrained", "from_config", "by_hand")
STEPS = (1, 3, 25, 30, 50, 70)
BY_HAND = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def facts(name: str, build: Any) -> dict[str, Any]:
    """What scheduler ``name`` (made by ``build(cls)``) gives: ``init_noise_sigma`` before
    ``set_timesteps`` (read there by the diffusers documentation), then per step count its
    timesteps, sigmas (where it has them) and ``init_noise_sigma``, or the error ``set_timesteps``
    raises (a hand-built PNDM keeps its PRK steps and cannot make 1 step)."""
    cls = scheduler_class(name)
    scheduler = build(cls)
    out: dict[str, Any] = {"init_noise_sigma_before": _number(scheduler.init_noise_sigma), "steps": {}}
    for steps in STEPS:
        scheduler = build(cls)
        try:
            scheduler.set_timesteps(steps)
        except ValueError as exc:
            out["steps"][str(steps)] = {"error": type(exc).__name__}
            continue
        sigmas = getattr(scheduler, "sigmas", None)
        out["steps"][str(steps)] = {
            "timesteps": torch.as_tensor(scheduler.timesteps).double().tolist(),
            "sigmas": None if sigmas is None else torch.as_tensor(sigmas).double().tolist(),
            "init_noise_sigma": _number(scheduler.init_noise_sigma),
        }
    return out


def _number(value: Any) -> float:
    return float(torch.as_tensor(value))
