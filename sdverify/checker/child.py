"""The child side of the sandbox: load the components, import the submission, run the probes.

Everything here runs with student code in the same process, so it decides nothing: it
describes what each call returned and hands the values to the grader (:mod:`.protocol`).
"""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from sdverify import hub, isolation
from sdverify.checker import protocol
from sdverify.checker.probes import Env, Probe, run_probe
from sdverify.checker.submission import Target, load_module
from sdverify.contract import API_NAMES
from sdverify.delegation.tripwire import PSEUDO_FILES, Tripwire
from sdverify.untrusted.describer import describe

_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # sdverify/


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r}) instead of returning"
    # Where it happened: the innermost frame outside the grader's own package.
    outside = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_PACKAGE)]
    where = f" (at {Path(outside[-1].filename).name}:{outside[-1].lineno}, in {outside[-1].name})" if outside else ""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"raised {type(exc).__name__}: {text}{where}"


def _limit_memory(limit_mb: int | None, device: str) -> None:
    # Measured from what the child already maps (torch, models); CPU runs only (isolation.py).
    if limit_mb and torch.device(device).type != "cuda":
        isolation.limit_address_space(limit_mb)


def thread_lock_for_tqdm() -> None:
    """Give tqdm a thread lock before anything draws a progress bar.

    Left alone, tqdm's first bar (transformers draws one while loading weights) creates a
    multiprocessing semaphore registered with the grader's resource tracker; a child that
    is killed never unregisters it, and the grader ends with "leaked semaphore objects".
    """
    import threading

    import tqdm

    tqdm.tqdm.set_lock(threading.RLock())


def child_main(job: dict[str, Any], conn: protocol.Connection, preloaded: Env | None = None) -> None:
    """Run the probes of ``job`` on the submission and stream their values to the grader.

    Entered in a fresh fork of the forkserver (process level: it takes its own session and
    environment here) or of the jail's server inside bwrap (:mod:`.jail`, which isolated it).
    """
    if job["log"] is not None:  # forked: the log is ours to open (bwrap: the grader's Popen did it)
        os.setsid()
        work = job["workdir"]
        os.chdir(work)
        os.environ.clear()  # the forkserver's copy of the grader's environment: secrets included
        os.environ.update(job["env"])
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
    thread_lock_for_tqdm()
    hub.explain_not_served_here()  # a submission's from_pretrained(<id not served>) says what is
    if preloaded is None:
        preloaded = load_env(job["weights"], job["device"], job["dtype"])
        preloaded.inputs = safetensors.torch.load_file(job["inputs"])
    env = preloaded
    protocol.send(conn, {"event": "loaded"})
    _limit_memory(job["memory_limit_mb"], job["device"])
    if job.get("user") is not None:  # process level, root grader: the submission runs as another uid
        isolation.become(job["user"])
    isolation.limit_resources()
    running = [""]  # the API function whose probe runs: what a tripwire record is charged to
    watch = job.get("watch")
    tripwire = Tripwire(**watch, kit=(_PACKAGE, PSEUDO_FILES), where=lambda: running[0]).install() if watch else None
    try:
        module = load_module(Target(**job["target"]), job["search_dir"])
    except BaseException as exc:
        protocol.send(conn, {"event": "import_error", "message": _describe_exception(exc)})
        return
    if tripwire is not None:
        tripwire.check_identity(module, API_NAMES)
    protocol.send(conn, {"event": "ready", "uses": tripwire.take() if tripwire else []})
    while (raw := protocol.next_probe(conn)) is not None:
        probe = Probe(**raw)
        running[0] = probe.function
        if not callable(getattr(module, probe.function, None)):
            protocol.send(conn, {"event": "done", "probe": probe.id, "status": "missing"})
            continue
        protocol.send(conn, {"event": "start", "probe": probe.id})
        uses = tripwire.take if tripwire else list
        try:
            values = run_probe(module, env, probe)
            tensors: dict[str, torch.Tensor] = {}
            descs = [describe(value, f"v{i}", tensors, deep=False) for i, value in enumerate(values)]
        except BaseException as exc:
            failed = {"status": "error", "message": _describe_exception(exc)}
            protocol.send(conn, {"event": "done", "probe": probe.id, **failed, "uses": uses()})
            continue
        done = {"event": "done", "probe": probe.id, "status": "ok", "values": descs, "uses": uses()}
        protocol.send(conn, done, tensors)
    protocol.send(conn, {"event": "finished"})


def load_env(weights: str, device: str, dtype: str) -> Env:
    from sdverify import zoo

    torch_dtype = getattr(torch, dtype)
    return Env(zoo.load_components(weights, device, torch_dtype), {}, torch.device(device), torch_dtype)
