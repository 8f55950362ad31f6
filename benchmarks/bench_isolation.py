"""What isolation costs, and what floods cost the grader (a script, not a test).

    python benchmarks/bench_isolation.py

Prints, from a warm zoo cache: the per-submission wall time of `sdverify check` on catalog
files at each isolation level (one call, so the reference expectations are built once),
one notebook under `sdverify grade` at each level, and the grader's peak RSS while a
submission floods it (1 GiB printed at import, a 600 MB cell output, 60 MB returns).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = sorted(str(p) for p in (ROOT / "examples" / "submissions").glob("correct_*.py"))[:6]
NOTEBOOK = ROOT / "examples" / "notebooks" / "correct.ipynb"

# Each runs in a fresh grader process that reports its own peak RSS (ru_maxrss, KiB on Linux).
PEAK = (
    "import resource, json; print(json.dumps(dict(rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))"
)
CHECK = "from sdverify.checker import check_submission; r = check_submission({path!r}, sandbox={level!r})\n" + PEAK
GRADE = (
    textwrap.dedent(
        """
    from pathlib import Path
    from sdverify.notebooks.batch import grade_batch
    from sdverify.notebooks.grading import Settings
    from sdverify.notebooks.spec import load_spec
    settings = Settings(sandbox={level!r})
    grade_batch([Path({path!r})], Path({out!r}), spec=load_spec(), settings=settings, workers=1)
    """
    )
    + PEAK
)

FLOODS = {
    "1 GiB printed at import (check)": (
        "check",
        "import sys\nchunk = 'x' * 2**20 + '\\n'\nfor _ in range(1024):\n    sys.stdout.write(chunk)\n",
    ),
    "60 MB returned per call (check)": (
        "check",
        "import torch\ndef cfg_combine(u, c, w):\n    return torch.zeros(15 * 2**20)\n",
    ),
}
CELL_FLOOD = "print('x' * 600_000_000)"


def _run(code: str) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed:\n{code}\n{done.stderr[-3000:]}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def _wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=False, cwd=ROOT)
    return time.perf_counter() - start


def _notebook_with(cell: str, folder: Path) -> Path:
    nb = json.loads(NOTEBOOK.read_text())
    nb["cells"].insert(1, {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": cell})
    path = folder / "flood.ipynb"
    path.write_text(json.dumps(nb))
    return path


def main() -> int:
    subprocess.run(["sdverify", "zoo", "install", "--preset", "tiny"], capture_output=True, check=True)
    print(f"{'what':58s} {'wall s':>8s} {'peak RSS MB':>12s}")
    for level in ("process", "bwrap"):
        one = _wall(["sdverify", "check", "--sandbox", level, CATALOG[0]])
        total = _wall(["sdverify", "check", "--sandbox", level, *CATALOG])
        print(f"{f'check, 1 submission, {level}':58s} {one:8.1f}")
        print(f"{f'check, {len(CATALOG)} submissions in one call, {level}':58s} {total:8.1f}")
        print(f"{f'  each submission after the first, {level}':58s} {(total - one) / (len(CATALOG) - 1):8.1f}")
        with tempfile.TemporaryDirectory(dir="/srv" if Path("/srv").is_dir() else None) as tmp:
            seconds, rss = _run(GRADE.format(path=str(NOTEBOOK), out=str(Path(tmp) / "out"), level=level))
        print(f"{f'grade one notebook (correct.ipynb), {level}':58s} {seconds:8.1f} {rss['rss_mb']:12.0f}")
    for name, (_, source) in FLOODS.items():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "flood.py"
            path.write_text(source)
            seconds, rss = _run(CHECK.format(path=str(path), level="bwrap"))
        print(f"{name + ', bwrap':58s} {seconds:8.1f} {rss['rss_mb']:12.0f}")
    with tempfile.TemporaryDirectory(dir="/srv" if Path("/srv").is_dir() else None) as tmp:
        path = _notebook_with(CELL_FLOOD, Path(tmp))
        seconds, rss = _run(GRADE.format(path=str(path), out=str(Path(tmp) / "out"), level="bwrap"))
    print(f"{'600 MB cell output (grade), bwrap':58s} {seconds:8.1f} {rss['rss_mb']:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
