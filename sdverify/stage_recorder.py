"""Per-stage wall times, shapes and dtypes of one pipeline run.

One recorder serves the ``trace`` CLI table, the shape/dtype snapshot test and the GPU
timing suite; on CUDA it synchronises around each stage so times are real.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    tensors: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def record(self, **tensors: torch.Tensor) -> None:
        """Remember the shape and dtype of named tensors produced by this stage."""
        for key, value in tensors.items():
            self.tensors[key] = (tuple(value.shape), str(value.dtype).replace("torch.", ""))


@dataclass
class Trace:
    device: torch.device | str = "cpu"
    on_step: Callable[[int, int], None] | None = None
    stages: list[Stage] = field(default_factory=list)

    def _sync(self) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        stage = Stage(name)
        self._sync()
        start = time.perf_counter()
        yield stage
        self._sync()
        stage.seconds = time.perf_counter() - start
        self.stages.append(stage)

    def step(self, index: int, total: int) -> None:
        if self.on_step is not None:
            self.on_step(index, total)

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    def seconds(self) -> dict[str, float]:
        return {s.name: s.seconds for s in self.stages}

    def shapes(self) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
        """Stage -> tensor name -> (shape, dtype): device- and time-free, fit for snapshots."""
        return {s.name: dict(s.tensors) for s in self.stages}
