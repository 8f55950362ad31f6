"""Containment of `sdverify check`, tested as oracles through the score.

Each submission is correct, except that its ``cfg_combine`` answers wrongly when it manages
something the sandbox forbids (seeing a grader secret, reading the instructor's HOME,
writing the weights, reaching a listener on 127.0.0.1, importing a sibling submission, running
without the sandbox's limits):
full marks mean the attempt failed.  bwrap cases skip, naming why, where bwrap cannot run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from sdverify import contract as C
from sdverify import isolation, zoo
from sdverify.checker import check_submission

needs_bwrap = pytest.mark.skipif(isolation.bwrap_problem() is not None, reason=str(isolation.bwrap_problem()))

CFG = """
import os, socket, sys
from pathlib import Path

def breached():
    '''True when any forbidden thing works (each attempt is listed in ATTEMPTS).'''
    for attempt in ATTEMPTS:
        try:
            if attempt():
                return True
        except Exception:
            pass
    return False

def cfg_combine(u, c, w):
    return c if breached() else u + w * (c - u)
"""
ATTEMPTS = {
    "env": 'lambda: "SDVERIFY_TEST_CANARY" in os.environ',
    "home": "lambda: Path(HOME_FILE).read_text() == 'secret'",
    "weights": "lambda: open(WEIGHTS_FILE, 'ab').write(b'x') == 1",
    "network": "lambda: socket.create_connection(('127.0.0.1', PORT), timeout=2) is not None",
    "sibling": "lambda: __import__('sibling').VALUE == 42",
    "sibling_file": "lambda: Path(SIBLING_FILE).read_text().startswith('VALUE')",
    # Not an escape: the child runs without the sandbox's limits (contract SANDBOX_*).
    "unlimited": "lambda: LIMITS != [list(__import__('resource').getrlimit(r)) for r in LIMITED]",
}


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a submission trying ``names`` against a planted secret, listener, weights copy and sibling."""
    weights = tmp_path / "weights"
    shutil.copytree(zoo.weights_dir("tiny", 0), weights)
    home_file = Path.home() / f".sdverify-canary-{uuid.uuid4().hex}"
    home_file.write_text("secret")
    listener = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setenv("SDVERIFY_TEST_CANARY", "secret")
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "sibling.py").write_text("VALUE = 42\n")

    def write(*names: str) -> tuple[str, Path]:
        constants = {
            "HOME_FILE": str(home_file),
            "WEIGHTS_FILE": str(weights / "vae" / "diffusion_pytorch_model.safetensors"),
            "PORT": listener.getsockname()[1],
            "SIBLING_FILE": str(folder / "sibling.py"),
            "LIMITS": [[C.SANDBOX_FILE_BYTES] * 2, [C.SANDBOX_CPU_S] * 2, [C.SANDBOX_PROCESSES] * 2],
        }
        body = "".join(f"{k} = {v!r}\n" for k, v in constants.items()) + textwrap.dedent(CFG)
        # The process count is set only where the child runs as the sandbox's uid.
        body += "import resource\nLIMITED = [resource.RLIMIT_FSIZE, resource.RLIMIT_CPU, resource.RLIMIT_NPROC]\n"
        leased = f"{C.SANDBOX_UID_FIRST} <= os.getuid() < {C.SANDBOX_UID_FIRST + C.SANDBOX_UIDS}"
        body += f"if not (os.getuid() == {C.SANDBOX_UID} or {leased}):\n    LIMITS, LIMITED = LIMITS[:2], LIMITED[:2]\n"
        body += "ATTEMPTS = [" + ", ".join(ATTEMPTS[n] for n in names) + "]\n"
        path = folder / "student.py"
        path.write_text(body)
        return str(path), weights

    yield write
    listener.close()
    home_file.unlink()


def _cfg_points(report) -> tuple[float, float]:
    mine = [c for c in report.checks if c.group == "cfg_combine"]
    return sum(c.points for c in mine), sum(c.max_points for c in mine)


