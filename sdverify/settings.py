"""How a submission is checked or graded: one frozen settings object for every front end.

``sdverify check``, ``sdverify grade``, ``sdverify autograder`` (the Gradescope bundle and its
run), the pytest plugin's ``--sdverify-*`` options and the library (``check_submission``,
``grade_submission``, ``grade_batch``) all take a :class:`Settings`, so a setting means the same
everywhere and reaches both submission kinds.  The numbers are the contract's
(:mod:`sdverify.contract`); the two commands differ only in their limits: :data:`CHECK`, :data:`GRADE`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdverify import contract as C


@dataclass(frozen=True)
class Settings:
    """Which weights the submission and the expectations use, where it runs, its limits and isolation.

    Timeouts are named for what they bound: ``call_timeout`` one call of student code (a ``.py``
    API function call, a notebook cell), ``timeout`` the whole submission (None: no bound).
    """

    preset: str = "tiny"
    seed: int = 0  # zoo weight seed: the submission's components and the expected values alike
    weights: str | None = None  # a local diffusers folder with real weights
    device: str = "cpu"  # where a .py's functions run (notebook kernels are CPU-only)
    call_timeout: float = C.GRADE_CELL_TIMEOUT_S
    timeout: float | None = C.GRADE_NOTEBOOK_TIMEOUT_S
    threads: int = 1  # torch threads in a kernel and the grader (same count: same rounding)
    sandbox: str | None = None  # one of isolation.CHOICES (None: $SDVERIFY_SANDBOX, else auto)
    kernel_memory_mb: int = C.GRADE_KERNEL_MEMORY_MB  # address space a notebook kernel may add (0: no limit)
    child_memory_mb: int | None = C.CHECK_MEMORY_LIMIT_MB  # what a .py's child may add (None: no limit)
    allow: tuple[str, ...] = ()  # names every exercise (or function) may use after all (--allow)
    probe_seed: int | None = None  # a .py module's drawn cases (sdverify.checker.cases; None: a new one)

    def __post_init__(self) -> None:
        for name in ("call_timeout", "timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 seconds (or None for no bound), got {value!r}")
        object.__setattr__(self, "allow", tuple(self.allow))  # a list from a caller stays hashable


GRADE = Settings()  # sdverify grade and the bundle: a cell or call may take minutes, a submission 15
CHECK = Settings(call_timeout=C.CHECK_TIMEOUT_S, timeout=None)  # sdverify check and the plugin: per call only
