"""Exercise specs: which variables to read from a notebook and which checks to run, as data.

A spec is a TOML file (see ``sdverify/specs/consolidate_sd15.toml``, the shipped lesson).
Loading validates everything up front — unknown checks, unknown or missing parameters,
bad points — so an instructor's typo is reported before any notebook runs.

Two formats (docs/grading.md): a spec without ``format`` is format 1 and loads and grades as it
always did; ``format = 2`` adds variable paths, per-exercise facts, a negative prompt, the image
size and section ends, and validates every name strictly, suggesting the nearest valid one with
the file and line of the offending text.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from sdverify import contract as C
from sdverify.delegation import DEFAULT_ALLOW, DEFAULT_FORBID, Policy, validate_names
from sdverify.notebooks.exercises import CHECKS, V1_FACTS, Lesson
from sdverify.notebooks.paths import parse_path
from sdverify.notebooks.segmentation import Snapshot
from sdverify.schedulers import SCHEDULERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "specs" / "consolidate_sd15.toml"
# Who sees an exercise's checks on Gradescope: always, after the due date, or instructors only
# (students then see only the mistakes its failed checks name; sdverify/notebooks/gradescope.py).
VISIBILITIES = ("visible", "after_due_date", "hidden")
_EXERCISE_KEYS = {"id", "title", "heading", "checks", "visibility", "forbid", "allow"}
SPEC_FORMATS = (1, 2)  # a spec without a `format` key is format 1 (docs/grading.md)
_TOP_KEYS = {"format", "title", "lesson", "exercises"}
_V2_EXERCISE_KEYS = {"ends", "lesson"}
_V2_NAMES = _V2_EXERCISE_KEYS | {"negative_prompt", "height", "width", "format"}
_FACT_TYPES: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "negative_prompt": str,
    "seed": int,
    "steps": int,
    "guidance_scale": (int, float),
    "scheduler": str,
    "height": int,
    "width": int,
}
_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class CheckSpec:
    check: str
    points: float
    params: dict[str, Any]

    def variables(self) -> list[str]:
        """Notebook variables this check reads (spec value or the check's default)."""
        definition = CHECKS[self.check]
        defaults = inspect.signature(definition.fn).parameters
        names: list[str] = []
        for param in definition.variables:
            value = self.params.get(param, defaults[param].default)
            names += [value] if isinstance(value, str) else list(value)
        return names


@dataclass(frozen=True)
class ExerciseSpec:
    id: str
    title: str
    heading: str
    checks: tuple[CheckSpec, ...]
    visibility: str = "visible"  # one of VISIBILITIES
    policy: Policy = field(default_factory=Policy)  # what its cells may not delegate to (forbid/allow)
    lesson: Lesson = field(default_factory=Lesson)  # its facts: [lesson] with its own overrides (v2)
    ends: str | None = None  # v2: the heading that ends its section (regex)
    format: int = 1  # the spec's format: 2 reads variable paths and matches heading lines only

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.checks)

    def snapshot(self) -> Snapshot:
        names = dict.fromkeys(n for c in self.checks for n in c.variables())
        v2 = self.format >= 2
        return Snapshot(self.id, self.heading, tuple(names), self.ends, walk=v2, headings_only=v2)


@dataclass(frozen=True)
class Setup:
    """What the lesson's kernel needs besides its facts ([lesson] map_device, files, packages)."""

    map_device: bool = False  # run its "cuda"/float16 code on the grading CPU in float32 (device_map)
    files: tuple[tuple[str, Path], ...] = ()  # (path next to the notebook, source next to the spec)
    packages: tuple[str, ...] = ()  # what the grading environment must have installed

    def missing_packages(self) -> list[str]:
        """The packages named that are neither an installed distribution nor an importable module."""
        return [p for p in self.packages if not _installed(p)]

    def require_packages(self) -> None:
        """Raise ValueError naming the packages the grading environment lacks."""
        missing = self.missing_packages()
        if missing:
            raise ValueError(
                f"the lesson needs {missing} ([lesson] packages), which the grading environment lacks: "
                f"pip install {' '.join(missing)}"
            )

    def definition(self) -> list[Any]:
        """What of it a verdict depends on: the flags, names and file contents."""
        files = [(name, hashlib.sha256(source.read_bytes()).hexdigest()) for name, source in self.files]
        return [self.map_device, files, list(self.packages)]


def _installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec(package.replace("-", "_")) is not None
    return True


