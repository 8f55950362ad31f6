"""Wall-clock figures of the developer loop, from a warm zoo cache (a script, not a test).

    python benchmarks/bench_cli.py [--repeat 3] [--skip-suite]

Prints one row per command: the laptop tier, pytest start-up in an unrelated project
with and without the sdverify plugin, ``sdverify --help``, ``sdverify check`` on the
reference and on ten catalog files in one call (total and per submission), and a 50-step
``sdverify trace``.  Quick commands are repeated and their median reported.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "examples" / "submissions"
UNRELATED_TEST = "def test_one():\n    assert 1 + 1 == 2\n"


def wall(cmd: list[str], cwd: Path, ok_codes: tuple[int, ...] = (0,)) -> float:
    """Seconds one run of ``cmd`` took; a failing command stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in ok_codes:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def median_wall(cmd: list[str], cwd: Path, repeat: int, ok_codes: tuple[int, ...] = (0,)) -> float:
    return statistics.median(wall(cmd, cwd, ok_codes) for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each quick command (median; default 3)")
    parser.add_argument("--skip-suite", action="store_true", help="leave out the laptop-tier pytest run")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    script = Path(sys.executable).with_name("sdverify")  # the console script users run
    sdverify = [str(script)] if script.exists() else [sys.executable, "-m", "sdverify"]
    rows: list[tuple[str, float, str]] = []
    wall([*sdverify, "zoo", "install", "--preset", "tiny"], ROOT)  # warm the cache, not timed

    if not args.skip_suite:
        suite = [sys.executable, "-m", "pytest", "-m", "not gpu", "-n", "auto", "-q"]
        rows.append(('pytest -m "not gpu" -n auto (laptop tier)', wall(suite, ROOT), ""))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        (project / "test_unrelated.py").write_text(UNRELATED_TEST)
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        without = median_wall([*pytest, "-p", "no:sdverify"], project, args.repeat)
        with_plugin = median_wall(pytest, project, args.repeat)
        rows.append(("unrelated project: pytest, plugin disabled", without, f"median of {args.repeat}"))
        rows.append(("unrelated project: pytest, plugin loaded", with_plugin, f"+{with_plugin - without:.2f} s"))
    rows.append(("sdverify --help", median_wall([*sdverify, "--help"], ROOT, args.repeat), f"median of {args.repeat}"))
    rows.append(("sdverify check (reference)", wall([*sdverify, "check"], ROOT), ""))
    ten = sorted(str(p) for p in CATALOG.glob("*.py"))[:10]
    one = wall([*sdverify, "check", ten[0]], ROOT, ok_codes=(0, 1))
    total = wall([*sdverify, "check", *ten], ROOT, ok_codes=(0, 1))
    rows.append(("sdverify check, 10 catalog files in one call", total, f"{total / len(ten):.2f} s per submission"))
    rows.append(("  marginal cost of one more submission", (total - one) / (len(ten) - 1), "(total - one) / 9"))
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "trace.png")
        rows.append(("sdverify trace --steps 50", wall([*sdverify, "trace", "--steps", "50", "--out", out], ROOT), ""))

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    width = max(len(name) for name, _, _ in rows)
    for name, seconds, note in rows:
        print(f"{name:{width}s}  {seconds:8.2f} s  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
