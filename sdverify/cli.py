"""``sdverify`` command line: argument parsing and printing only; work lives in the library.

``entrypoint()`` calls ``main(argv) -> int`` so every command is testable in-process.
Exit codes: 0 success, 1 a check failed, 2 usage error (:class:`sdverify.errors.UsageError`, or a
path the user named that does not exist); any other exception is the grader's fault and shows as one.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdverify import contract as C
from sdverify.errors import SdverifyWarning, UsageError
from sdverify.sanitise import printable  # on all text a submission can reach: no terminal sequences

if TYPE_CHECKING:
    from sdverify.grading.model import SubmissionGrade
    from sdverify.notebooks.batch import Event, FilesSkipped, Finished, NeverGraded, Restored, Started, Stored
    from sdverify.settings import Settings

DEFAULT_PROMPT = "a cat sitting on a beach at sunset"


class _Deprecated(argparse.Action):
    """An old spelling of option ``new``: sets the same value and leaves a warning for ``main`` to print."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, help=f"deprecated spelling of {new}", **kwargs)  # type: ignore[arg-type]
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        warning = f"{option_string} is deprecated and will be removed: use {self.new}"
        namespace.deprecated = [*getattr(namespace, "deprecated", []), warning]


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="offline model zoo")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    inst = zsub.add_parser("install", help="materialise a preset as an offline Hugging Face cache")
    inst.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES)
    inst.add_argument("--seed", type=int, default=0)
    inst.add_argument("--cache", default=None, help="HF cache folder to write (default: under $SDVERIFY_CACHE)")
    inst.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ORG/NAME",
        help="also serve this hub id with the preset's SD1.5 files (repeatable; kept in the cache)",
    )
    inst.set_defaults(func=_cmd_zoo_install)


def _cmd_zoo_install(args: argparse.Namespace) -> int:
    from sdverify import hub, zoo

    snapshot = zoo.materialize(args.preset, args.seed, args.cache, aliases=args.alias)
    print(f"# {args.preset} preset (seed {args.seed}) ready at {snapshot}")
    print(f"# unmodified lesson code now loads {', '.join(hub.served(zoo.hub_cache_of(snapshot)))} offline after:")
    for key, value in zoo.offline_env(zoo.hub_cache_of(snapshot)).items():
        print(f"export {key}={value}")
    return 0


def _add_trace(sub: argparse._SubParsersAction) -> None:
    from sdverify.schedulers import SCHEDULERS

    p = sub.add_parser("trace", help="run the reference pipeline stage by stage and print a table")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    p.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES)
    p.add_argument("--weights", default=None, help="local diffusers folder with real weights ($SDVERIFY_WEIGHTS)")
    p.add_argument("--steps", type=int, default=C.NUM_INFERENCE_STEPS)
    p.add_argument("--guidance", type=float, default=C.GUIDANCE_SCALE)
    p.add_argument("--scheduler", default="pndm", choices=sorted(SCHEDULERS))
    p.add_argument("--seed", type=int, default=0, help="generator seed for latents and scheduler noise")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="sdverify_trace.png", help="PNG to write (default: sdverify_trace.png)")
    p.set_defaults(func=_cmd_trace)


def _cmd_trace(args: argparse.Namespace) -> int:
    from sdverify.trace_command import format_trace, run_trace

    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    trace, image_path = run_trace(
        args.prompt,
        preset=args.preset,
        weights=args.weights,
        steps=args.steps,
        guidance=args.guidance,
        scheduler=args.scheduler,
        seed=args.seed,
        device=args.device,
        out=args.out,
    )
    print(format_trace(trace))
    print(f"image written to {image_path}")
    return 0


