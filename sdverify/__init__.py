"""Verification suite for the Stable Diffusion v1.5 pipeline.

The public API is imported on first access (PEP 562), so ``import sdverify`` (the CLI's
startup, the pytest plugin's registration) stays free of torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("sdverify")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from sdverify import contract, reference
    from sdverify.checker import check_submission
    from sdverify.results import CheckResult, compare_tensors
    from sdverify.schedulers import make_scheduler
    from sdverify.zoo import load_components, materialize, weights_dir

# name -> (module, attribute); attribute None: the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "check_submission": ("sdverify.checker", "check_submission"),
    "CheckResult": ("sdverify.results", "CheckResult"),
    "compare_tensors": ("sdverify.results", "compare_tensors"),
    "contract": ("sdverify.contract", None),
    "reference": ("sdverify.reference", None),
    "load_components": ("sdverify.zoo", "load_components"),
    "weights_dir": ("sdverify.zoo", "weights_dir"),
    "materialize": ("sdverify.zoo", "materialize"),
    "make_scheduler": ("sdverify.schedulers", "make_scheduler"),
}

__all__ = [
    "CheckResult",
    "__version__",
    "check_submission",
    "compare_tensors",
    "contract",
    "load_components",
    "make_scheduler",
    "materialize",
    "reference",
    "weights_dir",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sdverify' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
