"""Red team, round three: attacks on `sdverify grade`'s notebook kernels that worked, kept as
regressions; what the process level cannot contain is asserted as it stands (``what_remains``)."""

from __future__ import annotations

import os
import tempfile
import threading
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from sandbox_uids import alive, daemon_source, needs_sandbox_uid

from sdverify import contract as C
from sdverify import isolation
from sdverify.notebooks.runner import RunResult, Snapshot, run_notebook

pytestmark = pytest.mark.slow
needs_bwrap = pytest.mark.skipif(isolation.bwrap_problem() is not None, reason=str(isolation.bwrap_problem()))


# Writes past the working folder's quota into the folders the kernel shares with the grader: the
# siblings of its working folder it may write (a root grader's parent folder is not listable,
# but sdverify's source names it), then frees them; x: [the folders, bytes written, the first one's size].
FILL_CELL = """import os
here = os.getcwd()
parent = os.path.dirname(here)
names = os.listdir(parent) if os.access(parent, os.R_OK) else ['shared']
shared = [p for p in (os.path.join(parent, n) for n in names) if p != here and os.access(p, os.W_OK)]
n = 0
try:
    for i in range({files}):
        with open(os.path.join(shared[0], f'fill{{i}}'), 'wb') as f:
            for _ in range(16):
                f.write(b'x' * (1 << 20))
                n += 1 << 20
except OSError:
    pass
size = os.statvfs(shared[0]).f_blocks * os.statvfs(shared[0]).f_frsize
for name in os.listdir(shared[0]):  # room for the extraction, which writes there too
    if name.startswith('fill'):
        os.remove(os.path.join(shared[0], name))
x = [shared, n, size]"""
FILL_FILES = (C.SANDBOX_WORK_BYTES >> 24) + 2  # 16 MiB files: the quota and 32 MiB more


def _run(tmp_path: Path, cell: str, level: str) -> RunResult:
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(cell)]), str(path))
    snapshot = Snapshot("all", "^# never", ("x",))
    return run_notebook(path, [snapshot], env={}, cell_timeout=120, notebook_timeout=240, level=level)  # type: ignore[arg-type]


@needs_bwrap
def test_bwrap_kernel_writes_no_more_to_the_host_disk_than_its_quota(tmp_path: Path):
    # Broke: its extract and sockets folders were writable binds of the host's disk (640 MiB in a
    # red-team run).  Now they are one tmpfs of the sandbox's own, which the grader reads through
    # the kernel's mount namespace: nothing reaches the host's disk, and RAM only up to its size.
    shared, written, size = _run(tmp_path, FILL_CELL.format(files=FILL_FILES), "bwrap").variable("all", "x").value
    assert shared, "the kernel found no shared folder to write to"
    assert size == C.SANDBOX_SHARED_BYTES
    assert C.SANDBOX_SHARED_BYTES - (16 << 20) <= written <= C.SANDBOX_SHARED_BYTES


def test_what_remains_a_process_level_kernel_writes_past_its_quota(tmp_path: Path):
    """The documented OS limit (docs/checker.md): without a mount namespace the process level's
    folders are the host's disk, bounded per file (RLIMIT_FSIZE), not in all; ``/tmp`` is as
    open to it.  Grade untrusted batches under bwrap."""
    shared, written, _ = _run(tmp_path, FILL_CELL.format(files=FILL_FILES), "process").variable("all", "x").value
    assert shared and written == FILL_FILES << 24 > C.SANDBOX_WORK_BYTES


@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=needs_bwrap), "process"])
def test_a_kernels_daemon_does_not_outlive_its_run(tmp_path: Path, level: str):
    # Broke at the process level: a process in a session of its own escaped the kernel's killed
    # session and could signal later runs and rewrite files.  Now every process of the run's uid
    # is killed when it ends; under bwrap its PID namespace dies with it.
    if level == "process":
        needs_sandbox_uid()
    marker = f"sdverify-daemon-{uuid.uuid4().hex}"
    try:
        cell = daemon_source(marker) + "import time\ntime.sleep(0.5)\nx = daemon.poll() is None"
        started = _run(tmp_path, cell, level).variable("all", "x").value
        assert started is True
        assert alive(marker) == []
    finally:
        for pid in alive(marker):
            os.kill(pid, 9)


# Two kernels meet in a folder both can write, then each tries the other's working folder, kernel
# process and connection file; x: [its uid, and whether each of those worked].
MEET_CELL = """import os, time
def meet(name):
    with open(os.path.join({rendezvous!r}, name + '.tmp'), 'w') as f:
        f.write(f'{{os.getcwd()}} {{os.getpid()}}')
    os.rename(os.path.join({rendezvous!r}, name + '.tmp'), os.path.join({rendezvous!r}, name))
def wait(name):
    deadline = time.time() + 60
    while not os.path.exists(os.path.join({rendezvous!r}, name)) and time.time() < deadline:
        time.sleep(0.05)
    return open(os.path.join({rendezvous!r}, name)).read().split()
def works(action):
    try:
        action()
        return True
    except OSError:
        return False
meet({me!r})
where, pid = wait({other!r})
x = [os.getuid(), works(lambda: os.listdir(where)), works(lambda: os.kill(int(pid), 0)),
     works(lambda: open(os.path.join(os.path.dirname(where), 'conn', 'k.json')).read())]
meet({me!r} + '.done')
wait({other!r} + '.done')"""


def test_parallel_process_level_kernels_cannot_reach_each_other(tmp_path: Path):
    # Broke: every process-level run of a root grader had uid 65534, so parallel workers could
    # signal each other and read each other's working folders and connection files.
    needs_sandbox_uid()
    rendezvous = tempfile.mkdtemp(prefix="sdverify-meet-")
    os.chmod(rendezvous, 0o1777)
    results: dict[str, object] = {}

    def run(me: str, other: str) -> None:
        folder = tmp_path / me
        folder.mkdir()
        cell = MEET_CELL.format(rendezvous=rendezvous, me=me, other=other)
        results[me] = _run(folder, cell, "process").variable("all", "x").value

    threads = [threading.Thread(target=run, args=pair) for pair in (("a", "b"), ("b", "a"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (uid_a, *reached_a), (uid_b, *reached_b) = results["a"], results["b"]  # type: ignore[misc]
    assert uid_a != uid_b and isolation.is_sandbox_uid(uid_a) and isolation.is_sandbox_uid(uid_b)
    assert reached_a == reached_b == [False, False, False]
