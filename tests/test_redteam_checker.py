"""Red team, round three: attacks on `sdverify check` that worked, kept as regressions.

Each hostile module is correct, except that its ``cfg_combine`` answers wrongly when the attack
succeeds, so full ``cfg_combine`` points mean it was contained (the oracle pattern of
tests/test_checker_isolation.py).  What is still open is an ``xfail(strict=True)`` naming the gap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest
from sandbox_uids import alive, daemon_source, needs_sandbox_uid

from sdverify import isolation

pytestmark = pytest.mark.slow
needs_bwrap = pytest.mark.skipif(isolation.bwrap_problem() is not None, reason=str(isolation.bwrap_problem()))

# The scan of a process's own memory: what the child's code can read without any permission.
SCAN = """
import ctypes

def memory_holds(needle, regions, then=b""):
    # Whether needle is in this process's own memory regions ("[stack]", "[heap]": never a
    # file-backed map, where a read past the file's end is a SIGBUS), followed by the hex of then.
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        name = fields[5] if len(fields) > 5 else ""
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        if "r" not in fields[1] or name not in regions:
            continue
        data = ctypes.string_at(lo, hi - lo)
        at = data.find(needle)
        while at >= 0:
            tail = data[at + len(needle):at + len(needle) + 2 * len(then)]
            try:
                if bytes.fromhex(tail.decode()) == then:
                    return True
            except ValueError:
                pass
            at = data.find(needle, at + 1)
    return False
"""

CFG = """
def cfg_combine(u, c, w):
    return c if breached() else u + w * (c - u)
"""


def _module(path: Path, breached: str) -> str:
    path.write_text(textwrap.dedent(SCAN) + textwrap.dedent(breached) + textwrap.dedent(CFG))
    return str(path)


def _cfg_points(checks: list[dict]) -> tuple[float, float]:
    mine = [c for c in checks if c["function"] == "cfg_combine"]
    return sum(c["points"] for c in mine), sum(c["max_points"] for c in mine)


def test_process_level_child_finds_no_grader_secret_in_its_own_memory(tmp_path: Path):
    # Broke: the child cleared os.environ, but the strings the forkserver was started with (the
    # grader's environment) stayed on its stack: a scan of [stack] read the secret.  A fresh
    # grader process, so that its forkserver starts while the secret is set.
    canary = f"sdverify-canary-{uuid.uuid4().hex}"
    # The needle is built at run time: the module's own text must not hold it.
    breached = (
        f"def breached():\n    return memory_holds({canary[:20]!r}.encode() + {canary[20:]!r}.encode(), ['[stack]'])\n"
    )
    student = _module(tmp_path / "student.py", breached)
    out = tmp_path / "report.json"
    env = {**os.environ, "SDVERIFY_TEST_SECRET": canary}
    cmd = [sys.executable, "-m", "sdverify", "check", student, "--sandbox", "process", "--json", str(out)]
    subprocess.run(cmd, env=env, capture_output=True, check=False)
    points, most = _cfg_points(json.loads(out.read_text())["checks"])
    assert points == most > 0


@needs_bwrap
def test_bwrap_child_finds_no_earlier_submission_in_its_memory(tmp_path: Path):
    # The jail's server reads every job (a .py submission's source, as hex) and forks each run
    # from itself: a run must not find an earlier student's source in the memory it inherits.
    from sdverify.checker import check_submission

    marker = f"sdverify-victim-{uuid.uuid4().hex}"
    victim = _module(tmp_path / "victim.py", f"# {marker} the answer\ndef breached():\n    return False\n")
    check_submission(victim, sandbox="bwrap", timeout=30)
    # The needle is built at run time and the text after it compared decoded: the reader's own
    # source (also in its memory, as hex) never holds either.
    needle = f"({marker[:12]!r} + {marker[12:]!r}).encode().hex().encode()"
    breached = f"def breached():\n    return memory_holds({needle}, ['[heap]'], b' the answer')\n"
    report = check_submission(_module(tmp_path / "reader.py", breached), sandbox="bwrap", timeout=30)
    mine = [c for c in report.checks if c.group == "cfg_combine"]
    assert sum(c.points for c in mine) == sum(c.max_points for c in mine) > 0, [c.message for c in mine]


@needs_bwrap
def test_bwrap_output_flood_costs_no_later_submission_its_prints(tmp_path: Path):
    # Broke: the jail's log is shared by its runs, and each child may write a file only up to the
    # sandbox's file-size limit: after one run printed 256 MiB, every later run's print failed
    # with EFBIG (OSError) inside its own functions, costing their points.
    from sdverify.checker import check_submission

    flood = tmp_path / "flood.py"
    flood.write_text(
        "import os\ntry:\n    for _ in range(300):\n        os.write(1, b'x' * 2**20)\nexcept OSError:\n    pass\n"
    )
    check_submission(str(flood), sandbox="bwrap", timeout=60)
    victim = tmp_path / "victim.py"
    victim.write_text(
        "import sys\ndef cfg_combine(u, c, w):\n    print('w =', w, file=sys.stderr)\n    return u + w * (c - u)\n"
    )
    report = check_submission(str(victim), sandbox="bwrap", timeout=30)
    mine = [c for c in report.checks if c.group == "cfg_combine"]
    assert sum(c.points for c in mine) == sum(c.max_points for c in mine) > 0, [c.message for c in mine]


@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=needs_bwrap), "process"])
def test_a_childs_daemon_does_not_outlive_its_run(level: str):
    # Broke at the process level: a process in a session of its own escaped the child's killed
    # session and could signal later children and rewrite files.  Now every process of the run's
    # uid is killed when it ends; under bwrap the child's PID namespace is swept by the jail.
    from sdverify.checker import check_submission

    folder = Path(tempfile.mkdtemp(prefix="sdverify-daemon-"))
    os.chmod(folder, 0o755)  # the submission's folder: a sandbox uid must read it
    if level == "process":
        needs_sandbox_uid(folder)
    marker = f"sdverify-daemon-{uuid.uuid4().hex}"
    daemon = daemon_source(marker) + "def breached():\n    return False\n"
    try:
        report = check_submission(_module(folder / "student.py", daemon), sandbox=level, timeout=30)
        mine = [c for c in report.checks if c.group == "cfg_combine"]
        assert sum(c.points for c in mine) == sum(c.max_points for c in mine) > 0, [c.message for c in mine]
        assert alive(marker) == []
    finally:
        for pid in alive(marker):
            os.kill(pid, 9)
        shutil.rmtree(folder)
