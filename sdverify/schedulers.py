"""The schedulers SD1.5 users pick in diffusers, built from the SD1.5 scheduler config."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

from sdverify.presets import SD15_SCHEDULER


class Scheduler(Protocol):
    """What the pipeline uses of a diffusers scheduler.

    Every ``SchedulerMixin`` subclass provides these, but ``SchedulerMixin`` itself declares
    none of them (``config`` comes from ``ConfigMixin``), so the reference API is typed
    against this protocol.  ``step`` and ``set_timesteps`` take different keyword arguments
    per scheduler (``generator``, ``eta``...), hence the loose callables.
    """

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Any: ...
    @property
    def config(self) -> Any: ...  # diffusers' FrozenDict: keys readable as attributes too
    @property
    def init_noise_sigma(self) -> Any: ...  # float, numpy scalar or 0-d tensor (see init_noise_sigma())
    @property
    def timesteps(self) -> torch.Tensor: ...
    @property
    def set_timesteps(self) -> Callable[..., None]: ...
    @property
    def scale_model_input(self) -> Callable[..., torch.Tensor]: ...
    @property
    def step(self) -> Callable[..., Any]: ...


# name -> (module under diffusers.schedulers, class).  Classes are imported on first use,
# so that listing the names (the command line's --help) imports neither torch nor diffusers;
# from their modules, not the package root, whose names type checkers see as placeholders.
SCHEDULERS: dict[str, tuple[str, str]] = {
    "pndm": ("scheduling_pndm", "PNDMScheduler"),
    "ddpm": ("scheduling_ddpm", "DDPMScheduler"),
    "ddim": ("scheduling_ddim", "DDIMScheduler"),
    "euler": ("scheduling_euler_discrete", "EulerDiscreteScheduler"),
    "euler_a": ("scheduling_euler_ancestral_discrete", "EulerAncestralDiscreteScheduler"),
    "lms": ("scheduling_lms_discrete", "LMSDiscreteScheduler"),
    "dpm": ("scheduling_dpmsolver_multistep", "DPMSolverMultistepScheduler"),
    "heun": ("scheduling_heun_discrete", "HeunDiscreteScheduler"),
    "unipc": ("scheduling_unipc_multistep", "UniPCMultistepScheduler"),
}

# Sigma-based (continuous "k-diffusion") schedulers: they scale the model input by
# 1/sqrt(sigma^2+1) and start from noise of std init_noise_sigma > 1.
SIGMA_BASED = frozenset({"euler", "euler_a", "lms", "heun"})
# Schedulers whose step() draws noise (take a generator).
STOCHASTIC = frozenset({"ddpm", "euler_a"})


def make_scheduler(name: str, config: dict[str, Any] | None = None) -> Scheduler:
    """A fresh scheduler ``name`` from ``config`` (default: SD1.5's)."""
    cls = scheduler_class(name)
    # from_config is ConfigMixin's, the other base every diffusers scheduler has.
    scheduler: Scheduler = cls.from_config(dict(config or SD15_SCHEDULER))  # type: ignore[attr-defined]
    return scheduler


def scheduler_class(name: str) -> type[SchedulerMixin]:
    """The diffusers class registered as ``name``."""
    try:
        module, cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {sorted(SCHEDULERS)}") from None
    found: type[SchedulerMixin] = getattr(importlib.import_module(f"diffusers.schedulers.{module}"), cls)
    return found


def scheduler_name(scheduler: object) -> str | None:
    """The registry name of a scheduler instance, or None for one we do not list."""
    for name in SCHEDULERS:
        if type(scheduler) is scheduler_class(name):
            return name
    return None


# diffusers returns these attributes as floats, numpy arrays or (0-d) tensors depending on
# the version and the scheduler (0.42 made Euler's init_noise_sigma a 0-d tensor): read
# them through these so comparisons never depend on the installed version.
def init_noise_sigma(scheduler: Scheduler) -> float:
    """``scheduler.init_noise_sigma`` as a Python float."""
    import torch

    return float(torch.as_tensor(scheduler.init_noise_sigma))


def timesteps(scheduler: Scheduler) -> torch.Tensor:
    """``scheduler.timesteps`` as a CPU tensor (call after ``set_timesteps``)."""
    import torch

    return torch.as_tensor(scheduler.timesteps).detach().cpu()


def sigmas(scheduler: Scheduler) -> torch.Tensor:
    """``scheduler.sigmas`` of a sigma-based scheduler as a CPU tensor."""
    import torch

    sigma_based: Any = scheduler  # only the SIGMA_BASED schedulers have sigmas
    return torch.as_tensor(sigma_based.sigmas).detach().cpu()
