"""What the tests of leftover processes and per-run uids share: who is still alive, and whether
a process-level run here gets a uid of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdverify import isolation


def alive(marker: str) -> list[int]:
    """The host pids of live (not zombie) processes whose command line holds ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(pid))
    return found


def needs_sandbox_uid(*needs: Path) -> None:
    """Skip unless a process-level run here gets a uid of its own: the grader is root, and a
    sandbox uid can run this Python and read ``needs`` (else it keeps root's, with a warning)."""
    if os.geteuid() != 0:
        pytest.skip("the grader is not root: uids cannot change, so process-level runs share its uid (docs/checker.md)")
    with isolation.sandbox_user("process", needs) as user:
        if user is None:
            pytest.skip("a sandbox uid cannot run this Python (e.g. a runtime under /root): runs keep root's uid")


def daemon_source(marker: str) -> str:
    """Code that leaves a sleeping process in a session of its own (``daemon``), ``marker`` in its
    command line: what a killed process group or session does not take with it."""
    argv = ["-c", "import time; time.sleep(600)", marker]
    return (
        "import subprocess, sys\n"
        f"daemon = subprocess.Popen([sys.executable, *{argv!r}], start_new_session=True, stdin=subprocess.DEVNULL,\n"
        "                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    )
