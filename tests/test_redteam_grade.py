"""Red team, round three: attacks on `sdverify grade`'s notebook kernels that worked, kept as
regressions; what is still open is an ``xfail(strict=True)`` naming the gap."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sdverify import contract as C
from sdverify import isolation
from sdverify.notebooks.runner import Snapshot, run_notebook

pytestmark = pytest.mark.slow
needs_bwrap = pytest.mark.skipif(isolation.bwrap_problem() is not None, reason=str(isolation.bwrap_problem()))

# Writes past the working folder's quota into the folders a bwrap kernel shares with the grader
# (found in its own mount table); x: [the folders, bytes written].
FILL_CELL = """import os
shared = [l.split()[4] for l in open('/proc/self/mountinfo') if l.split()[4].endswith(('/extract', '/sockets'))]
n = 0
try:
    for i in range({files}):
        with open(os.path.join(shared[0], f'fill{{i}}'), 'wb') as f:
            for _ in range(16):
                f.write(b'x' * (1 << 20))
                n += 1 << 20
except OSError:
    pass
x = [shared, n]"""


@needs_bwrap
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="open: a bwrap kernel's extract and socket folders are writable binds of the host's disk, "
    "outside the working folder's quota, so one notebook can fill the grader's disk while it runs",
)
def test_bwrap_kernel_writes_no_more_to_the_host_disk_than_its_quota(tmp_path: Path):
    path = tmp_path / "nb.ipynb"
    files = (C.SANDBOX_WORK_BYTES >> 24) + 2  # 16 MiB files: the quota and 32 MiB more
    nbformat.write(new_notebook(cells=[new_code_cell(FILL_CELL.format(files=files))]), str(path))
    snapshot = Snapshot("all", "^# never", ("x",))
    run = run_notebook(path, [snapshot], env={}, cell_timeout=120, notebook_timeout=240, level="bwrap")
    shared, written = run.variable("all", "x").value
    assert shared, "the kernel found no shared folder to write to"
    assert written <= C.SANDBOX_WORK_BYTES