def _add_grade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grade", help="grade student notebooks (.ipynb) and modules (.py) offline, with reports")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a notebook, a .py module, or a folder of them")
    p.add_argument("--out", default="sdverify_grades", help="report folder (default: sdverify_grades)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel submissions (default: CPU count)")
    _add_lesson(p)
    p.add_argument(
        "--weights", default=os.environ.get("SDVERIFY_WEIGHTS"), help="local diffusers folder with real weights"
    )
    p.add_argument("--force", action="store_true", help="regrade submissions that already have a grade in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="grade share K of N (by name hash; a CI matrix, a Slurm array), then: sdverify grade merge",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="regrade these students (the student column of grades.csv); the others keep their stored grades",
    )
    p.add_argument(
        "--exercise",
        nargs="+",
        default=[],
        metavar="ID",
        help="regrade these exercises (spec ids, or a .py module's functions), keeping the other stored results",
    )
    _add_sandbox(p)
    p.add_argument("--roster", default=None, metavar="CSV", help="file,student_id,email[,name,section] per submission")
    p.add_argument(
        "--canvas-csv", default=None, metavar="FILE", help="write Canvas' gradebook import CSV (needs --roster)"
    )
    p.add_argument("--canvas-assignment", default=None, help="its score column (default: the spec's title)")
    _add_allow(p)
    _add_probe_seed(p)
    p.set_defaults(func=_cmd_grade)


def _add_grade_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grade-merge",
        help="class files from the outputs of `sdverify grade --shard K/N` runs (also: sdverify grade merge)",
    )
    p.add_argument("outs", nargs="+", metavar="OUT", help="the --out folder of each shard run")
    p.add_argument("--out", required=True, help="the merged report folder")
    p.set_defaults(func=_cmd_grade_merge)


def _cmd_grade_merge(args: argparse.Namespace) -> int:
    from sdverify.notebooks.shards import merge

    out = Path(args.out)
    _print_grades(merge([Path(o) for o in args.outs], out), out)
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from sdverify.notebooks.batch import grade_batch
    from sdverify.notebooks.lms import LmsExport, load_roster
    from sdverify.notebooks.shards import parse_shard
    from sdverify.notebooks.spec import load_spec

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if (args.canvas_csv or args.canvas_assignment) and not args.roster:
        raise UsageError("--canvas-csv needs --roster: Canvas matches students by id or login, not by file name")
    settings = _grading_settings(args, args.weights)
    shard = parse_shard(args.shard) if args.shard else None
    spec = load_spec(args.spec)
    lms = None
    if args.roster:
        canvas = Path(args.canvas_csv) if args.canvas_csv else None
        lms = LmsExport(load_roster(args.roster), canvas, args.canvas_assignment)
    out = Path(args.out)
    with _BatchProgress(bar=not args.quiet) as progress:
        grades = grade_batch(
            args.paths,
            out,
            spec=spec,
            settings=settings,
            workers=args.workers,
            force=args.force,
            shard=shard,
            only=args.only,
            exercises=args.exercise,
            lms=lms,
            on_event=progress,
        )
    _print_grades(grades, out)
    if lms:
        for problem in lms.roster.problems(grades):
            print(printable(f"warning: roster: {problem}"), file=sys.stderr)
        if lms.canvas_csv:
            print(f"Canvas gradebook import: {lms.canvas_csv}")
    return 0


class _BatchProgress:
    """Renders a batch's events (``notebooks.batch.Event``) on stderr: a progress bar and what was skipped."""

    def __init__(self, *, bar: bool) -> None:
        self.show_bar = bar
        self.bar: Any = None
        self.counted: set[str] = set()

    def __enter__(self) -> _BatchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, event: Event) -> None:
        getattr(self, "_" + type(event).__name__)(event)  # one method per event type

    def _FilesSkipped(self, event: FilesSkipped) -> None:
        from sdverify.notebooks.batch import SKIPPED_SHOWN

        lines = [f"  {s.file}: {s.reason}" for s in event.skipped[:SKIPPED_SHOWN]]
        more = len(event.skipped) - len(lines)
        lines += [f"  ... and {more} more (summary.json lists them all)"] if more > 0 else []
        _note("\n".join([f"not graded, {len(event.skipped)} file(s):", *lines]))

    def _NeverGraded(self, event: NeverGraded) -> None:
        _note(f"never graded, left out of the class files: {', '.join(event.names)}")

    def _Started(self, event: Started) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=event.total, desc="grading", unit="submission", disable=not self.show_bar or not event.total
        )

    def _Stored(self, event: Stored) -> None:
        if event.graded and event.name not in self.counted:  # a regrade (weights changed) is not progress
            self.counted.add(event.name)
            self.bar.update()
        self.bar.set_postfix_str(printable(event.name))

    def _Finished(self, event: Finished) -> None:
        self.bar.close()
        _note(
            f"graded {event.graded} submission(s)"
            + (f" ({event.partly} in part: their other exercises kept)" if event.partly else "")
            + (f", {event.refused} refused (graded 0 without running: see their error)" if event.refused else "")
            + f", {event.up_to_date} up to date"
        )

    def _Restored(self, event: Restored) -> None:
        _note(f"{event.name}'s grade files changed after they were written; restored")


