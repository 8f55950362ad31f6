"""Exercise specs: which variables to read from a notebook and which checks to run, as data.

A spec is a TOML file (see ``sdverify/specs/consolidate_sd15.toml``, the shipped lesson).
Loading validates everything up front — unknown checks, unknown or missing parameters,
bad points — so an instructor's typo is reported before any notebook runs.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sdverify.delegation import DEFAULT_ALLOW, DEFAULT_FORBID, Policy, validate_names
from sdverify.errors import UsageError
from sdverify.notebooks.exercises import CHECKS, Lesson
from sdverify.notebooks.runner import Snapshot

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_SPEC = Path(__file__).resolve().parents[1] / "specs" / "consolidate_sd15.toml"
# Who sees an exercise's checks on Gradescope: always, after the due date, or instructors only
# (students then see only the mistakes its failed checks name; sdverify/grading/gradescope.py).
VISIBILITIES = ("visible", "after_due_date", "hidden")
_EXERCISE_KEYS = {"id", "title", "heading", "checks", "visibility", "forbid", "allow"}
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

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.checks)

    def snapshot(self) -> Snapshot:
        names = dict.fromkeys(n for c in self.checks for n in c.variables())
        return Snapshot(self.id, self.heading, tuple(names))


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

    @property
    def max_points(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def definitions(self) -> dict[str, str]:
        """Each exercise's definition hash: what its verdict depends on, so a spec edit regrades
        exactly the exercises it changes.

        That is the lesson facts, the exercise's checks (points and parameters), its delegation
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
            parts = [asdict(self.lesson), headings[: index + 2], checks, policy, *setup]
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
        raise UsageError(f"spec {path}: not valid TOML ({exc})") from None
    where = f"spec {path}"
    lesson_keys = {f.name for f in fields(Lesson)} | {f.name for f in fields(Setup)}
    lesson = dict(data.get("lesson", {}))
    unknown = set(lesson) - lesson_keys
    if unknown:
        raise UsageError(f"{where}: unknown [lesson] keys {sorted(unknown)}; expected some of {sorted(lesson_keys)}")
    setup = _setup(where, path.parent, {f.name: lesson.pop(f.name) for f in fields(Setup) if f.name in lesson})
    exercises = [_exercise(where, i, raw) for i, raw in enumerate(data.get("exercises", []))]
    if not exercises:
        raise UsageError(f"{where}: no [[exercises]]; each needs id, title, heading and checks")
    ids = [e.id for e in exercises]
    if len(set(ids)) != len(ids):
        raise UsageError(f"{where}: exercise ids must be unique, got {ids}")
    return Spec(str(data.get("title", path.stem)), Lesson(**lesson), tuple(exercises), text, setup)


def _setup(where: str, folder: Path, raw: dict[str, Any]) -> Setup:
    map_device = raw.get("map_device", False)
    if not isinstance(map_device, bool):
        raise UsageError(f"{where}: [lesson] map_device must be true or false, got {map_device!r}")
    files, packages = raw.get("files", []), raw.get("packages", [])
    for key, value in (("files", files), ("packages", packages)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where}: [lesson] {key} must be a list of strings, got {value!r}")
    bad = [p for p in packages if not _PACKAGE.fullmatch(p)]
    if bad:
        raise UsageError(f"{where}: [lesson] packages: {bad} are not package names")
    return Setup(map_device, tuple((name, _data_file(where, folder, name)) for name in files), tuple(packages))


def _data_file(where: str, folder: Path, name: str) -> Path:
    """The file ``name`` (relative to the spec's folder) a lesson needs next to its notebook."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise UsageError(f"{where}: [lesson] files: {name!r} must be a path inside the spec's folder")
    source = folder / relative
    if not source.is_file():
        raise UsageError(f"{where}: [lesson] files: {name!r} not found (looked for {source.resolve()})")
    return source.resolve()


def _exercise(where: str, index: int, raw: dict[str, Any]) -> ExerciseSpec:
    missing = {"id", "heading", "checks"} - set(raw)
    if missing:
        raise UsageError(f"{where}: exercise #{index + 1} lacks {sorted(missing)}")
    unknown = set(raw) - _EXERCISE_KEYS
    if unknown:
        raise UsageError(
            f"{where}: exercise {raw['id']!r}: unknown keys {sorted(unknown)}; expected some of "
            f"{sorted(_EXERCISE_KEYS)}"
        )
    visibility = raw.get("visibility", "visible")
    if visibility not in VISIBILITIES:
        raise UsageError(
            f"{where}: exercise {raw['id']!r}: visibility {visibility!r}; expected one of {list(VISIBILITIES)}"
        )
    try:
        re.compile(raw["heading"])
    except re.error as exc:
        raise UsageError(f"{where}: exercise {raw['id']!r}: heading is not a valid regex ({exc})") from None
    checks = tuple(_check(f"{where}: exercise {raw['id']!r} check #{i + 1}", c) for i, c in enumerate(raw["checks"]))
    policy = Policy(
        validate_names(raw.get("forbid", list(DEFAULT_FORBID)), f"{where}: exercise {raw['id']!r} forbid"),
        validate_names(raw.get("allow", list(DEFAULT_ALLOW)), f"{where}: exercise {raw['id']!r} allow"),
    )
    return ExerciseSpec(str(raw["id"]), str(raw.get("title", raw["id"])), raw["heading"], checks, visibility, policy)


def _check(where: str, raw: dict[str, Any]) -> CheckSpec:
    params = dict(raw)
    name = params.pop("check", None)
    points = params.pop("points", None)
    if name not in CHECKS:
        raise UsageError(f"{where}: unknown check {name!r}; expected one of {sorted(CHECKS)}")
    if not isinstance(points, (int, float)) or points < 0:
        raise UsageError(f"{where}: points must be a number >= 0, got {points!r}")
    try:
        inspect.signature(CHECKS[name].fn).bind(None, None, **params)
    except TypeError as exc:
        raise UsageError(f"{where}: bad parameters for {name!r} ({exc})") from None
    return CheckSpec(name, float(points), params)
