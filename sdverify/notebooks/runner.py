"""Execute a student notebook unmodified in its own kernel and bring named variables back: the
restart loop over the cells and snapshots.

Nothing the notebook prints is trusted.  The runner inserts an extraction cell at the
end of each exercise (before the next exercise's heading) that writes the exercise's
variables with safetensors + JSON into a folder created just before that cell runs;
the grader reads only those files.  The extraction code runs in a fresh namespace
with its own imports, so a notebook that rebinds ``print``/``type``/``json`` or hides
tracebacks cannot break it.

Isolation (:mod:`sdverify.isolation`): the kernel runs with ``cwd`` and ``HOME`` in a
throw-away scratch folder holding a copy of the notebook, an allow-listed environment, the
offline zoo as its Hugging Face cache (``HF_HUB_OFFLINE=1``), no GPU, ``MPLBACKEND=Agg``,
the data files its spec ships, hub login helpers that do nothing, and (when the spec says so)
a map of its CUDA and float16 code onto the CPU in float32 (:mod:`.device_map`).
At level ``bwrap`` it runs inside bubblewrap, talking to the grader over ipc sockets
(loopback TCP does not cross the network namespace); its working folder and the folder it
shares with the grader (sockets and extractions) are its only writable places, both
size-limited tmpfs (``SANDBOX_WORK_BYTES``, ``SANDBOX_SHARED_BYTES``), so nothing it writes
reaches the host's disk.  Where the grader is root the kernel has a uid of its own for the
run, whose every process is killed when the run ends (:func:`sdverify.isolation.sandbox_user`).  Shell escapes
(``!pip ...``, ``%pip``, ``%%bash``, bare ``pip install`` ...) are replaced by ``pass``
and reported; calls the rewrite cannot see (``os.system``, ``subprocess``...) are
reported.  What the grader keeps of a cell's outputs is capped.  A cell that raises is
recorded and execution continues; a cell that exceeds its time limit is interrupted; a
cell that kills or wedges the kernel is skipped and the notebook is replayed in a fresh
kernel without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from sdverify import contract as C
from sdverify import isolation
from sdverify.delegation import tripwire
from sdverify.isolation import Confinement, Level, sandbox_env
from sdverify.notebooks import device_map
from sdverify.notebooks.extraction import KERNEL_MAPPED, KERNEL_USES, extraction_source, read_snapshot
from sdverify.notebooks.kernel import TIMEOUT_ENAME, KernelClient
from sdverify.notebooks.output_caps import CAPPED_MESSAGE
from sdverify.notebooks.segmentation import Snapshot, locate_ends, locate_exercises, plan_snapshots
from sdverify.notebooks.shell_escapes import escape_calls, neutralise_shell
from sdverify.untrusted.value import UntrustedValue

_KIT = str(Path(__file__).resolve().parents[1]) + os.sep  # frames of the grader's own package
# An extraction cell serialises a handful of tensors; a generous bound still catches a wedged kernel.
EXTRACT_TIMEOUT_S = 60
# After an interrupted cell, a trivial cell must finish this fast or the kernel is replaced.
PROBE_TIMEOUT_S = 10
MAX_RESTARTS = 2

# Run before any student cell: no automagic, no shell aliases (%ls, %rm...).
_SETUP_CODE = "get_ipython().automagic = False\nget_ipython().alias_manager.clear_aliases()"
# Also run first: hub login helpers (a lesson's first cell) do nothing; grading is offline.
_OFFLINE_CODE = r"""
def _sdv_offline():
    try:
        import huggingface_hub, huggingface_hub._login as logins
    except ImportError:
        return
    def skipped(name):
        def login(*args, **kwargs):
            print(f"[sdverify] huggingface_hub.{name}() skipped: grading is offline, on the grader's weights")
        return login
    for name in ("login", "notebook_login", "interpreter_login"):
        setattr(huggingface_hub, name, skipped(name))
        setattr(logins, name, skipped(name))