def _note(message: str) -> None:
    print(printable(f"sdverify: {message}"), file=sys.stderr)


def _print_grades(grades: Sequence[SubmissionGrade], out: Path) -> None:
    width = max((len(g.name) for g in grades), default=0)
    for g in grades:
        print(printable(f"{g.name:{width}s}  {g.score:g}/{g.max_score:g}" + (f"  ({g.error})" if g.error else "")))
    print(
        f"reports in {out}/: grades.csv, junit.xml, index.html, summary.json, "
        "submissions/<name>/{report.html,results.json}"
    )


def _add_spec(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spec", help="exercise specs: draft one from a solved lesson")
    ssub = p.add_subparsers(dest="spec_command", required=True)
    draft = ssub.add_parser(
        "draft", help="run a solved lesson on the zoo and draft a v2 spec from the stage values it holds"
    )
    draft.add_argument("notebook", metavar="SOLVED.ipynb")
    draft.add_argument("--out", default=None, metavar="SPEC.toml", help="write the spec here (default: print it)")
    _add_grade_timeouts(draft)
    draft.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES, help="zoo preset the lesson loads")
    draft.add_argument(
        "--weights", default=os.environ.get("SDVERIFY_WEIGHTS"), help="local diffusers folder with real weights"
    )
    _add_sandbox(draft)
    draft.set_defaults(func=_cmd_spec_draft)


def _cmd_spec_draft(args: argparse.Namespace) -> int:
    from sdverify.notebooks.draft import draft_spec
    from sdverify.notebooks.grading import Settings

    if args.timeout <= 0 or args.call_timeout <= 0:
        raise UsageError(f"--timeout and --call-timeout must be > 0, got {args.timeout} and {args.call_timeout}")
    if not Path(args.notebook).is_file():
        raise FileNotFoundError(f"notebook {args.notebook} not found")
    settings = Settings(
        preset=args.preset,
        weights=args.weights,
        call_timeout=min(args.call_timeout, args.timeout),
        timeout=args.timeout,
        sandbox=args.sandbox,
    )
    text = draft_spec(args.notebook, settings)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"spec drafted: {args.out} (every guess is a '# guessed:' comment above what it guessed)")
    else:
        print(printable(text), end="")
    return 0


def _add_release(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="the student version of a solved lesson: solutions stubbed, outputs cleared")
    p.add_argument("notebook", metavar="SOLVED.ipynb")
    p.add_argument(
        "--spec", default=None, help="exercise spec TOML: without solution marks, what its checks read is stubbed"
    )
    p.add_argument("--out", required=True, metavar="STUDENT.ipynb", help="the student notebook to write")
    p.set_defaults(func=_cmd_release)


def _cmd_release(args: argparse.Namespace) -> int:
    from sdverify.notebooks.release import write_release
    from sdverify.notebooks.spec import load_spec

    if not Path(args.notebook).is_file():
        raise FileNotFoundError(f"notebook {args.notebook} not found")
    if Path(args.out).resolve() == Path(args.notebook).resolve():
        raise UsageError("--out must not be the solved notebook itself")
    spec = load_spec(args.spec) if args.spec else None
    released = write_release(args.notebook, args.out, spec)
    print(
        f"student notebook written: {args.out} (cells stubbed: {list(released.stubbed)}; "
        f"hidden tests removed from cells: {list(released.hidden_removed)}; outputs and metadata cleared)"
    )
    return 0


