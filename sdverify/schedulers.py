"""The schedulers SD1.5 users pick in diffusers, built from the SD1.5 scheduler config."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from sdverify.presets import SD15_SCHEDULER

SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "pndm": PNDMScheduler,
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler_a": EulerAncestralDiscreteScheduler,
    "lms": LMSDiscreteScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "heun": HeunDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}

# Sigma-based (continuous "k-diffusion") schedulers: they scale the model input by
# 1/sqrt(sigma^2+1) and start from noise of std init_noise_sigma > 1.
SIGMA_BASED = frozenset({"euler", "euler_a", "lms", "heun"})
# Schedulers whose step() draws noise (take a generator).
STOCHASTIC = frozenset({"ddpm", "euler_a"})


def make_scheduler(name: str, config: dict[str, Any] | None = None) -> SchedulerMixin:
    """A fresh scheduler ``name`` from ``config`` (default: SD1.5's)."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {sorted(SCHEDULERS)}") from None
    return cls.from_config(dict(config or SD15_SCHEDULER))


def scheduler_name(scheduler: SchedulerMixin) -> str | None:
    """The registry name of a scheduler instance, or None for one we do not list."""
    for name, cls in SCHEDULERS.items():
        if type(scheduler) is cls:
            return name
    return None


# diffusers returns these attributes as floats, numpy arrays or (0-d) tensors depending on
# the version and the scheduler (0.42 made Euler's init_noise_sigma a 0-d tensor): read
# them through these so comparisons never depend on the installed version.
def init_noise_sigma(scheduler: SchedulerMixin) -> float:
    """``scheduler.init_noise_sigma`` as a Python float."""
    return float(torch.as_tensor(scheduler.init_noise_sigma))


def timesteps(scheduler: SchedulerMixin) -> torch.Tensor:
    """``scheduler.timesteps`` as a CPU tensor (call after ``set_timesteps``)."""
    return torch.as_tensor(scheduler.timesteps).detach().cpu()


def sigmas(scheduler: SchedulerMixin) -> torch.Tensor:
    """``scheduler.sigmas`` of a sigma-based scheduler as a CPU tensor."""
    return torch.as_tensor(scheduler.sigmas).detach().cpu()
