"""The grader side of the sandbox: start children, read their values, enforce every limit.

Student code never runs in the grader's process.  At the ``process`` level a forkserver,
started once with torch, diffusers and sdverify imported, forks one child per run (in its
own session, under a memory limit); at the ``bwrap`` level each run is a fresh Python in a
bubblewrap sandbox (:mod:`sdverify.isolation`) that sees the weights read-only, a scratch
folder, and nothing of the grader's folders — the submission's source is handed over on
its pipe.  The grader enforces a wall-clock limit per probe, kills the whole child on
overrun, and restarts one for the probes still to run, so a hang, crash, ``os._exit`` or
out-of-memory costs only the function that caused it.  What comes back is bounded and
validated (:mod:`.protocol`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.reduction import send_handle
from pathlib import Path
from typing import Any, Protocol

import safetensors.torch
import torch

from sdverify import contract as C
from sdverify import isolation
from sdverify.checker import protocol
from sdverify.checker.child import child_main
from sdverify.checker.jail import WORK as JAIL_WORK
from sdverify.checker.probes import Plan, Probe
from sdverify.checker.protocol import Outcome, SandboxResult
from sdverify.checker.submission import Target
from sdverify.contract import API_NAMES
from sdverify.delegation.policy import Watch
from sdverify.results import OutcomeStatus
from sdverify.untrusted.value import read_bounded

_PRELOAD = [
    "torch",
    "numpy",
    "PIL.Image",
    "safetensors.torch",
    "transformers",
    "diffusers",
    "sdverify.zoo",
    "sdverify.checker.child",  # not sdverify.reference: nothing of it is in a child's memory
]


class Run(Protocol):
    """One child and the channel its values come on (and its probes go on)."""

    recv: Connection

    def kill(self) -> None: ...
    def close(self) -> None: ...
    def exit_description(self) -> str: ...


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0 or code > 128:  # a signal (bwrap reports 128 + its number)
        number = -code if code < 0 else code - 128
        name = signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)
        hint = " (killed: out of memory?)" if number == signal.SIGKILL else ""
        return f"was killed by signal {name}{hint}"
    return f"ended the process (exit status {code}: sys.exit/os._exit or a crash) instead of returning"


class _ForkRun:
    """Process level: a fork of the preloaded forkserver."""

    def __init__(self, job: dict[str, Any]) -> None:
        # CUDA cannot be used in a fork of a process that touched it, and importing the
        # preloaded libraries may (a device count); a CUDA child starts afresh instead.
        ctx: SpawnContext | ForkServerContext
        if torch.device(job["device"]).type == "cuda":
            ctx = multiprocessing.get_context("spawn")
        else:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
        self.recv, theirs = ctx.Pipe(duplex=True)  # values come back, probes go out one at a time
        self.proc = ctx.Process(target=child_main, args=(job, theirs), daemon=True)
        # multiprocessing would re-run the grader's __main__ script in the child (and a
        # script without a main guard would grade again, recursively): hide it for start().
        main = sys.modules["__main__"]
        saved: dict[str, Any] = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__spec__ = None
        try:
            with isolation.scrubbed_environ():  # the forkserver (or spawned child) holds no secret
                self.proc.start()
        finally:
            main.__dict__.update(saved)
        theirs.close()

    def kill(self) -> None:
        if self.proc.pid is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its session: whatever it spawned too
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.kill()
        self.proc.join(5)

    def close(self) -> None:
        if self.proc.is_alive():
            self.kill()
        self.proc.join(5)
        self.recv.close()

    def exit_description(self) -> str:
        self.proc.join(5)
        return _describe_exit(self.proc.exitcode)


class _Jail:
    """bwrap level: one sandbox per settings, holding a preloaded forkserver (:mod:`.jail`).

    Each run is a fork that enters fresh namespaces of its own, so a submission costs a fork,
    not a Python start; when it ends, everything it started is killed before the next one.
    A jail whose server stops answering (a submission may signal it) is replaced.
    """

    def __init__(self, key: _JailKey) -> None:
        weights, device, dtype, readable, shows_reference = key
        self.folder = Path(tempfile.mkdtemp(prefix="sdverify-jail-"))
        self.log = self.folder / "jail.log"  # the grader's: outside anything the sandbox binds
        scratch = self.folder / "scratch"  # the server's working folder (each child covers it)
        scratch.mkdir()
        env = isolation.sandbox_env(scratch, _hub_env(Path(weights)))
        hub = Path(env["HF_HUB_CACHE"]) if "HF_HUB_CACHE" in env else Path(weights)
        readable = (hub, Path(weights), *readable)
        # The jail's uid, held (and swept) until it is discarded; given back if it cannot start.
        with contextlib.ExitStack() as lease:
            user = lease.enter_context(isolation.sandbox_user("bwrap", readable))
            isolation.hand_over(user, scratch)
            confinement = isolation.Confinement(
                "bwrap",
                scratch,
                env,
                readable=readable,
                private_work=Path(JAIL_WORK),
                user=user,
                shows_reference=shows_reference,
            )
            ours, theirs = socket.socketpair()
            argv = [sys.executable, "-m", "sdverify.checker.jail", str(theirs.fileno()), weights, device, dtype]
            with open(self.log, "ab") as sink:
                self.proc = subprocess.Popen(
                    confinement.command(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    pass_fds=(theirs.fileno(),),
                    **confinement.popen_kwargs(),  # type: ignore[call-overload]
                )
            theirs.close()
            self.ctrl = Connection(ours.detach())
            self.ready = False
            self.lease = lease.pop_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, job: dict[str, Any], inputs: bytes, startup: float) -> _JailChild:
        """Start ``job`` in a fresh child; its values (and its probes) go on a socket of its own."""
        ours, theirs = socket.socketpair()
        # Each run starts an empty log: one that a flood left at the file-size limit would make
        # every later child's output (a print, a progress bar) fail with EFBIG in its own calls.
        os.truncate(self.log, 0)
        run = _JailChild(self, Connection(ours.detach()))
        try:
            if not self.ready:
                if not self.ctrl.poll(startup):
                    raise TimeoutError
                self.ctrl.recv_bytes(256)  # {"event": "ready"}: imports and components loaded
                self.ready = True
            self.ctrl.send_bytes(json.dumps(job).encode())
            self.ctrl.send_bytes(inputs)
            send_handle(self.ctrl, theirs.fileno(), self.proc.pid)
        except (OSError, EOFError, TimeoutError):  # the server is gone or stuck: the read side says so
            self.discard()
        finally:
            theirs.close()
        return run

    def discard(self) -> None:
        """Kill the whole sandbox (bwrap's session; the PID namespace takes everything in it)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(5)
        self.ctrl.close()
        self.lease.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class _JailChild:
    """One run in a jail: its result pipe, and the server's word on how it ended."""

    def __init__(self, jail: _Jail, recv: Connection) -> None:
        self.jail, self.recv = jail, recv
        self.code: int | None = None
        self.ended = False

    def _wait_end(self, timeout: float) -> bool:
        """Wait for the server's ``ended``; a silent server is replaced (the run is gone with it)."""
        if self.ended:
            return True
        try:
            if self.jail.alive() and self.jail.ctrl.poll(timeout):
                self.code = json.loads(self.jail.ctrl.recv_bytes(256))["code"]
                self.ended = True
                return True
        except (OSError, EOFError, ValueError, KeyError, TypeError):
            pass
        self.jail.discard()
        self.ended = True
        return False

    def kill(self) -> None:
        if not self.ended:
            try:
                self.jail.ctrl.send_bytes(b"kill")
            except OSError:
                pass
            self._wait_end(10)

    def close(self) -> None:
        self._wait_end(5)  # the server's cleanup is done before the next run (or the jail is replaced)
        self.recv.close()

    def exit_description(self) -> str:
        self._wait_end(10)
        return _describe_exit(self.code)

    def log_tail(self) -> str:
        """What this run printed (the jail's log, emptied when it started), last bytes only."""
        return _tail(self.jail.log, C.CHECK_LOG_TAIL_BYTES)


_JailKey = tuple[str, str, str, tuple[Path, ...], bool]  # weights, device, dtype, search path, shows the reference
_jails: dict[_JailKey, _Jail] = {}


def _take_jail(key: _JailKey) -> _Jail:
    """The running jail for ``key``, or a new one."""
    jail = _jails.get(key)
    if jail is None or not jail.alive():
        if jail is not None:
            jail.discard()
        jail = _jails[key] = _Jail(key)
    return jail


@atexit.register
def _discard_jails() -> None:
    while _jails:
        _jails.popitem()[1].discard()


def run_submission(
    target: Target,
    plan: Plan,
    *,
    weights: Path,
    device: str,
    dtype: torch.dtype,
    timeout: float,
    memory_limit_mb: int | None,
    level: isolation.Level = "process",
    total_timeout: float | None = None,
    watch: Watch | None = None,
) -> SandboxResult:
    """Run every probe of ``plan`` on ``target`` in sandboxed children; gather the outcomes.

    ``timeout`` bounds each call; ``total_timeout`` the whole submission (the sandbox's own
    start aside): what is left when it runs out is not run, and says so.  ``watch``: what the
    child's delegation tripwire records (None: no tripwire).
    """
    deadline = time.monotonic() + total_timeout if total_timeout else None
    outcomes: dict[str, Outcome] = {}
    pending = list(plan.probes)
    by_id = {p.id: p for p in plan.probes}
    result = SandboxResult(outcomes)
    with tempfile.TemporaryDirectory(prefix="sdverify-check-") as tmp:
        inputs = Path(tmp) / "inputs.safetensors"
        safetensors.torch.save_file(plan.inputs, str(inputs))
        log = Path(tmp) / "child.log"
        while pending:
            with (
                tempfile.TemporaryDirectory(prefix="work-", dir=tmp) as work,
                _process_user(target, level) as user,  # every process of its uid is killed after
            ):
                isolation.hand_over(user, Path(work))
                job = {
                    "target": _target_job(target, level),
                    "search_dir": os.getcwd(),
                    "weights": str(weights),
                    "device": device,
                    "dtype": str(dtype).replace("torch.", ""),
                    "inputs": str(inputs),
                    "log": str(log) if level == "process" else None,
                    "workdir": work,
                    "env": isolation.sandbox_env(Path(work), _hub_env(weights)),
                    "memory_limit_mb": memory_limit_mb,
                    "watch": watch.to_json() if watch else None,
                    "user": user,
                }
                run: Run
                if level == "process":
                    run = _ForkRun(job)
                else:
                    search = (Path.cwd(),) if target.kind == "module" else ()  # where module names resolve
                    dtype_name = str(dtype).replace("torch.", "")
                    jail = _take_jail((str(weights), device, dtype_name, search, target.bundled))
                    run = jail.run(job, inputs.read_bytes(), C.CHECK_STARTUP_TIMEOUT_S)
                blame = _drive(run, pending, by_id, outcomes, timeout, result, torch.device(device), deadline)
                if isinstance(run, _JailChild):
                    with open(log, "ab") as sink:
                        sink.write(run.log_tail().encode())
            if result.import_error is not None or blame is None:
                break
            if deadline is not None and time.monotonic() >= deadline:
                for p in pending:
                    outcomes[p.id] = Outcome(
                        "timeout", message=f"not run: the submission used up its {total_timeout:g} s"
                    )
                pending.clear()
                break
            probe, status, message = blame
            for p in [q for q in pending if q.function == probe.function]:
                outcomes[p.id] = (
                    Outcome(status, message=message)
                    if p is probe
                    else Outcome("skipped", message=f"not run: an earlier call of {probe.function} {message}")
                )
                pending.remove(p)
        result.log_tail = _tail(log, C.CHECK_LOG_TAIL_BYTES)
    for p in pending:  # left only when the submission never got to run them
        outcomes[p.id] = Outcome("error", message=f"the submission could not be imported: {result.import_error}")
    return result


def _job_probe(pending: list[Probe]) -> dict[str, Any] | None:
    """The next probe as the child reads it, or None when none is left."""
    return {"id": pending[0].id, "function": pending[0].function, "args": pending[0].args} if pending else None


def _hub_env(weights: Path) -> dict[str, str]:
    """Offline Hugging Face variables under which a top-level ``from_pretrained(<hub id>)`` in a
    submission loads the grader's weights (as notebooks get) instead of trying the network."""
    from sdverify import zoo

    return zoo.offline_env(zoo.hub_cache_for(weights.resolve()))


def _process_user(target: Target, level: isolation.Level) -> contextlib.AbstractContextManager[int | None]:
    """The uid a process-level child drops to after loading the weights, for one run: it must
    still read the submission (a path's folder, or where module names resolve).  None under
    bwrap, whose jail holds a uid of its own."""
    if level != "process":
        return contextlib.nullcontext()
    where = Path(target.value).resolve().parent if target.kind == "path" else Path.cwd()
    return isolation.sandbox_user("process", (where,))


def _target_job(target: Target, level: isolation.Level) -> dict[str, str]:
    """How the child finds the submission: a bwrap child gets a file's bytes, not its path."""
    if target.kind == "path" and level == "bwrap":
        path = Path(target.value)
        return {"kind": "path", "name": path.name, "source": path.read_bytes().hex()}
    return {"kind": target.kind, "value": target.value}


def _tail(path: Path, size: int) -> str:
    """The last ``size`` bytes of a child's output: a 1 GiB flood costs a seek; anything but a
    regular file (a FIFO, a link to /dev/zero) is refused, never read, and reads as nothing."""
    try:
        return read_bounded(path, size, tail=True).decode(errors="replace")
    except ValueError:
        return ""


def _drive(
    run: Run,
    pending: list[Probe],
    by_id: dict[str, Probe],
    outcomes: dict[str, Outcome],
    timeout: float,
    result: SandboxResult,
    device: torch.device,
    deadline: float | None = None,
) -> tuple[Probe, OutcomeStatus, str] | None:
    """Read one child's stream until it finishes or fails.

    Returns ``(probe, status, message)`` to blame when probes are left unanswered (the
    caller fails that probe's function and restarts a child for the rest), else None.
    """
    current: Probe | None = None
    stage = "starting"
    wait = C.CHECK_STARTUP_TIMEOUT_S  # forkserver start (first run) and loading the components

    def culprit(status: OutcomeStatus, message: str) -> tuple[Probe, OutcomeStatus, str] | None:
        if stage == "importing":
            result.import_error = f"importing it {message}"
            return None
        probe = current or (pending[0] if pending else None)
        return (probe, status, message) if probe is not None else None

    try:
        while True:
            left = deadline - time.monotonic() if deadline is not None and stage != "starting" else wait
            limited = left < wait
            try:
                header, payload = protocol.read(run.recv, max(0.0, left) if limited else wait)
            except TimeoutError:
                run.kill()
                if stage == "starting":
                    result.import_error = f"the sandbox did not start within {wait:g} s"
                    return None
                if limited:
                    return culprit("timeout", "was still running when the submission's total time limit ran out")
                return culprit("timeout", f"did not return within the {timeout:g} s time limit (timed out)")
            if header is None:  # EOF: the child is gone
                return culprit("crashed", run.exit_description())
            event = header["event"]
            if event == "loaded":
                stage, wait = "importing", timeout  # importing the submission is timed like a probe
            elif event == "import_error":
                result.import_error = str(header.get("message", "import failed"))
                return None
            elif event == "ready":
                stage = "running"
                result.uses += [u for u in protocol.uses(header, None) if u.where in ("", *API_NAMES)]
                protocol.hand(run.recv, _job_probe(pending))
            elif event == "start":
                current = by_id.get(str(header.get("probe")))
            elif event == "done":
                probe = by_id.get(str(header.get("probe")))
                if probe is None or probe not in pending:
                    raise ValueError(f"result for an unknown probe {header.get('probe')!r}")
                status = header.get("status")
                result.uses += protocol.uses(header, probe.function)
                if status == "missing":
                    outcomes[probe.id] = Outcome("missing", message=f"{probe.function} is not implemented")
                elif status == "ok":
                    outcomes[probe.id] = Outcome("ok", protocol.values(header, payload or b"", device))
                else:
                    outcomes[probe.id] = Outcome("error", message=str(header.get("message", "failed")))
                pending.remove(probe)
                current = None
                protocol.hand(run.recv, _job_probe(pending))
            elif event == "finished":
                return culprit("crashed", "stopped before answering") if pending else None
            else:
                raise ValueError(f"unknown event {event!r}")
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        run.kill()
        return culprit("crashed", f"corrupted the result channel ({type(exc).__name__}: {exc})")
    finally:
        run.close()