def _add_autograder(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("autograder", help="grade inside course platforms: a Gradescope autograder bundle")
    asub = p.add_subparsers(dest="autograder_command", required=True)
    gs = asub.add_parser("gradescope", help="write autograder.zip for a Gradescope programming assignment")
    gs.add_argument("--out", default=".", help="folder for autograder.zip (default: the current folder)")
    _add_lesson(gs)
    gs.set_defaults(func=_cmd_autograder_gradescope)
    run = asub.add_parser("run", help="grade one Gradescope submission folder (what the bundle's run_autograder runs)")
    run.add_argument(
        "--root",
        default=os.environ.get("AUTOGRADER_ROOT", "/autograder"),
        help="holds submission/ and gets results/results.json ($AUTOGRADER_ROOT, default /autograder)",
    )
    _add_lesson(run)
    _add_sandbox(run)
    _add_allow(run)
    run.set_defaults(func=_cmd_autograder_run)


def _cmd_autograder_gradescope(args: argparse.Namespace) -> int:
    import zipfile
    from pathlib import Path

    from sdverify.autograder.bundle import build_gradescope_bundle

    target = build_gradescope_bundle(Path(args.out), spec_path=args.spec, settings=_lesson_settings(args))
    with zipfile.ZipFile(target) as archive:
        for info in archive.infolist():
            print(f"{info.file_size:>10,d}  {info.filename}")
    print(f"wrote {target} ({target.stat().st_size:,d} bytes): upload it as a Gradescope programming assignment's")
    print(f"autograder; set its timeout above {args.timeout:g} s. Try it locally: README, Instructors.")
    return 0


def _cmd_autograder_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdverify.autograder.run import run
    from sdverify.notebooks.spec import load_spec

    root = Path(args.root)
    results = run(root, load_spec(args.spec), _grading_settings(args))
    max_score = sum(t.get("max_score", 0) for t in results["tests"])
    print(f"score {results['score']:g}/{max_score:g} written to {root / 'results' / 'results.json'}")
    for test in results["tests"]:
        shown = "" if test["visibility"] == "visible" else f"  ({test['visibility']})"
        print(printable(f"  [{test['status']}] {test['name']}{shown}"))
    return 0


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check student modules against the contract (default: the bundled reference)")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="PATH_OR_MODULE",
        help=".py files or importable modules, checked in one process (default: sdverify.reference)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write the JSON report here (one list for several)")
    p.add_argument("--junit", default=None, metavar="FILE", help="write a JUnit XML report here (a suite each)")
    p.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES)
    _add_seed(p)
    p.add_argument("--weights", default=None, help="local diffusers folder with real weights ($SDVERIFY_WEIGHTS)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--call-timeout",
        type=float,
        default=None,
        metavar="S",
        help=f"seconds per call of a student function (default {C.CHECK_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="seconds per submission (default: no bound; given alone it also bounds each call, as it did before "
        "it was per submission: that use is deprecated)",
    )
    _add_sandbox(p)
    _add_allow(p)
    _add_probe_seed(p)
    p.set_defaults(func=_cmd_check)


def _add_sandbox(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox",
        default=None,
        choices=C.SANDBOX_CHOICES,
        help="isolation of student code: bwrap (OS namespaces), process, or auto: bwrap where it runs "
        "($SDVERIFY_SANDBOX, default auto; docs/checker.md says what each level protects against)",
    )


def _add_lesson(p: argparse.ArgumentParser) -> None:
    """What a grade is made with: the spec, the zoo preset, the limits."""
    p.add_argument("--spec", default=None, help="exercise spec TOML (default: the shipped SD1.5 lesson)")
    _add_grade_timeouts(p)
    p.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES, help="zoo preset the notebooks load")
    _add_seed(p)


def _add_grade_timeouts(p: argparse.ArgumentParser) -> None:
    """A notebook's limits: per submission and per call (--cell-timeout: the deprecated spelling)."""
    p.add_argument(
        "--timeout", type=float, default=C.GRADE_NOTEBOOK_TIMEOUT_S, metavar="S", help="seconds per submission"
    )
    p.add_argument(
        "--call-timeout",
        type=float,
        default=C.GRADE_CELL_TIMEOUT_S,
        metavar="S",
        help="seconds per call of student code: a notebook cell, an API function call of a .py",
    )
    p.add_argument("--cell-timeout", dest="call_timeout", type=float, action=_Deprecated, new="--call-timeout")


def _add_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="zoo weight seed: the submission and its expected values use the same weights (default 0)",
    )


def _lesson_settings(args: argparse.Namespace) -> Settings:
    """What ``_add_lesson`` asked for: preset, weight seed and limits (a call never outlasts the submission)."""
    from sdverify.settings import GRADE

    if args.timeout <= 0 or args.call_timeout <= 0:
        raise UsageError(f"--timeout and --call-timeout must be > 0, got {args.timeout} and {args.call_timeout}")
    limits = {"call_timeout": min(args.call_timeout, args.timeout), "timeout": args.timeout}
    return replace(GRADE, preset=args.preset, seed=args.seed, **limits)


