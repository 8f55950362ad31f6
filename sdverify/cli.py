"""``sdverify`` command line: argument parsing and printing only; work lives in the library.

``entrypoint()`` calls ``main(argv) -> int`` so every command is testable in-process.
Exit codes: 0 success, 1 a check failed, 2 usage error (:class:`sdverify.errors.UsageError`, or a
path the user named that does not exist); any other exception is the grader's fault and shows as one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sdverify import contract as C
from sdverify.errors import UsageError
from sdverify.sanitise import printable  # on all text a submission can reach: no terminal sequences

if TYPE_CHECKING:
    from sdverify.grading.model import SubmissionGrade
    from sdverify.notebooks.grading import Settings

DEFAULT_PROMPT = "a cat sitting on a beach at sunset"


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
    grades = grade_batch(
        args.paths,
        out,
        spec=spec,
        settings=settings,
        workers=args.workers,
        force=args.force,
        progress=not args.quiet,
        shard=shard,
        only=args.only,
        exercises=args.exercise,
        lms=lms,
    )
    _print_grades(grades, out)
    if lms:
        for problem in lms.roster.problems(grades):
            print(printable(f"warning: roster: {problem}"), file=sys.stderr)
        if lms.canvas_csv:
            print(f"Canvas gradebook import: {lms.canvas_csv}")
    return 0


def _print_grades(grades: Sequence[SubmissionGrade], out: Path) -> None:
    width = max((len(g.name) for g in grades), default=0)
    for g in grades:
        print(printable(f"{g.name:{width}s}  {g.score:g}/{g.max_score:g}" + (f"  ({g.error})" if g.error else "")))
    print(
        f"reports in {out}/: grades.csv, junit.xml, index.html, summary.json, "
        "submissions/<name>/{report.html,results.json}"
    )


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

    from sdverify.autograder.bundle import BundleSettings, build_gradescope_bundle

    settings = BundleSettings(args.preset, args.timeout, args.cell_timeout)
    target = build_gradescope_bundle(Path(args.out), spec_path=args.spec, settings=settings)
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
    p.add_argument("--weights", default=None, help="local diffusers folder with real weights ($SDVERIFY_WEIGHTS)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=C.CHECK_TIMEOUT_S, help="seconds per call of a student function")
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
    p.add_argument("--timeout", type=float, default=C.GRADE_NOTEBOOK_TIMEOUT_S, help="seconds per notebook")
    p.add_argument("--cell-timeout", type=float, default=C.GRADE_CELL_TIMEOUT_S, help="seconds per cell")
    p.add_argument("--preset", default="tiny", choices=C.PRESET_NAMES, help="zoo preset the notebooks load")


def _grading_settings(args: argparse.Namespace, weights: str | None = None) -> Settings:
    from sdverify.checker.cases import new_seed
    from sdverify.delegation import validate_names
    from sdverify.notebooks.grading import Settings

    if args.timeout <= 0 or args.cell_timeout <= 0:
        raise UsageError(f"--timeout and --cell-timeout must be > 0, got {args.timeout} and {args.cell_timeout}")
    return Settings(
        preset=args.preset,
        weights=weights,
        cell_timeout=min(args.cell_timeout, args.timeout),
        notebook_timeout=args.timeout,
        sandbox=args.sandbox,
        allow=validate_names(args.allow, "--allow"),
        probe_seed=new_seed() if getattr(args, "probe_seed", None) is None else args.probe_seed,  # one per batch
    )


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
    from sdverify.checker.cases import new_seed
    from sdverify.delegation import validate_names
    from sdverify.grading.render import summary_table, to_json, to_junit, to_text

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    allow = validate_names(args.allow, "--allow")
    targets = [resolve_target(t) for t in args.targets or [None]]  # every usage error before any work
    probe_seed = new_seed() if args.probe_seed is None else args.probe_seed  # one draw for every target
    reports = []
    for target in targets:
        report = check_submission(
            target,
            preset=args.preset,
            device=args.device,
            timeout=args.timeout,
            weights=args.weights,
            sandbox=args.sandbox,
            allow=allow,
            probe_seed=probe_seed,
        )
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
    for add in (_add_zoo, _add_trace, _add_grade, _add_grade_merge, _add_check, _add_autograder):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["grade", "merge"]:  # a submissions folder named "merge" is given as ./merge
        argv[:2] = ["grade-merge"]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError) as exc:
        print(printable(f"error: {exc}"), file=sys.stderr)
        return 2


def entrypoint() -> None:
    sys.exit(main())
