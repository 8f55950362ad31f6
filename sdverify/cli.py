"""``sdverify`` command line: argument parsing and printing only; work lives in the library.

``entrypoint()`` calls ``main(argv) -> int`` so every command is testable in-process.
Exit codes: 0 success, 1 a check failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from sdverify import contract as C

DEFAULT_PROMPT = "a cat sitting on a beach at sunset"


class UsageError(Exception):
    """Bad input from the user: reported as ``error: ...`` with exit status 2."""


def _add_zoo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="offline model zoo")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    inst = zsub.add_parser("install", help="materialise a preset as an offline Hugging Face cache")
    inst.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    inst.add_argument("--seed", type=int, default=0)
    inst.add_argument("--cache", default=None, help="HF cache folder to write (default: under $SDVERIFY_CACHE)")
    inst.set_defaults(func=_cmd_zoo_install)


def _cmd_zoo_install(args: argparse.Namespace) -> int:
    from sdverify import zoo

    snapshot = zoo.materialize(args.preset, args.seed, args.cache)
    print(f"# {args.preset} preset (seed {args.seed}) ready at {snapshot}")
    print(f"# unmodified lesson code now loads {zoo.HUB_ID!r} offline after:")
    for key, value in zoo.offline_env(zoo.hub_cache_of(snapshot)).items():
        print(f"export {key}={value}")
    return 0


def _add_trace(sub: argparse._SubParsersAction) -> None:
    from sdverify.schedulers import SCHEDULERS

    p = sub.add_parser("trace", help="run the reference pipeline stage by stage and print a table")
    p.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT)
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
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
    p.add_argument("--spec", default=None, help="exercise spec TOML (default: the shipped SD1.5 lesson)")
    p.add_argument("--timeout", type=float, default=C.GRADE_NOTEBOOK_TIMEOUT_S, help="seconds per notebook")
    p.add_argument("--cell-timeout", type=float, default=C.GRADE_CELL_TIMEOUT_S, help="seconds per cell")
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd15"], help="zoo preset the notebooks load")
    p.add_argument(
        "--weights", default=os.environ.get("SDVERIFY_WEIGHTS"), help="local diffusers folder with real weights"
    )
    p.add_argument("--force", action="store_true", help="regrade submissions that already have a grade in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sandbox(p)
    _add_allow(p)
    p.set_defaults(func=_cmd_grade)


def _cmd_grade(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdverify.delegation import validate_names
    from sdverify.notebooks.batch import grade_batch
    from sdverify.notebooks.grading import Settings
    from sdverify.notebooks.spec import load_spec

    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.timeout <= 0 or args.cell_timeout <= 0:
        raise UsageError(f"--timeout and --cell-timeout must be > 0, got {args.timeout} and {args.cell_timeout}")
    spec = load_spec(args.spec)
    settings = Settings(
        preset=args.preset,
        weights=args.weights,
        cell_timeout=min(args.cell_timeout, args.timeout),
        notebook_timeout=args.timeout,
        sandbox=args.sandbox,
        allow=validate_names(args.allow, "--allow"),
    )
    out = Path(args.out)
    grades = grade_batch(
        args.paths, out, spec=spec, settings=settings, workers=args.workers, force=args.force, progress=not args.quiet
    )
    width = max(len(g.name) for g in grades)
    for g in grades:
        print(f"{g.name:{width}s}  {g.score:g}/{g.max_score:g}" + (f"  ({g.error})" if g.error else ""))
    print(f"reports in {out}/: grades.csv, junit.xml, index.html, submissions/<name>/{{report.html,results.json}}")
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
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd15"])
    p.add_argument("--weights", default=None, help="local diffusers folder with real weights ($SDVERIFY_WEIGHTS)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=C.CHECK_TIMEOUT_S, help="seconds per call of a student function")
    _add_sandbox(p)
    _add_allow(p)
    p.set_defaults(func=_cmd_check)


def _add_sandbox(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox",
        default=None,
        choices=["auto", "bwrap", "process"],
        help="isolation of student code: bwrap (OS namespaces), process, or auto: bwrap where it runs "
        "($SDVERIFY_SANDBOX, default auto; docs/checker.md says what each level protects against)",
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


def _cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdverify.checker import check_submission, resolve_target, summary_table, to_json, to_junit, to_text
    from sdverify.delegation import validate_names

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout}")
    allow = validate_names(args.allow, "--allow")
    targets = [resolve_target(t) for t in args.targets or [None]]  # every usage error before any work
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
        )
        print(to_text(report), end="\n\n" if len(targets) > 1 else "\n", flush=True)
        reports.append(report)
    if len(reports) > 1:
        print(summary_table(reports))
    for path, render in ((args.json, to_json), (args.junit, to_junit)):
        if path:
            Path(path).write_text(render(reports), encoding="utf-8")
    return 0 if all(r.passed for r in reports) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdverify", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_zoo, _add_trace, _add_grade, _add_check):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def entrypoint() -> None:
    sys.exit(main())