@dataclass(frozen=True)
class Spec:
    title: str
    lesson: Lesson
    exercises: tuple[ExerciseSpec, ...]
    text: str  # the file's content: part of each submission's resume digest
    setup: Setup = field(default_factory=Setup)
    format: int = 1  # one of SPEC_FORMATS

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def definitions(self) -> dict[str, str]:
        """Each exercise's definition hash: what its verdict depends on, so a spec edit regrades
        exactly the exercises it changes.

        That is the exercise's lesson facts, its end (v2), the exercise's checks (points and parameters), its delegation
        policy (forbid/allow), and the headings
        up to the next exercise's: the exercise's cells run from its heading to the next one
        (headings are located in order), so a heading edited before it, or an exercise inserted
        right after it, moves its section.  Titles are labels, not part of it.
        """
        headings = [e.heading for e in self.exercises]
        # The setup counts once set: specs without it keep the definitions they had.
        setup = self.setup.definition() if self.setup != Setup() else []
        found = {}
        for index, exercise in enumerate(self.exercises):
            checks = [(c.check, c.points, sorted(c.params.items())) for c in exercise.checks]
            policy = asdict(exercise.policy)
            v2 = [exercise.ends, self.format] if self.format >= 2 else []  # a v1 spec's hashes stay as they were
            parts = [exercise.lesson.facts(), headings[: index + 2], checks, policy, *setup, *v2]
            text = json.dumps(parts, sort_keys=True, default=str)
            found[exercise.id] = hashlib.sha256(text.encode()).hexdigest()[:16]
        return found


def load_spec(path: str | Path | None = None) -> Spec:
    """Load and validate a spec (default: the shipped SD1.5 CONSOLIDATE lesson)."""
    path = Path(path) if path else DEFAULT_SPEC
    if not path.is_file():
        raise FileNotFoundError(f"spec file {path} not found")
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"spec {path}: not valid TOML ({exc})") from None
    src = _Source(path, text)
    version = data.get("format", 1)
    if version not in SPEC_FORMATS or isinstance(version, bool):
        raise ValueError(f"{src.at('format')}: format {version!r}; expected one of {list(SPEC_FORMATS)} (none: 1)")
    if version >= 2 and set(data) - _TOP_KEYS:
        raise src.unknown("top-level keys", set(data) - _TOP_KEYS, _TOP_KEYS)
    facts = {f.name for f in fields(Lesson)} if version >= 2 else set(V1_FACTS)
    lesson_keys = facts | {f.name for f in fields(Setup)}
    lesson = dict(data.get("lesson", {}))
    if set(lesson) - lesson_keys:
        raise src.unknown("[lesson] keys", set(lesson) - lesson_keys, lesson_keys, version)
    where = f"spec {path}"
    setup = _setup(where, path.parent, {f.name: lesson.pop(f.name) for f in fields(Setup) if f.name in lesson})
    facts_of = Lesson(**lesson) if version == 1 else _facts(src, Lesson(), lesson, "[lesson]")
    exercises = [_exercise(src, i, raw, facts_of, version) for i, raw in enumerate(data.get("exercises", []))]
    if not exercises:
        raise ValueError(f"{where}: no [[exercises]]; each needs id, title, heading and checks")
    ids = [e.id for e in exercises]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where}: exercise ids must be unique, got {ids}")
    return Spec(str(data.get("title", path.stem)), facts_of, tuple(exercises), text, setup, version)


@dataclass(frozen=True)
class _Source:
    """The spec file, for errors that name the file and the line of the offending text."""

    path: Path
    text: str

    def at(self, *needles: str) -> str:
        """``spec PATH, line N``: the first line holding one of ``needles`` (tried in order)."""
        lines = self.text.splitlines()
        for needle in needles:
            for number, line in enumerate(lines, 1):
                if needle in line:
                    return f"spec {self.path}, line {number}"
        return f"spec {self.path}"

    def unknown(self, what: str, names: Iterable[str], valid: Iterable[str], version: int = 2) -> ValueError:
        """An unknown name (or set of them) with the nearest valid one suggested."""
        names, valid = sorted(names), sorted(valid)
        single = not what.endswith("keys")
        shown = repr(names[0]) if single else repr(names)
        later = [n for n in names if version < 2 and n in _V2_NAMES]
        hint = f" {later} need format = 2 at the top of the spec;" if later else ""
        guesses = [(n, get_close_matches(n, valid, 1)) for n in names if n not in later]
        hint += "".join(f" did you mean {g[0]!r}{'' if len(names) == 1 else f' for {n!r}'}?" for n, g in guesses if g)
        needles = [f"{q}{n}{q}" for n in names for q in ('"', "'")] + [f"{n} =" for n in names] + names
        return ValueError(f"{self.at(*needles)}: unknown {what} {shown};{hint} expected one of {valid}")


