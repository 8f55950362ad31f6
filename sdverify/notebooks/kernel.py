"""The grading kernel: its kernelspecs, its confined kernel manager and the client that runs cells.

The kernel runs this interpreter (``sdverify.notebooks.kernel_launcher``), wrapped by a
:class:`~sdverify.isolation.Confinement`; under bwrap it is interrupted by a message, since
signals do not reach into the sandbox.  The client keeps each cell's execute reply and caps
what it keeps of the outputs (:mod:`.output_caps`).
"""

from __future__ import annotations

import json
import multiprocessing.util
import os
import shutil
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat import NotebookNode

from sdverify import contract as C
from sdverify import isolation
from sdverify.isolation import Confinement
from sdverify.notebooks.output_caps import cap_output

_KERNEL_NAME = "sdverify-python"
_KERNEL_CONFINED = "sdverify-python-confined"  # interrupts as a message: signals do not reach into bwrap
_MOUNT_TIMEOUT_S = 60  # for bwrap to mount the folder the kernel shares with the grader
TIMEOUT_ENAME = "CellTimeoutError"  # the ename nbclient reports for a cell past its limit


@lru_cache(maxsize=1)
def _kernel_dir() -> str:
    """Kernelspecs for *this* interpreter, whatever ``python3`` means on this machine."""
    root = Path(tempfile.mkdtemp(prefix="sdverify-kernelspec-"))
    # Removed when this process exits, a pool worker included (atexit does not run there).
    multiprocessing.util.Finalize(None, shutil.rmtree, args=(root,), kwargs={"ignore_errors": True}, exitpriority=0)
    for name, interrupt in ((_KERNEL_NAME, "signal"), (_KERNEL_CONFINED, "message")):
        (root / name).mkdir()
        spec = {
            "argv": [sys.executable, "-m", "sdverify.notebooks.kernel_launcher", "-f", "{connection_file}"],
            "display_name": "sdverify grading kernel",
            "language": "python",
            "interrupt_mode": interrupt,
        }
        (root / name / "kernel.json").write_text(json.dumps(spec))
    return str(root)


class _ConfinedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command is wrapped by a :class:`Confinement`."""

    confinement: Confinement | None = None
    shared_fd: int | None = None  # the grader's descriptor of the confinement's shared folder

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.confinement is None:
            return cmd
        # Written (0600) just before this call: the kernel's own uid must be able to read it.
        isolation.hand_over(self.confinement.user, Path(self.connection_file))
        return self.confinement.command(cmd)

    async def _async_post_start_kernel(self, **kw: Any) -> None:
        """Once the kernel is launched (its connection file read from :attr:`ip`, the path it
        sees), open the shared folder and reach its ipc sockets there: the control socket made
        next (interrupts) and every client then connect through the grader's descriptor."""
        if self.confinement is not None and self.confinement.shared is not None:
            pid = self.provisioner.process.pid  # type: ignore[union-attr]
            self.shared_fd = self.confinement.open_shared(pid, _MOUNT_TIMEOUT_S)
            if self.transport == "ipc":
                self.ip = f"/proc/self/fd/{self.shared_fd}/{Path(self.ip).name}"
        await super()._async_post_start_kernel(**kw)

    def client(self, **kwargs: Any) -> Any:
        """A client whose sockets refuse any one message over ``GRADE_KERNEL_MESSAGE_BYTES``
        before buffering it: a flood drops the connection, not the grader's memory."""
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, C.GRADE_KERNEL_MESSAGE_BYTES)
        return super().client(context=context, **kwargs)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart)
        if self.shared_fd is not None:
            os.close(self.shared_fd)
            self.shared_fd = None


class KernelClient(NotebookClient):
    """nbclient with our kernelspec, remembering each cell's execute reply (status, ename),
    keeping at most ``GRADE_CELL_TEXT_BYTES`` of text and ``GRADE_CELL_IMAGE_BYTES`` of
    images per cell (a cell printing gigabytes must not fill the grader's memory)."""

    def __init__(self, *args: Any, confinement: Confinement, connection_file: Path, **kwargs: Any) -> None:
        super().__init__(*args, on_cell_executed=self._remember, **kwargs)
        self.last_reply: dict[str, Any] = {}
        self.confinement = confinement
        self.connection_file = connection_file
        self.used: dict[int, list[int]] = {}  # cell index -> [text bytes, image bytes] kept
        self.capped: set[int] = set()  # cells whose outputs were cut

    def _remember(self, cell: NotebookNode, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.last_reply = (execute_reply or {}).get("content", {})

    def run(self, cell: NotebookNode, index: int | None, timeout: float) -> dict[str, Any]:
        """Execute a notebook cell (``index``) or, with None, a cell of ours; return the reply
        content (DeadKernelError propagates).  nbclient stores the executed cell back at its
        index, so our cells borrow a scratch slot at the end and leave no trace."""
        self.timeout = max(1, int(timeout))
        self.last_reply = {}
        if index is not None:
            self.used[index] = [0, 0]
            self.execute_cell(cell, index)
            return self.last_reply
        self.nb.cells.append(cell)
        try:
            self.execute_cell(cell, len(self.nb.cells) - 1, store_history=False)
        finally:
            self.nb.cells.pop()
        return self.last_reply

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        out = super().output(outs, msg, display_id, cell_index)
        if out is None or not outs or outs[-1] is not out:
            return out
        kept, cut = cap_output(out, self.used.setdefault(cell_index, [0, 0]))
        if cut:
            self.capped.add(cell_index)
        if kept is None:
            outs.pop()
        return kept

    def shared_here(self) -> Path:
        """The confinement's shared folder as the grader reaches it (its running kernel's)."""
        assert isinstance(self.km, _ConfinedKernelManager) and self.km.shared_fd is not None
        return Path(f"/proc/self/fd/{self.km.shared_fd}")

    def create_kernel_manager(self) -> AsyncKernelManager:
        confined = self.confinement.level == "bwrap"
        # The kernel reads its connection file (handed to its uid); under bwrap it binds its ipc
        # sockets in the shared folder, which the grader reaches through its descriptor.
        ipc: dict[str, Any] = {"connection_file": str(self.connection_file)}
        if confined and self.confinement.shared is not None:
            ipc |= {"transport": "ipc", "ip": str(self.confinement.shared / "k")}
        km = _ConfinedKernelManager(
            kernel_name=_KERNEL_CONFINED if confined else _KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[_kernel_dir()]),
            config=self.config,
            **ipc,
        )
        km.confinement = self.confinement
        self.km = km
        return km