@needs_bwrap
def test_bwrap_contains_every_attempt_at_once(hostile):
    path, weights = hostile(*ATTEMPTS)
    # The contract's per-call limit: it must not fire here, however loaded the machine (issue 18).
    report = check_submission(path, sandbox="bwrap", weights=str(weights))
    assert report.isolation == "bwrap"
    points, most = _cfg_points(report)
    assert points == most > 0, [c.message for c in report.checks if c.group == "cfg_combine" and not c.passed]


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("name", sorted(ATTEMPTS))
def test_bwrap_contains_each_attempt(hostile, name: str):
    path, weights = hostile(name)
    points, most = _cfg_points(check_submission(path, sandbox="bwrap", weights=str(weights), call_timeout=30))
    assert points == most > 0


@pytest.mark.slow
def test_process_level_hides_the_graders_environment(hostile):
    path, weights = hostile("env")
    report = check_submission(path, sandbox="process", weights=str(weights), call_timeout=30)
    assert report.isolation == "process"
    points, most = _cfg_points(report)
    assert points == most > 0


@pytest.mark.slow
def test_process_level_child_gets_the_sandbox_limits(hostile):
    path, weights = hostile("unlimited")
    points, most = _cfg_points(check_submission(path, sandbox="process", weights=str(weights), call_timeout=30))
    assert points == most > 0


@pytest.mark.slow
def test_process_level_is_what_the_oracles_detect(hostile):
    # The same oracle without bwrap: the network works (as any uid), so points are lost.
    path, weights = hostile("network")
    points, most = _cfg_points(check_submission(path, sandbox="process", weights=str(weights), call_timeout=30))
    assert points < most


@pytest.mark.slow
@needs_bwrap
def test_nothing_a_submission_starts_outlives_it(tmp_path: Path):
    marker = f"sdverify-orphan-{uuid.uuid4().hex}"
    student = tmp_path / "student.py"
    student.write_text(
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'],"
        " start_new_session=True)\n"
        "def cfg_combine(u, c, w):\n    return u + w * (c - u)\n"
    )
    check_submission(str(student), sandbox="bwrap", call_timeout=30)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout
    assert left.strip() == "", f"processes outlived the submission: {left}"


@pytest.mark.slow
@needs_bwrap
def test_it_cannot_signal_its_parent_or_its_group(tmp_path: Path):
    # It runs as PID 1 of its own PID namespace, in its own session: getppid() is 0 and
    # kill(0) reaches only its own group, so the jail's server and the grader are unreachable.
    student = tmp_path / "student.py"
    student.write_text(
        "import os, signal, torch\n"
        "def cfg_combine(u, c, w):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return u + w * (c - u)\n"
        "def decode_latents(vae, latents):\n"
        "    with torch.no_grad():\n        return vae.decode(latents / vae.config.scaling_factor).sample\n"
    )
    report = check_submission(str(student), sandbox="bwrap", call_timeout=30)
    assert all(c.passed for c in report.checks if c.group in ("cfg_combine", "decode_latents", "sandbox")), [
        c.message for c in report.failed() if c.group in ("cfg_combine", "decode_latents")
    ]
    assert check_submission(None, sandbox="bwrap").passed


def test_an_unavailable_level_is_a_usage_error(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(isolation, "bwrap_problem", lambda: "bwrap is not installed")
    with pytest.raises(ValueError, match="--sandbox bwrap: bwrap is not installed"):
        isolation.resolve("bwrap")
    assert isolation.resolve("auto") == "process"
    assert os.environ.get("SDVERIFY_TEST_CANARY") is None


@needs_bwrap
def test_bwrap_refuses_a_gpu_device_naming_the_way_out():
    with pytest.raises(ValueError, match=r"passes no GPU.*--sandbox process"):
        check_submission(None, device="cuda", sandbox="bwrap")
