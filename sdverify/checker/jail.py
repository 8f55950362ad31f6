"""A forkserver inside a bwrap sandbox: each child enters fresh namespaces of its own.

``python -m sdverify.checker.jail CTRL_FD WEIGHTS DEVICE DTYPE`` runs inside the sandbox of
:mod:`sdverify.isolation`.  It imports torch, diffusers and transformers and loads the
components once, then, for every job the grader sends on its control socket, forks a
child that first enters a new user, mount, IPC and network namespace of its own (an empty
``/tmp`` and ``/dev/shm``, the sandbox's read-only mounts locked read-only, no network)
and then runs the submission (:func:`sdverify.checker.child.child_main`).  When the child
ends, or the grader asks, every process in the sandbox but this server is killed (what a
submission started cannot outlive it), and the grader is told the exit status.

A child can signal this server (same user): that only costs the grader a restart.  It
cannot trace it or read its memory (the server is not dumpable), and nothing it leaves in
its namespaces survives it, so nothing one submission does reaches the next.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any, NoReturn

import safetensors.torch

from sdverify import contract as C
from sdverify.checker import protocol
from sdverify.checker.child import child_main, load_env, thread_lock_for_tqdm
from sdverify.checker.probes import Env

_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x08000000, 0x10000000, 0x40000000
_CLONE_NEWPID = 0x20000000
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
_PR_SET_DUMPABLE = 4
WORK = "/tmp/sdverify-work"  # the child's scratch folder: its own empty tmpfs on a mount point bwrap made


def _enter(libc: ctypes.CDLL, flags: int) -> None:
    """unshare(flags) with a new user namespace that maps only our own user."""
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | flags) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    # A non-dumpable process's /proc/self files are root's on the host: writable for the maps
    # only while dumpable (this child alone, in its fresh namespaces; not dumpable again after).
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _fresh_namespaces() -> None:
    """Enter new user, mount, IPC and network namespaces with a size-limited empty tmpfs on
    :data:`WORK` and ``/dev/shm`` (the only writable places: the sandbox's root, ``/dev`` and
    ``/tmp`` are read-only) and over the server's folder; then lock those mounts."""
    libc = ctypes.CDLL(None, use_errno=True)
    _enter(libc, _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWPID)
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
    covers = ((WORK, C.SANDBOX_WORK_BYTES), ("/dev/shm", C.SANDBOX_SHM_BYTES), (os.getcwd(), C.SANDBOX_COVER_BYTES))
    for target, size in covers:
        options = f"mode=0700,size={size}".encode()
        if os.path.islink(target) or libc.mount(b"tmpfs", target.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, options):
            raise OSError(ctypes.get_errno(), f"mount tmpfs {target}")
    # One more user and mount namespace: the mounts above now belong to a more privileged one,
    # so the kernel locks them (no unmount, no remount), whatever capabilities the child has here.
    _enter(libc, _CLONE_NEWNS)


def _child(job: dict[str, Any], inputs: bytes, out_fd: int, env: Env) -> NoReturn:
    """In the fork: keep only the result pipe, isolate, run the submission, never return.

    The submission runs as PID 1 of a PID namespace of its own, in a session of its own: it
    can address (signal) neither the server nor anything else outside, and whatever it
    starts dies with it.  This process only waits for it and passes its status on.
    """
    code = 70
    try:
        os.closerange(3, out_fd)
        os.closerange(out_fd + 1, 4096)
        _fresh_namespaces()
        pid = os.fork()
        if pid:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            code = 128 - code if code < 0 else code  # a signal, reported as bwrap reports one
        else:
            os.setsid()
            _run(job, inputs, out_fd, env)
            code = 0
    finally:
        sys.stdout.flush()
        os._exit(code)


def _run(job: dict[str, Any], inputs: bytes, out_fd: int, env: Env) -> None:
    """The submission's run, in its scratch folder with the allow-listed environment."""
    os.chdir(WORK)
    os.environ.clear()
    os.environ.update(job["env"], HOME=WORK, TMPDIR=WORK, PWD=WORK)
    if job["target"]["kind"] == "path":
        path = os.path.join(WORK, job["target"]["name"])
        with open(path, "wb") as f:
            f.write(bytes.fromhex(job["target"]["source"]))
        job["target"] = {"kind": "path", "value": path}
    env.inputs = safetensors.torch.load(inputs)
    child_main({**job, "workdir": WORK, "log": None}, Connection(out_fd), env)


def _sweep() -> None:
    """Kill every process of the sandbox but this server (and its init), and reap ours."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            if os.waitpid(-1, 0)[0] == 0:
                break
        except ChildProcessError:
            break


def main(argv: list[str] | None = None) -> None:
    ctrl_fd, weights, device, dtype = argv or sys.argv[1:]
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, no /proc/<pid>/mem by a child
    thread_lock_for_tqdm()
    env = load_env(weights, device, dtype)
    ctrl = Connection(int(ctrl_fd))
    ctrl.send_bytes(b'{"event": "ready"}')
    while True:
        try:
            job = json.loads(ctrl.recv_bytes(protocol.JOB_BYTES))
            inputs = ctrl.recv_bytes(protocol.JOB_BYTES)
            out_fd = recv_handle(ctrl)
        except EOFError:  # the grader is gone
            return
        pid = os.fork()
        if pid == 0:
            _child(job, inputs, out_fd, env)
        os.close(out_fd)
        code = None
        while code is None:
            try:
                if select.select([ctrl], [], [], 0.05)[0] and ctrl.recv_bytes(64) == b"kill":
                    os.kill(pid, signal.SIGKILL)
            except EOFError:  # the grader is gone: so is everything here
                _sweep()
                return
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
        _sweep()
        ctrl.send_bytes(json.dumps({"event": "ended", "code": code}).encode())


if __name__ == "__main__":
    main()
