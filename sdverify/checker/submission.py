"""Naming and loading a student submission: a ``.py`` file or an importable module.

The grader only *resolves* the target (is the file there and readable?); importing,
which runs the student's code, happens in the sandboxed child alone.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

from sdverify.contract import API_NAMES
from sdverify.errors import UsageError

REFERENCE = "sdverify.reference"


@dataclass(frozen=True)
class Target:
    """A resolved submission: ``kind`` is ``"path"`` (absolute file) or ``"module"``.

    ``bundled``: no target was named (``sdverify check`` alone), so this is the kit's reference
    checking itself, the only code exempt from the delegation policy.  A path or module name
    that leads to the kit's code (a link to ``sdverify/reference.py``, ``sdverify.reference``)
    is graded like any submission, and charged for using the kit."""

    kind: Literal["path", "module"]
    value: str
    bundled: bool = False

    @property
    def display(self) -> str:
        """How reports name it: the path as given to the loader, or the module name."""
        return self.value


def resolve_target(target: str | os.PathLike[str] | None) -> Target:
    """Turn the user's argument into a :class:`Target` without running any of its code.

    Raises ``FileNotFoundError``/``ValueError`` (usage errors) for an unreadable path or a
    module name that cannot be found; a file with a syntax error resolves fine and fails
    later, as a graded submission.
    """
    text = os.fspath(target).strip() if target is not None else ""
    if not text:
        return Target("module", REFERENCE, bundled=True)
    path = Path(text).expanduser()
    looks_like_path = text.endswith(".py") or os.sep in text or path.exists()
    if looks_like_path:
        if path.is_dir():
            path = path / "__init__.py"
        if not path.is_file():
            raise FileNotFoundError(f"submission {text!r} is not a readable Python file")
        if not os.access(path, os.R_OK):
            raise FileNotFoundError(f"submission {text!r} is not readable (permission denied)")
        return Target("path", str(path.resolve()))
    if not all(part.isidentifier() for part in text.split(".")):
        raise UsageError(f"submission {text!r} is neither an existing .py file nor a module name")
    top = text.split(".")[0]
    # PathFinder looks the top-level name up on sys.path without executing anything.
    if (
        top not in sys.builtin_module_names
        and top not in sys.modules
        and (importlib.machinery.PathFinder.find_spec(top, [os.getcwd(), *sys.path]) is None)
    ):
        raise UsageError(f"submission module {text!r} not found (no {top!r} on sys.path or in {os.getcwd()})")
    return Target("module", text)


def source_of(target: Target, search_dir: str, limit: int = 4 << 20) -> str | None:
    """The submission's source text, found without running any of it (None: not found,
    not text, or over ``limit`` bytes).  A module name is looked up part by part on the path."""
    if target.kind == "path":
        path: Path | None = Path(target.value)
    else:
        path, places = None, [search_dir, *sys.path]
        for part in target.value.split("."):
            spec = importlib.machinery.PathFinder.find_spec(part, places)
            if spec is None or spec.origin is None:
                return None
            path = Path(spec.origin)
            places = list(spec.submodule_search_locations or [])
    try:
        if path is None or path.suffix != ".py" or path.stat().st_size > limit:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def load_module(target: Target, search_dir: str) -> ModuleType:
    """Import the submission (child process only).  ``search_dir`` is where module names resolve."""
    if target.kind == "path":
        spec = importlib.util.spec_from_file_location("sdverify_submission", target.value)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {target.value} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        sys.path.insert(0, str(Path(target.value).parent))  # so the student's own helpers import
        spec.loader.exec_module(module)
        return module
    sys.path.insert(0, search_dir)
    return importlib.import_module(target.value)


class Implementation:
    """An API implementation loaded in *this* process, for the pytest layer (``--sdverify-impl``).

    The grader never uses it (it sandboxes); it serves the contract tests, where a student
    runs the suite on their own code.  Missing API names fail the test that asks for them.
    """

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module = module
        self.name = name

    @classmethod
    def load(cls, target: str | None) -> Implementation:
        resolved = resolve_target(target)
        return cls(load_module(resolved, os.getcwd()), resolved.display)

    def __getattr__(self, attr: str):
        if attr in API_NAMES and not callable(getattr(self.module, attr, None)):
            import pytest

            pytest.fail(f"not implemented: {self.name} defines no {attr}()", pytrace=False)
        return getattr(self.module, attr)