def _grading_settings(args: argparse.Namespace, weights: str | None = None) -> Settings:
    """``sdverify grade`` and ``autograder run``'s settings."""
    from sdverify.delegation import validate_names

    return replace(
        _lesson_settings(args),
        weights=weights,
        sandbox=args.sandbox,
        allow=validate_names(args.allow, "--allow"),
        probe_seed=_probe_seed(args),  # one per batch
    )


def _check_settings(args: argparse.Namespace) -> Settings:
    """``sdverify check``'s settings; ``--timeout`` alone is its old, per-call use too (deprecated, warned)."""
    from sdverify.delegation import validate_names
    from sdverify.settings import CHECK

    for option, value in (("--call-timeout", args.call_timeout), ("--timeout", args.timeout)):
        if value is not None and value <= 0:
            raise UsageError(f"{option} must be > 0, got {value}")
    call_timeout = args.call_timeout
    if args.timeout is not None and call_timeout is None:
        _warn(
            f"--timeout {args.timeout:g} now bounds the whole submission; it bounded each call before, and it "
            "still does when given alone (deprecated): give --call-timeout S for each call"
        )
        call_timeout = args.timeout
    call_timeout = CHECK.call_timeout if call_timeout is None else call_timeout
    return replace(
        CHECK,
        preset=args.preset,
        seed=args.seed,
        weights=args.weights,
        device=args.device,
        call_timeout=call_timeout if args.timeout is None else min(call_timeout, args.timeout),  # within the whole
        timeout=args.timeout,
        sandbox=args.sandbox,
        allow=validate_names(args.allow, "--allow"),
        probe_seed=_probe_seed(args),  # one draw for every target
    )


def _probe_seed(args: argparse.Namespace) -> int:
    from sdverify.checker.cases import new_seed

    return new_seed() if getattr(args, "probe_seed", None) is None else args.probe_seed


def _warn(message: str) -> None:
    _note(f"warning: {message}")


def _add_allow(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="NAME",
        help="relax the delegation policy: a module or class a submission may use (repeatable; "
        "e.g. sdverify.tokenizer, diffusers.StableDiffusionPipeline, or * for anything)",
    )


def _add_probe_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--probe-seed",
        type=int,
        default=None,
        metavar="N",
        help="draw the .py checks' drawn cases from this seed (default: a new one, printed in the report; "
        "a regrade with the printed seed draws the same cases)",
    )


def _cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdverify.checker import check_submission, resolve_target
    from sdverify.grading.render import summary_table, to_json, to_junit, to_text

    settings = _check_settings(args)
    targets = [resolve_target(t) for t in args.targets or [None]]  # every usage error before any work
    reports = []
    for target in targets:
        report = check_submission(target, settings)
        print(printable(to_text(report)), end="\n\n" if len(targets) > 1 else "\n", flush=True)
        reports.append(report)
    if len(reports) > 1:
        print(printable(summary_table(reports)))
    for path, render in ((args.json, to_json), (args.junit, to_junit)):
        if path:
            Path(path).write_text(render(reports), encoding="utf-8")
    return 0 if all(r.passed for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdverify", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_zoo,
        _add_trace,
        _add_grade,
        _add_grade_merge,
        _add_check,
        _add_autograder,
        _add_spec,
        _add_release,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["grade", "merge"]:  # a submissions folder named "merge" is given as ./merge
        argv[:2] = ["grade-merge"]
    parser = build_parser()
    args = parser.parse_args(argv)
    for warning in getattr(args, "deprecated", []):
        _warn(warning)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.func(args)
    except (UsageError, FileNotFoundError) as exc:
        print(printable(f"error: {exc}"), file=sys.stderr)
        return 2


_python_show_warning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *where: Any, **kwargs: Any) -> None:
    """The library's warnings (:class:`SdverifyWarning`) as their message alone; others as Python shows them."""
    if issubclass(category, SdverifyWarning):
        print(printable(str(message)), file=sys.stderr)
    else:
        _python_show_warning(message, category, *where, **kwargs)


def entrypoint() -> None:
    sys.exit(main())