_sdv_offline()
del _sdv_offline
"""


@dataclass
class CellEvent:
    """Something the teacher should know about one cell (error, timeout, shell escape...)."""

    index: int
    kind: str  # "error" | "timeout" | "killed" | "not-run" | "shell" | "capped"
    message: str


@dataclass
class RunResult:
    """What the grader learns from one execution: snapshots per exercise and cell events."""

    snapshots: dict[str, dict[str, UntrustedValue]]
    snapshot_errors: dict[str, str]
    events: list[CellEvent]
    seconds: float
    executed: NotebookNode
    starts: dict[str, int]  # exercise id -> first cell index (exercises whose heading was found)
    segmentation: list[str]  # warnings of locate_exercises: headings out of order or missing
    ends: dict[str, int] = field(default_factory=dict)  # exercise id -> cell index of its ``ends`` heading
    # The tripwire's records (untrusted), each with "cell": the index of the cell that made it
    # (None: not a notebook cell); None when no tripwire ran or its records could not be read.
    tripwire: list[dict[str, Any]] | None = None
    # What the device map mapped (untrusted): kind -> indices of the cells; None: no map ran.
    mapped: dict[str, list[int]] | None = None

    def variable(self, exercise: str, name: str) -> UntrustedValue:
        return self.snapshots.get(exercise, {}).get(name) or UntrustedValue(name, {"kind": "missing"})


@dataclass
class _Step:
    kind: str  # "cell" | "snapshot"
    index: int  # cell index in the notebook (snapshot: position it precedes)
    snapshot: Snapshot | None = None


class _Restart(Exception):
    """The kernel died or wedged in a cell: replay in a fresh kernel without that cell."""


def run_notebook(
    path: str | Path,
    snapshots: list[Snapshot],
    *,
    env: dict[str, str],
    cell_timeout: float,
    notebook_timeout: float,
    level: Level = "process",
    readable: tuple[Path, ...] = (),
    hidden: tuple[Path, ...] = (),
    watch: dict[str, list[Any]] | None = None,
    files: dict[str, Path] | None = None,
    map_device: bool = False,
) -> RunResult:
    """Execute ``path`` (never modified) and return the snapshots and cell events.

    ``env`` is what the lesson needs on top of the allow-listed environment (never the
    grader's own); ``readable`` (weights) and ``hidden`` (submissions, grader output)
    matter at level ``bwrap``.  ``watch`` (:meth:`sdverify.delegation.Watch.to_json`) installs
    a delegation tripwire in the kernel before any student cell runs.  ``files`` (path
    relative to the notebook -> source) are copied next to it; ``map_device`` installs the
    device map (:mod:`.device_map`) before any student cell runs.
    """
    start = time.monotonic()
    deadline = start + notebook_timeout
    nb = nbformat.read(str(path), as_version=4)
    events: dict[tuple[int, str], CellEvent] = {}
    how = "contained under bwrap" if level == "bwrap" else "not blocked in process mode"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source, removed = neutralise_shell(cell.source)
            for command in removed:
                events[(index, f"shell:{command}")] = CellEvent(index, "shell", f"shell escape not run: {command}")
            for call in escape_calls(cell.source):
                events[(index, f"call:{call}")] = CellEvent(index, "shell", f"shell escape attempted: {call} ({how})")
    plan = plan_snapshots(nb.cells, snapshots)
    steps: list[_Step] = []
    for index in range(len(nb.cells) + 1):
        steps += [_Step("snapshot", index, snap) for snap in plan.get(index, [])]
        if index < len(nb.cells) and nb.cells[index].cell_type == "code":
            steps.append(_Step("cell", index))

    taken: dict[str, dict[str, UntrustedValue]] = {}
    records: dict[str, Any] = {}  # the latest snapshot's tripwire records (cumulative in a kernel)
    setup = "\n".join(
        [
            _SETUP_CODE,
            _OFFLINE_CODE,
            *([tripwire.kernel_setup(watch, _KIT)] if watch else []),
            *([device_map.kernel_setup()] if map_device else []),
        ]
    )
    errors: dict[str, str] = {}
    skip: set[int] = set()
    capped: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="sdverify-nb-") as tmp, isolation.sandbox_user(level, readable) as user:
        # work: the kernel's cwd and HOME; shared: its sockets and extraction folders (under bwrap
        # a tmpfs inside the sandbox only); conn: its connection file, which it only reads.
        work, shared, conn = Path(tmp) / "work", Path(tmp) / "shared", Path(tmp) / "conn"
        for folder in (work, conn, *([shared] if level == "process" else [])):
            folder.mkdir()
        shutil.copy2(path, work / Path(path).name)
        for name, source in (files or {}).items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
        confinement = Confinement(
            level,
            work,
            sandbox_env(work, env),
            shared=shared,
            readable=(*readable, conn),
            hidden=hidden,
            quota=C.SANDBOX_WORK_BYTES,
            user=user,
        )
        isolation.hand_over(user, work, *([shared] if level == "process" else []))
        for _attempt in range(MAX_RESTARTS + 1):
            client = KernelClient(
                nb,
                confinement=confinement,
                connection_file=conn / "k.json",
                allow_errors=True,
                interrupt_on_timeout=True,
                error_on_timeout={"ename": TIMEOUT_ENAME, "evalue": "", "traceback": []},
                shutdown_kernel="immediate",
                iopub_timeout=4,
                startup_timeout=120,
                resources={"metadata": {"path": str(work)}},
            )
            try:
                # The kernel's own output (startup banners, warnings) is noise to the grader's user.
                popen = {**confinement.popen_kwargs(), "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                with client.setup_kernel(**popen):
                    client.run(nbformat.v4.new_code_cell(setup), None, EXTRACT_TIMEOUT_S)
                    for step in steps:
                        if step.kind == "snapshot":
                            _take_snapshot(client, step, taken, errors)
                            if step.snapshot is not None and step.snapshot.id in taken:
                                records["latest"] = taken[step.snapshot.id].pop(KERNEL_USES, None)
                                records["mapped"] = taken[step.snapshot.id].pop(KERNEL_MAPPED, None)
                        elif step.index in skip:
                            continue
                        elif time.monotonic() >= deadline:
                            events[(step.index, "run")] = CellEvent(
                                step.index,
                                "not-run",
                                f"not run: the notebook exceeded its {notebook_timeout:g} s limit",
                            )
                        else:
                            _run_cell(client, nb, step.index, min(cell_timeout, deadline - time.monotonic()), events)
                break
            except _Restart as restart:
                skip.add(int(str(restart)))
                if time.monotonic() >= deadline:
                    for snap in snapshots:
                        errors.setdefault(snap.id, "the kernel was stuck when the notebook time limit ran out")
                    break
            finally:
                capped |= client.capped
    for index in capped:
        events[(index, "capped")] = CellEvent(index, "capped", CAPPED_MESSAGE)
    starts, segmentation = locate_exercises(nb.cells, snapshots)
    ends = locate_ends(nb.cells, snapshots, starts)
    return RunResult(
        snapshots=taken,
        snapshot_errors={k: v for k, v in errors.items() if k not in taken},
        events=sorted(events.values(), key=lambda e: (e.index, e.kind)),
        seconds=time.monotonic() - start,
        executed=nb,
        starts=starts,
        ends=ends,
        segmentation=segmentation,
        tripwire=_by_cell(records.get("latest"), nb) if watch else None,
        mapped=_mapped_cells(records.get("mapped"), nb) if map_device else None,
    )


def _cells(nb: NotebookNode) -> dict[Any, int]:
    """Execution count -> index of the code cell that carries it."""
    cells = {c.get("execution_count"): i for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    cells.pop(None, None)
    return cells


def _by_cell(latest: UntrustedValue | None, nb: NotebookNode) -> list[dict[str, Any]] | None:
    """The tripwire's records, each given the index of the cell whose execution count it carries."""
    value = latest.value if latest is not None else None
    if not isinstance(value, list):
        return None
    cells = _cells(nb)
    return [{**r, "cell": cells.get(r.get("where"))} for r in value if isinstance(r, dict)]


def _mapped_cells(latest: UntrustedValue | None, nb: NotebookNode) -> dict[str, list[int]]:
    """The device map's records, execution counts turned into cell indices."""
    value = latest.value if latest is not None else None
    if not isinstance(value, dict):
        return {}
    cells = _cells(nb)
    return {
        str(kind): sorted({cells[c] for c in counts if isinstance(c, int) and c in cells})
        for kind, counts in value.items()
        if isinstance(counts, list)
    }


def _run_cell(client: KernelClient, nb: NotebookNode, index: int, timeout: float, events: dict) -> None:
    cell = nb.cells[index]
    limit = max(1, int(timeout))
    events.pop((index, "run"), None)
    try:
        status = client.run(cell, index, timeout)
    except DeadKernelError:
        events[(index, "run")] = CellEvent(
            index, "killed", "this cell killed the kernel; it was skipped and the notebook rerun without it"
        )
        raise _Restart(index) from None
    error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
    if status.get("ename") == TIMEOUT_ENAME:
        events[(index, "run")] = CellEvent(
            index, "timeout", f"this cell exceeded its {limit} s limit and was interrupted"
        )
        if not _probe(client):
            events[(index, "run")] = CellEvent(
                index, "timeout", f"this cell exceeded its {limit} s limit and ignored the interrupt; it was skipped"
            )
            raise _Restart(index)
    elif status.get("status") == "error" or error is not None:
        ename = status.get("ename") or (error or {}).get("ename", "error")
        evalue = status.get("evalue") or (error or {}).get("evalue", "")
        events[(index, "run")] = CellEvent(index, "error", f"{ename}: {evalue}"[:500])


def _probe(client: KernelClient) -> bool:
    """Is the kernel responsive again after an interrupt?"""
    try:
        reply = client.run(nbformat.v4.new_code_cell("pass"), None, PROBE_TIMEOUT_S)
    except DeadKernelError:
        return False
    return reply.get("ename") != TIMEOUT_ENAME


def _take_snapshot(client: KernelClient, step: _Step, taken: dict, errors: dict) -> None:
    snap = step.snapshot
    assert snap is not None
    # Made and read by the grader through its descriptor of the shared folder; the kernel writes
    # it under the name it sees.
    folder = Path(tempfile.mkdtemp(prefix=f"{snap.id}-", dir=client.shared_here()))
    isolation.hand_over(client.confinement.user, folder)
    assert client.confinement.shared is not None
    seen = client.confinement.shared / folder.name
    cell = nbformat.v4.new_code_cell(extraction_source(snap.requests(), seen))
    try:
        reply = client.run(cell, None, EXTRACT_TIMEOUT_S)
    except DeadKernelError:
        errors[snap.id] = "the kernel died while its variables were being read"
        raise _Restart(-1) from None
    try:
        taken[snap.id] = read_snapshot(folder)
    except (OSError, ValueError) as exc:
        errors[snap.id] = (
            f"variables could not be read: {reply.get('ename', type(exc).__name__)} {reply.get('evalue', exc)}"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
