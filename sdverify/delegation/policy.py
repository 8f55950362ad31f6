"""What a submission may not hand its work to, and the verdict on what it used.

A policy entry is a dotted name of a module or of a class.  For a module (``sdverify``),
any use counts: importing it or anything under it, calling its functions, handing in one of
its functions as your own.  For a class (``diffusers.DiffusionPipeline``) only *calling an
instance* counts, or one of its stage methods (:data:`STAGE_METHODS`: ``pipe.encode_prompt``,
``pipe.decode_latents``...), so loading the components through a pipeline stays allowed
while generating with it, or any stage of it, does not.  ``allow`` wins over ``forbid``:
``allow = ["sdverify.contract"]`` keeps the contract's numbers usable under ``forbid = ["sdverify"]``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from sdverify.contract import API_NAMES
from sdverify.delegation.tripwire import line_hashes
from sdverify.errors import UsageError
from sdverify.results import CheckResult, fail, ok

How = Literal["import", "reference", "call", "is", "copy"]
Kind = Literal["module", "class"]

# The kit itself and the ready-made text-to-image pipelines (StableDiffusionPipeline and every
# other pipeline subclass DiffusionPipeline; the AutoPipeline classes are factories of them).
DEFAULT_FORBID = (
    "sdverify",
    "diffusers.DiffusionPipeline",
    "diffusers.StableDiffusionPipeline",
    "diffusers.AutoPipelineForText2Image",
    "diffusers.AutoPipelineForImage2Image",
    "diffusers.AutoPipelineForInpainting",
)
# What "calling an instance" of a forbidden class covers: the instance itself (``pipe(...)``)
# and the pipeline's stage methods, each of which does one stage's work for the student.
STAGE_METHODS = (
    "__call__",
    "_encode_prompt",
    "encode_prompt",
    "prepare_latents",
    "prepare_extra_step_kwargs",
    "decode_latents",
    "run_safety_checker",
    "numpy_to_pil",
)
# The contract's numbers (shapes, ids, the scaling factor) are facts a student may import.
DEFAULT_ALLOW = ("sdverify.contract",)
# The module whose functions are the reference API: the tripwire watches calls of them.
REFERENCE = "sdverify.reference"
_NAME = re.compile(r"\*|[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_HOW_WORDS = {"import": "imports", "reference": "uses", "call": "calls", "is": "is", "copy": "runs a copy of"}
MAX_NAME = 200  # characters of a name a sandboxed process may report


def covers(entry: str, name: str) -> bool:
    """``entry`` names ``name`` or a module/class above it (``*`` names everything)."""
    return entry == "*" or name == entry or name.startswith(entry + ".")


@functools.lru_cache(maxsize=256)
def _resolve(entry: str) -> type | None:
    """The class a policy entry names, or None (a module, or not importable here).

    Policy entries are the instructor's data: resolving one may import its parent module.
    """
    parent, _, attr = entry.rpartition(".")
    if not parent or entry == "*":
        return None
    chatty = logging.getLogger("transformers")  # pipeline modules warn about optional image processors
    level = chatty.level
    chatty.setLevel(logging.ERROR)
    try:
        obj = getattr(importlib.import_module(parent), attr)
    except Exception:  # not importable here: judged by name, as a module
        return None
    finally:
        chatty.setLevel(level)
    return obj if isinstance(obj, type) else None


def kind(entry: str) -> Kind:
    """Whether a policy entry names a class (instances' calls count) or a module (every use counts)."""
    return "module" if _resolve(entry) is None else "class"


def _loaded(name: str) -> Any:
    """What ``name`` denotes among the modules already imported here, or None.

    Used on names from a submission (its source, its tripwire records): attribute access on
    loaded modules only, never an import of anything the submission names.
    """
    top, _, rest = name.partition(".")
    obj: Any = sys.modules.get(top)
    try:
        for part in rest.split(".") if rest else ():
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj


def known_names(name: str) -> tuple[str, ...]:
    """``name`` and, for a class of a package the grader has loaded, its bases in that package
    (``diffusers.StableDiffusionXLPipeline`` is also a ``diffusers.DiffusionPipeline``)."""
    cls = _loaded(name)
    if not isinstance(cls, type):
        return (name,)
    top = name.partition(".")[0]
    bases = (f"{top}.{base.__name__}" for base in cls.__mro__[1:] if base.__module__.split(".")[0] == top)
    return tuple(dict.fromkeys((name, *bases)))


@dataclass(frozen=True)
class Use:
    """One use of a watched name: ``names`` are what it is known by, most specific first;
    ``where`` the API function or exercise it is charged to ("" = the module's top level)."""

    how: How
    names: tuple[str, ...]
    where: str = ""
    at: str = ""  # where it was seen: "line 3", "cell 10", "at run time"

    def describe(self) -> str:
        text = f"{_HOW_WORDS[self.how]} {self.names[0]}"
        if self.how == "call" and isinstance(_loaded(self.names[0]), type):
            text = f"calls an instance of {self.names[0]}"
        if self.how == "is":
            text += " itself instead of its own code"
        return f"{text} ({self.at})" if self.at else text


def validate_names(names: object, where: str) -> tuple[str, ...]:
    """A policy list from a spec or the command line: dotted names (or ``*``); ValueError naming the bad one."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise UsageError(f"{where}: expected a list of dotted names, got {names!r}")
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UsageError(f"{where}: {name!r} is not a dotted name like 'sdverify' or 'diffusers.DiffusionPipeline'")
    return tuple(names)


@dataclass(frozen=True)
class Policy:
    """What one function or exercise may not use (``forbid``) unless ``allow`` names it."""

    forbid: tuple[str, ...] = DEFAULT_FORBID
    allow: tuple[str, ...] = DEFAULT_ALLOW

    def relaxed(self, allow: Iterable[str]) -> Policy:
        """This policy with more names allowed (``--allow``)."""
        return replace(self, allow=tuple(dict.fromkeys((*self.allow, *allow))))

    def broken_by(self, use: Use) -> str | None:
        """The forbid entry ``use`` breaks, or None."""
        if any(covers(entry, name) for entry in self.allow for name in use.names):
            return None
        for entry in self.forbid:
            if any(covers(entry, name) for name in use.names) and (use.how == "call" or kind(entry) == "module"):
                return entry
        return None

    def describe(self) -> str:
        """``forbid sdverify, diffusers.DiffusionPipeline and 4 more; allow sdverify.contract``."""

        def listed(names: tuple[str, ...]) -> str:
            return ", ".join(names[:2]) + (f" and {len(names) - 2} more" if len(names) > 2 else "")

        return f"forbid {listed(self.forbid)}" + (f"; allow {listed(self.allow)}" if self.allow else "")


# Per API function of ``sdverify check``: every stage under the same default policy.
CHECK_POLICY: Mapping[str, Policy] = {name: Policy() for name in API_NAMES}


@dataclass(frozen=True)
class Watch:
    """What a tripwire watches for a set of policies: module prefixes (imports), classes
    (calls of instances and of their ``methods``: the entry, the module defining the class and its qualified name, so
    that it is wrapped once that module is loaded, never importing it early) and modules
    whose functions' calls are recorded."""

    modules: tuple[str, ...]
    classes: tuple[tuple[str, str, str], ...]
    calls: tuple[str, ...]
    methods: tuple[str, ...] = STAGE_METHODS  # of the classes: what a call of counts
    texts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # of ``calls``: their lines' hashes

    @property
    def names(self) -> tuple[str, ...]:
        """Every watched entry (what the static scan looks for)."""
        return (*self.modules, *(entry for entry, _, _ in self.classes))

    def to_json(self) -> dict[str, Any]:
        return {
            "modules": list(self.modules),
            "classes": [list(c) for c in self.classes],
            "calls": list(self.calls),
            "methods": list(self.methods),
            "texts": {name: list(hashes) for name, hashes in self.texts.items()},
        }


def watch_lists(policies: Iterable[Policy]) -> Watch:
    """The union of the policies' forbidden names, sorted by kind."""
    entries = dict.fromkeys(e for p in policies for e in p.forbid if e != "*")
    modules = tuple(e for e in entries if kind(e) == "module")
    classes = tuple((e, cls.__module__, cls.__qualname__) for e in entries if (cls := _resolve(e)) is not None)
    calls = (REFERENCE,) if any(covers(m, REFERENCE) for m in modules) else ()
    return Watch(modules, classes, calls, texts={name: _text_hashes(name) for name in calls})


def _text_hashes(module: str) -> tuple[str, ...]:
    """The line hashes of a kit module's source, read here (the grader) from its file: a sandboxed
    process that compiles text sharing enough of them runs a copy of it (:mod:`.tripwire`)."""
    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return tuple(sorted(line_hashes(Path(origin).read_text(encoding="utf-8")))) if origin else ()


def from_records(records: object, where: str | None, at: str, limit: int = 200) -> list[Use]:
    """Uses from a sandboxed process's tripwire records (untrusted: every field checked).

    ``where`` charges them to a function the grader knows was running; None keeps each
    record's own ``where`` (import time: "" or an API function named by the identity check).
    Raises ValueError for anything malformed.
    """
    if not isinstance(records, list) or len(records) > limit:
        raise ValueError(f"tripwire records: expected a list of at most {limit}")
    uses = []
    for record in records:
        if not isinstance(record, dict):
            raise ValueError("tripwire record: not an object")
        how, names, own = record.get("how"), record.get("names"), record.get("where", "")
        if how not in _HOW_WORDS or not isinstance(names, list) or not 0 < len(names) <= 4:
            raise ValueError(f"tripwire record: bad how/names {str(record)[:80]}")
        if not all(isinstance(n, str) and 0 < len(n) <= MAX_NAME for n in names):
            raise ValueError("tripwire record: names must be short strings")
        if where is None and not isinstance(own, str):
            raise ValueError("tripwire record: where must be a string")
        uses.append(Use(how, tuple(names), where if where is not None else str(own)[:MAX_NAME], at))
    return uses


def own_work(id: str, subject: str, uses: Iterable[Use], policy: Policy, relax: str) -> CheckResult:
    """The gate of one function or exercise: passes unless a charged use breaks ``policy``.

    ``subject`` names what loses its points ("generate", "Exercise 4"); ``relax`` says how
    an instructor lifts the policy.
    """
    clause = f"{subject} is the submission's own work ({policy.describe()})"
    broken: dict[Use, str] = {}
    for use in uses:
        entry = policy.broken_by(use)
        if entry is not None:
            broken.setdefault(use, entry)
    if not broken:
        return ok(id, clause)
    found = "; ".join(use.describe() for use in list(broken)[:6])
    more = f" and {len(broken) - 6} more" if len(broken) > 6 else ""
    message = (
        f"delegation: {found}{more}. The work must be the submission's own, not handed to "
        f"{' / '.join(dict.fromkeys(broken.values()))}: no points for {subject} ({relax})"
    )
    from sdverify.mistakes import named  # the catalog imports torch and the tokenizer: only on a failure

    uses_found = [{"how": u.how, "names": list(u.names), "at": u.at, "forbidden_by": e} for u, e in broken.items()]
    return named(fail(id, message, clause, uses=uses_found), "delegation")
