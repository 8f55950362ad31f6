"""Timers that tell the truth on CUDA: synchronise, warm up, take medians.

CUDA kernels run asynchronously, so a bare ``perf_counter`` around a model call measures
the launch, not the work.  Every sample here is taken between two
``torch.cuda.synchronize()`` calls, i.e. it is the wall time a user waits for, launch
overhead included (CUDA events would hide the host-side gaps).  Warm-up calls absorb
cuDNN autotuning, allocator growth and lazy initialisation; the median of the repeats
ignores the odd sample hit by a clock change or a noisy neighbour.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


def synchronize(device: str | torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: str | torch.device) -> float:
    """Seconds ``fn()`` takes, synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class Timing:
    """Repeated samples (seconds) of one timed stage.

    ``iterations`` is the work in one sample (denoising steps for the loop) so that
    ``per_second`` reads as it/s; ``share_of`` names the timing this one is a part of
    (a stage of the end-to-end run) so a report can show its share.
    """

    name: str
    samples: list[float] = field(default_factory=list)
    iterations: int = 1
    share_of: str | None = None

    @property
    def median(self) -> float:
        if not self.samples:
            raise ValueError(f"timing {self.name!r} has no samples; time at least one call")
        return statistics.median(self.samples)

    @property
    def per_second(self) -> float:
        return self.iterations / self.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples_s": list(self.samples),
            "median_s": self.median,
            "iterations": self.iterations,
            "share_of": self.share_of,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timing:
        return cls(data["name"], list(data["samples_s"]), data["iterations"], data["share_of"])


def measure_interleaved(
    fns: dict[str, Callable[[], Any]],
    *,
    device: str | torch.device,
    repeats: int,
    warmup: int,
    iterations: int = 1,
) -> dict[str, Timing]:
    """Time several callables round-robin: warm-up rounds first, then ``repeats`` rounds.

    Interleaving makes slow drift (thermal throttling, a neighbour's load) hit every
    contender alike, which is what a ratio between them needs.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    timings = {name: Timing(name, iterations=iterations) for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            timings[name].samples.append(time_call(fn, device))
    return timings


def paired_ratio(numerator: Timing, denominator: Timing) -> float:
    """Median of per-round ratios of two interleaved timings (robust to drift between rounds)."""
    if len(numerator.samples) != len(denominator.samples) or not numerator.samples:
        raise ValueError(
            f"paired_ratio needs interleaved timings with equal, non-zero sample counts; "
            f"got {len(numerator.samples)} ({numerator.name}) and {len(denominator.samples)} ({denominator.name})"
        )
    return statistics.median(a / b for a, b in zip(numerator.samples, denominator.samples))


@contextmanager
def component_clock(modules: dict[str, torch.nn.Module], device: str | torch.device) -> Iterator[dict[str, float]]:
    """Seconds spent inside each module's forward, summed over calls, synchronised at both ends.

    Forward hooks time any pipeline the same way, whoever calls the modules: the
    reference and ``StableDiffusionPipeline`` get per-component times by one method.
    """
    seconds = {name: 0.0 for name in modules}
    starts: dict[str, float] = {}
    handles = []
    for name, module in modules.items():

        def pre(module, args, name=name):
            synchronize(device)
            starts[name] = time.perf_counter()

        def post(module, args, output, name=name):
            synchronize(device)
            seconds[name] += time.perf_counter() - starts.pop(name)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()
