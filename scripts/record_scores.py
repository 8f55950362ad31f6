"""Write fixtures/recorded_scores.json: every catalog module's and sample notebook's score, total
and per group (API function or exercise), as the ``sdverify`` on PATH grades them.

The committed fixture was recorded by the code before the grading core was merged (commit and
commands inside it; the changes made since on purpose added by hand, each with its reason);
``tests/test_recorded_scores.py`` and ``tests/test_grade_samples.py`` grade the same files with
this code and compare.  Run from the repository root (minutes: every catalog module, then every notebook)::

    python scripts/record_scores.py fixtures/recorded_scores.json

It reads only what every version writes: ``check --json``'s checks (``function``, ``points``,
``max_points``) and ``grade``'s ``grade.json`` exercises.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "examples" / "submissions"
SAMPLES = ROOT / "examples" / "notebooks"
PROBE_SEED = 0
# The hanging sample stops at its cell's limit (tests/test_grade_samples.py's), not the default 300 s.
CHECK_ARGS = ["--probe-seed", str(PROBE_SEED)]
GRADE_ARGS = ["--workers", "2", "--quiet", *CHECK_ARGS, "--cell-timeout", "100", "--timeout", "600"]


def _scores(groups: Iterable[tuple[str, float, float]]) -> dict[str, object]:
    per_group: dict[str, list[float]] = {}
    for group, points, max_points in groups:
        totals = per_group.setdefault(group, [0.0, 0.0])
        totals[0] += points
        totals[1] += max_points
    return {
        "score": sum(p for p, _ in per_group.values()),
        "max_score": sum(m for _, m in per_group.values()),
        "groups": per_group,
    }


def modules(tmp: Path) -> dict[str, object]:
    files = sorted(CATALOG.glob("*.py"))
    argv = ["sdverify", "check", *map(str, files), "--json", str(tmp / "check.json"), *CHECK_ARGS]
    subprocess.run(argv, check=False, stdout=subprocess.DEVNULL)  # exit 1: some fail, as they should
    reports = json.loads((tmp / "check.json").read_text())["submissions"]
    scores = {
        Path(r["submission"]).stem: _scores((c["function"], c["points"], c["max_points"]) for c in r["checks"])
        for r in reports
    }
    return scores


def notebooks(tmp: Path) -> dict[str, object]:
    out = tmp / "grades"
    argv = ["sdverify", "grade", str(SAMPLES), "--out", str(out), *GRADE_ARGS]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    scores = {}
    for path in sorted(out.glob("submissions/*/grade.json")):
        grade = json.loads(path.read_text())
        groups = ((e["id"], c["points"], c["max_points"]) for e in grade["exercises"] for c in e["checks"])
        scores[path.parent.name] = _scores(groups)
    return scores


def main(target: str) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        catalog, samples = modules(Path(tmp)), notebooks(Path(tmp))
    fixture = {
        "commit": commit.stdout.strip(),
        "commands": [
            " ".join(["sdverify check examples/submissions/*.py --json CHECK.json", *CHECK_ARGS]),
            " ".join(["sdverify grade examples/notebooks --out OUT", *GRADE_ARGS]),
        ],
        "probe_seed": PROBE_SEED,
        "changes": [],  # (tests/recorded_scores.py) what changed since, on purpose: none when recorded
        "catalog": catalog,
        "notebooks": samples,
    }
    Path(target).write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
