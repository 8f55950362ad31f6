"""Running student code in a child process and taking back only raw outputs.

Student code never runs in the grader's process.  A forkserver, started once with torch,
diffusers and sdverify already imported, forks one child per submission run; the child
loads the components, imports the submission (in a throw-away working folder, under a
memory limit, in its own process group), runs the probes and streams each probe's
*values* back over a pipe as JSON headers plus safetensors bytes — never pickle, never
stdout, never a verdict.  The grader enforces a wall-clock limit per probe, kills the
whole process group on overrun, and restarts a child for the probes still to run, so a
hang, crash, ``os._exit`` or out-of-memory costs only the function that caused it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from PIL import Image

from sdverify import contract as C
from sdverify.checker.probes import Env, Plan, Probe, run_probe
from sdverify.checker.submission import Target, load_module
from sdverify.properties.untrusted import plain_tensor
from sdverify.results import OutcomeStatus

_PRELOAD = [
    "torch",
    "numpy",
    "PIL.Image",
    "safetensors.torch",
    "transformers",
    "diffusers",
    "sdverify.zoo",
    "sdverify.reference",
    "sdverify.checker.sandbox",
]
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # sdverify/
_MAX_FRAME = 256 * 2**20  # bytes: larger than any honest probe result (an image is 3 MiB)


# --------------------------------------------------------------------------- results
@dataclass
class Value:
    """One returned value as the child described it; ``tensor`` holds its data when it had any."""

    desc: dict[str, Any]
    tensor: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return self.desc.get("kind", "other")

    def describe(self) -> str:
        d = self.desc
        if d.get("kind") == "tensor" and self.tensor is not None:
            kind = "Tensor" if d.get("type") == "Tensor" else f"{d.get('type')} (a torch.Tensor subclass)"
            return f"{kind} of shape {list(self.tensor.shape)}, dtype {self.tensor.dtype}, device {d.get('device')}"
        if d.get("kind") == "image":
            return f"PIL image of size {d.get('size')}, mode {d.get('mode')}"
        text = str(d.get("type", "object"))
        if "shape" in d:
            text += f" of shape {d['shape']}, dtype {d.get('dtype')}"
        if "len" in d:
            text += f" of length {d['len']}"
        if d.get("fields"):
            text += f" with fields {d['fields']}"
        return text


@dataclass
class Outcome:
    """What happened when a probe ran: ``status`` is ok, error, missing, timeout, crashed or skipped."""

    status: OutcomeStatus
    values: list[Value] = field(default_factory=list)
    message: str = ""


@dataclass
class SandboxResult:
    outcomes: dict[str, Outcome]
    import_error: str | None = None
    log_tail: str = ""
    modified_files: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------- child side
def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) instead of returning"
    # Where it happened: the innermost frame outside the grader's own package.
    outside = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PACKAGE)]
    where = f" (at {Path(outside[-1].filename).name}:{outside[-1].lineno}, in {outside[-1].name})" if outside else ""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"raised {type(exc).__name__}: {text}{where}"


def _encode(value: Any, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Describe a returned value and extract its data as plain CPU tensors."""
    if isinstance(value, torch.Tensor):
        tensor = plain_tensor(value)
        desc: dict[str, Any] = {
            "kind": "tensor",
            "key": key,
            "type": type(value).__name__,
            "device": str(tensor.device),
        }
        return desc, {key: tensor.cpu().contiguous()}
    if isinstance(value, Image.Image):
        array = np.array(value)
        return {"kind": "image", "key": key, "mode": value.mode, "size": list(value.size)}, {
            key: torch.from_numpy(array.copy())
        }
    desc = {"kind": "other", "type": type(value).__name__}
    if isinstance(value, np.ndarray):
        desc.update(shape=list(value.shape), dtype=str(value.dtype))
    elif isinstance(value, (list, tuple)):
        desc["len"] = len(value)
        desc["items"] = [type(v).__name__ for v in value[:3]]
    if hasattr(value, "keys") and callable(value.keys):
        desc["fields"] = [str(k) for k in list(value.keys())[:8]]
    return desc, {}