def _facts(src: _Source, base: Lesson, raw: dict[str, Any], label: str) -> Lesson:
    """``base`` with the facts of ``raw`` (a v2 [lesson] or an exercise's ``lesson``), each validated."""
    for key, value in raw.items():
        kind = _FACT_TYPES[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ValueError(f"{src.at(f'{key} =', key)}: {label} {key} must be {names}, got {value!r}")
    if "scheduler" in raw and raw["scheduler"] not in SCHEDULERS:
        raise src.unknown("scheduler", [raw["scheduler"]], SCHEDULERS)
    for key in ("steps", "height", "width"):
        value = raw.get(key, 1 if key == "steps" else C.VAE_DOWNSCALE)
        if value <= 0 or (key != "steps" and value % C.VAE_DOWNSCALE):
            rule = "> 0" if key == "steps" else f"a positive multiple of {C.VAE_DOWNSCALE} (the VAE's downscale)"
            raise ValueError(f"{src.at(f'{key} =', key)}: {label} {key} must be {rule}, got {value!r}")
    return replace(
        base, **{**raw, **({"guidance_scale": float(raw["guidance_scale"])} if "guidance_scale" in raw else {})}
    )


def _setup(where: str, folder: Path, raw: dict[str, Any]) -> Setup:
    map_device = raw.get("map_device", False)
    if not isinstance(map_device, bool):
        raise ValueError(f"{where}: [lesson] map_device must be true or false, got {map_device!r}")
    files, packages = raw.get("files", []), raw.get("packages", [])
    for key, value in (("files", files), ("packages", packages)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where}: [lesson] {key} must be a list of strings, got {value!r}")
    bad = [p for p in packages if not _PACKAGE.fullmatch(p)]
    if bad:
        raise ValueError(f"{where}: [lesson] packages: {bad} are not package names")
    return Setup(map_device, tuple((name, _data_file(where, folder, name)) for name in files), tuple(packages))


def _data_file(where: str, folder: Path, name: str) -> Path:
    """The file ``name`` (relative to the spec's folder) a lesson needs next to its notebook."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise ValueError(f"{where}: [lesson] files: {name!r} must be a path inside the spec's folder")
    source = folder / relative
    if not source.is_file():
        raise ValueError(f"{where}: [lesson] files: {name!r} not found (looked for {source.resolve()})")
    return source.resolve()


def _exercise(src: _Source, index: int, raw: dict[str, Any], lesson: Lesson, version: int) -> ExerciseSpec:
    where = f"spec {src.path}"
    missing = {"id", "heading", "checks"} - set(raw)
    if missing:
        raise ValueError(f"{where}: exercise #{index + 1} lacks {sorted(missing)}")
    keys = _EXERCISE_KEYS | (_V2_EXERCISE_KEYS if version >= 2 else set())
    if set(raw) - keys:
        raise src.unknown(f"exercise {raw['id']!r} keys", set(raw) - keys, keys, version)
    name = f"exercise {raw['id']!r}"
    visibility = raw.get("visibility", "visible")
    if visibility not in VISIBILITIES:
        raise ValueError(f"{where}: {name}: visibility {visibility!r}; expected one of {list(VISIBILITIES)}")
    for key in ("heading", "ends"):
        try:
            re.compile(raw.get(key, ""))
        except (re.error, TypeError) as exc:
            raise ValueError(f"{src.at(f'{key} =')}: {name}: {key} is not a valid regex ({exc})") from None
    overrides = raw.get("lesson", {})
    if not isinstance(overrides, dict):
        raise ValueError(f"{src.at('lesson =')}: {name}: lesson must be a table of facts, got {overrides!r}")
    facts = {f.name for f in fields(Lesson)}
    if set(overrides) & {f.name for f in fields(Setup)}:
        shared = sorted(set(overrides) & {f.name for f in fields(Setup)})
        raise ValueError(f"{src.at('lesson =')}: {name}: {shared} apply to the whole notebook; set them in [lesson]")
    if set(overrides) - facts:
        raise src.unknown(f"{name} lesson keys", set(overrides) - facts, facts)
    checks = tuple(_check(src, f"{where}: {name} check #{i + 1}", c, version) for i, c in enumerate(raw["checks"]))
    policy = Policy(
        validate_names(raw.get("forbid", list(DEFAULT_FORBID)), f"{where}: {name} forbid"),
        validate_names(raw.get("allow", list(DEFAULT_ALLOW)), f"{where}: {name} allow"),
    )
    return ExerciseSpec(
        str(raw["id"]),
        str(raw.get("title", raw["id"])),
        raw["heading"],
        checks,
        visibility,
        policy,
        _facts(src, lesson, overrides, f"{name} lesson") if overrides else lesson,
        raw.get("ends"),
        version,
    )


def _check(src: _Source, where: str, raw: dict[str, Any], version: int) -> CheckSpec:
    params = dict(raw)
    name = params.pop("check", None)
    points = params.pop("points", None)
    if name not in CHECKS:
        raise src.unknown("check", [str(name)], CHECKS)
    if not isinstance(points, (int, float)) or points < 0:
        raise ValueError(f"{where}: points must be a number >= 0, got {points!r}")
    try:
        inspect.signature(CHECKS[name].fn).bind(None, None, **params)
    except TypeError as exc:
        raise ValueError(f"{where}: bad parameters for {name!r} ({exc})") from None
    check = CheckSpec(name, float(points), params)
    for param, allowed in CHECKS[name].choices.items():
        if param in params and params[param] not in allowed:
            raise src.unknown(f"{param} of check {name!r}:", [str(params[param])], [str(a) for a in allowed])
    if version >= 2:
        for path in check.variables():
            try:
                parse_path(path)
            except ValueError as exc:
                raise ValueError(f"{src.at(repr(path)[1:-1])}: check {name!r}: {exc}") from None
    return check