def _send(conn, header: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> None:
    conn.send_bytes(json.dumps(header).encode())
    if header.get("event") == "done":
        conn.send_bytes(safetensors.torch.save(tensors or {}))


def _limit_memory(limit_mb: int | None, device: str) -> None:
    # RLIMIT_AS counts address space; CUDA maps huge virtual ranges, so the limit only
    # applies to CPU runs.  Measured from what the child already maps (torch, models).
    if not limit_mb or torch.device(device).type == "cuda":
        return
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + limit_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _thread_lock_for_tqdm() -> None:
    """Give tqdm a thread lock before anything draws a progress bar.

    Left alone, tqdm's first bar (transformers draws one while loading weights) creates a
    multiprocessing semaphore registered with the grader's resource tracker; a child that
    is killed never unregisters it, and the grader ends with "leaked semaphore objects".
    """
    import threading

    import tqdm

    tqdm.tqdm.set_lock(threading.RLock())


def _child_main(job: dict[str, Any], conn) -> None:
    """Entry point of the sandboxed child (runs in a fresh fork of the forkserver)."""
    os.setsid()  # own process group: the grader kills it and anything it spawned at once
    work = job["workdir"]
    os.chdir(work)
    os.environ.update(HOME=work, TMPDIR=work, PWD=work)
    log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _thread_lock_for_tqdm()
    from sdverify import zoo

    dtype = getattr(torch, job["dtype"])
    components = zoo.load_components(job["weights"], job["device"], dtype)
    inputs = safetensors.torch.load_file(job["inputs"])
    env = Env(components, inputs, torch.device(job["device"]), dtype)
    _send(conn, {"event": "loaded"})
    _limit_memory(job["memory_limit_mb"], job["device"])
    try:
        module = load_module(Target(**job["target"]), job["search_dir"])
    except BaseException as exc:
        _send(conn, {"event": "import_error", "message": _describe_exception(exc)})
        return
    _send(conn, {"event": "ready"})
    for raw in job["probes"]:
        probe = Probe(**raw)
        if not callable(getattr(module, probe.function, None)):
            _send(conn, {"event": "done", "probe": probe.id, "status": "missing"})
            continue
        _send(conn, {"event": "start", "probe": probe.id})
        try:
            values = run_probe(module, env, probe)
            descs, tensors = [], {}
            for i, value in enumerate(values):
                desc, data = _encode(value, f"v{i}")
                descs.append(desc)
                tensors.update(data)
        except BaseException as exc:
            _send(conn, {"event": "done", "probe": probe.id, "status": "error", "message": _describe_exception(exc)})
            continue
        _send(conn, {"event": "done", "probe": probe.id, "status": "ok", "values": descs}, tensors)
    _send(conn, {"event": "finished"})


# ---------------------------------------------------------------------- parent side
def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def fingerprint(folders: list[Path]) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under ``folders`` (``__pycache__`` aside)."""
    seen: dict[str, tuple[int, int]] = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                seen[path] = (st.st_size, st.st_mtime_ns)
    return seen


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


class _Run:
    """One child process and the probes it was given."""

    def __init__(self, ctx, job: dict[str, Any]) -> None:
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_child_main, args=(job, send), daemon=True)
        # multiprocessing would re-run the grader's __main__ script in the child (and a
        # script without a main guard would grade again, recursively): hide it for start().
        main = sys.modules["__main__"]
        saved: dict[str, Any] = {k: main.__dict__.pop(k) for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__spec__ = None
        try:
            self.proc.start()
        finally:
            main.__dict__.update(saved)
        send.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.kill()
        self.proc.join(5)

    def exit_description(self) -> str:
        self.proc.join(5)
        code = self.proc.exitcode
        if code is None:
            return "stopped answering"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
            return f"was killed by signal {name}{hint}"
        return f"ended the process (exit status {code}: sys.exit/os._exit or a crash) instead of returning"


def _read(run: _Run, timeout: float) -> tuple[dict[str, Any] | None, bytes | None]:
    """The next header (and payload for ``done``); ``(None, None)`` on EOF; raises TimeoutError."""
    if not run.recv.poll(timeout):
        raise TimeoutError
    try:
        header = json.loads(run.recv.recv_bytes(_MAX_FRAME))
    except EOFError:
        return None, None
    if not isinstance(header, dict) or not isinstance(header.get("event"), str):
        raise TypeError("malformed header")
    payload = None
    if header["event"] == "done":
        if not run.recv.poll(timeout):
            raise TimeoutError
        payload = run.recv.recv_bytes(_MAX_FRAME)
    return header, payload


def _values(header: dict[str, Any], payload: bytes) -> list[Value]:
    try:
        tensors = safetensors.torch.load(payload)
    except Exception as exc:  # SafetensorError is no ValueError; garbage bytes are a channel fault
        raise ValueError(f"unreadable tensor bytes ({exc})") from exc
    values = []
    for desc in header.get("values", []):
        if not isinstance(desc, dict):
            raise TypeError("malformed value")
        key = desc.get("key")
        data = tensors.get(key) if isinstance(key, str) and desc.get("kind") in ("tensor", "image") else None
        values.append(Value(desc, data))
    return values


def run_submission(
    target: Target,
    plan: Plan,
    *,
    weights: Path,
    device: str,
    dtype: torch.dtype,
    timeout: float,
    memory_limit_mb: int | None,
    watch: list[Path],
) -> SandboxResult:
    """Run every probe of ``plan`` on ``target`` in sandboxed children; gather the outcomes."""
    ctx = _context()
    outcomes: dict[str, Outcome] = {}
    pending = list(plan.probes)
    by_id = {p.id: p for p in plan.probes}
    result = SandboxResult(outcomes)
    before = fingerprint(watch)
    with tempfile.TemporaryDirectory(prefix="sdverify-check-") as tmp:
        inputs = Path(tmp) / "inputs.safetensors"
        safetensors.torch.save_file(plan.inputs, str(inputs))
        log = Path(tmp) / "child.log"
        while pending:
            with tempfile.TemporaryDirectory(prefix="work-", dir=tmp) as work:
                job = {
                    "target": {"kind": target.kind, "value": target.value},
                    "search_dir": os.getcwd(),
                    "weights": str(weights),
                    "device": device,
                    "dtype": str(dtype).replace("torch.", ""),
                    "inputs": str(inputs),
                    "log": str(log),
                    "workdir": work,
                    "memory_limit_mb": memory_limit_mb,
                    "probes": [{"id": p.id, "function": p.function, "args": p.args} for p in pending],
                }
                blame = _drive(_Run(ctx, job), pending, by_id, outcomes, timeout, result)
            if result.import_error is not None or blame is None:
                break
            probe, status, message = blame
            for p in [q for q in pending if q.function == probe.function]:
                outcomes[p.id] = (
                    Outcome(status, message=message)
                    if p is probe
                    else Outcome("skipped", message=f"not run: an earlier call of {probe.function} {message}")
                )
                pending.remove(p)
        result.log_tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    for p in pending:  # left only when the submission never got to run them
        outcomes[p.id] = Outcome("error", message=f"the submission could not be imported: {result.import_error}")
    result.modified_files = changed_files(before, fingerprint(watch))
    return result


def _drive(run: _Run, pending: list[Probe], by_id, outcomes, timeout: float, result: SandboxResult):
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
            try:
                header, payload = _read(run, wait)
            except TimeoutError:
                run.kill()
                if stage == "starting":
                    result.import_error = f"the sandbox did not start within {wait:g} s"
                    return None
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
            elif event == "start":
                current = by_id.get(header.get("probe"))
            elif event == "done":
                probe = by_id.get(header.get("probe"))
                if probe is None or probe not in pending:
                    raise ValueError(f"result for an unknown probe {header.get('probe')!r}")
                status = header.get("status")
                if status == "missing":
                    outcomes[probe.id] = Outcome("missing", message=f"{probe.function} is not implemented")
                elif status == "ok":
                    outcomes[probe.id] = Outcome("ok", _values(header, payload or b""))
                else:
                    outcomes[probe.id] = Outcome("error", message=str(header.get("message", "failed")))
                pending.remove(probe)
                current = None
            elif event == "finished":
                return culprit("crashed", "stopped before answering") if pending else None
            else:
                raise ValueError(f"unknown event {event!r}")
    except (ValueError, KeyError, TypeError, OSError, UnicodeDecodeError) as exc:
        run.kill()
        return culprit("crashed", f"corrupted the result channel ({type(exc).__name__}: {exc})")
    finally:
        if run.proc.is_alive():
            run.kill()
        else:
            run.proc.join(5)
