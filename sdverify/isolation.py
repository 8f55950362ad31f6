"""How far student code is kept from everything else: the isolation level and its wrapper.

Two levels, chosen with ``--sandbox auto|bwrap|process`` (``auto``: bwrap where it runs):

* ``bwrap`` — bubblewrap (the sandbox Flatpak is built on) puts each run of student code
  in fresh user, PID, mount, network, IPC and UTS namespaces.  It sees only the system
  folders (``/usr``, ``/etc``, the libraries), the Python runtime and sdverify (its reference
  emptied: nothing sandboxed needs it), read-only,
  plus what the caller names (the weights, read-only) and one scratch folder, the only
  writable place: no ``HOME``, no other user data, no submissions folder, no grader
  output.  No network (a private loopback only); the environment is an allow-list;
  nothing it starts outlives the run (``--die-with-parent`` and its own PID namespace).
  Its ``/tmp``, ``/dev/shm`` and hidden folders are size-limited tmpfs (contract ``SANDBOX_*``).
  Where the grader runs as root there is no user namespace (its uid 0 would be the host's
  root): root builds the mounts and ``setpriv`` drops to a uid of the run's own
  (:func:`sandbox_user`) with no capabilities.  What it shares with the grader (a kernel's
  sockets and extraction folders) is a size-limited tmpfs of its own, which the grader reaches
  through its mount namespace (:meth:`Confinement.open_shared`): nothing it writes lands on
  the host's disk.
* ``process`` — a child process with the same allow-listed environment, a scratch working
  folder, resource limits and a process group the grader kills; it can read what your user
  can read and use the network.  Used where bwrap cannot run (macOS, containers without
  user namespaces); reports say so and one warning is printed.  Where the grader is root
  each run has a uid of its own (leased from ``SANDBOX_UID_FIRST``), which can write none of
  the grader's files nor reach another run's, and every process of that uid is killed when the
  run ends (a daemon that left the session included).  Where it is not, uids cannot change:
  runs share the grader's uid and a daemon can outlive its run.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import grp
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sdverify import contract as C
from sdverify.errors import SdverifyWarning, UsageError

log = logging.getLogger(__name__)

Level = Literal["bwrap", "process"]
CHOICES = C.SANDBOX_CHOICES
PROCESS_WARNING = (
    "sdverify: isolation level 'process': student code runs as your user, with the network and "
    "read access to your files (it cannot write outside its scratch folder only by convention); "
    "install bubblewrap (apt install bubblewrap) for OS-level isolation"
)
# Variables a sandboxed run may see, when the grader has them; everything else is dropped.
_ENV_ALLOWED = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)
# What the process student code is forked from may also keep: where it imports from, and the hub
# settings its preloaded libraries read once at import (none of them a secret; HF_TOKEN is dropped).
_STARTUP_KEPT = ("HOME", "PYTHONPATH", "HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# What any program needs to run (binaries, libraries, /etc for the loader, /sys for CPU facts).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")
_SYSTEM_NAMES = {name.lstrip("/") for name in _SYSTEM}


def bwrap_problem() -> str | None:
    """Why bwrap cannot isolate a run here, or None when it can (tried once per process)."""
    return _bwrap_problem()


@functools.lru_cache(maxsize=1)
def _bwrap_problem() -> str | None:
    exe = shutil.which("bwrap")
    if exe is None:
        return "bwrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    try:
        done = subprocess.run(
            [exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start: {exc}"
    if done.returncode != 0:
        return f"bwrap cannot create namespaces here: {done.stderr.strip() or f'exit {done.returncode}'}"
    return None


def resolve(requested: str | None = None) -> Level:
    """The level a run gets for ``--sandbox requested`` (None: ``$SDVERIFY_SANDBOX``, else auto);
    ``bwrap`` where it cannot run is an error."""
    requested = requested or os.environ.get("SDVERIFY_SANDBOX") or "auto"
    if requested not in CHOICES:
        raise UsageError(f"--sandbox {requested!r}: expected one of {', '.join(CHOICES)}")
    if requested == "process":
        return "process"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if requested == "bwrap":
        raise UsageError(f"--sandbox bwrap: {problem}")
    return "process"


def runtime_paths() -> list[Path]:
    """What a sandboxed Python needs to read: its interpreter, its packages and sdverify itself."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(Path(sysconfig.get_paths()[key]))
    paths.add(Path(__file__).resolve().parent)  # the sdverify package (an editable install's source)
    return sorted(paths)


def sandbox_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment of a sandboxed run: never the grader's own variables."""
    env = {key: os.environ[key] for key in _ENV_ALLOWED if key in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=str(home), TMPDIR=str(home), PWD=str(home), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1")
    env.update(extra or {})
    return env


@contextlib.contextmanager
def scrubbed_environ() -> Iterator[None]:
    """Within this block the grader's process environment is the allow-listed one (plus
    :data:`_STARTUP_KEPT`), so that a process started here, which student code is forked from (the
    process level's forkserver, a spawned child), never holds the grader's variables: clearing
    ``os.environ`` in the child leaves the strings its process was started with on its stack,
    readable by the code it runs (a red team read a secret there)."""
    kept = {key: os.environ[key] for key in (*_ENV_ALLOWED, *_STARTUP_KEPT) if key in os.environ}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(kept)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class Confinement:
    """How one sandboxed process is started: its level, what it may write, read and not see."""

    level: Level
    scratch: Path  # the working folder, the only writable place (with ``writable``)
    env: dict[str, str]
    # A folder the sandbox writes and the grader reads (a kernel's sockets and extractions):
    # under bwrap a tmpfs of SANDBOX_SHARED_BYTES in the sandbox only (:meth:`open_shared`).
    shared: Path | None = None
    readable: tuple[Path, ...] = ()  # re-shown read-only after hiding (weights, caches)
    hidden: tuple[Path, ...] = field(default_factory=tuple)  # shown empty (submissions, grader output)
    # A mount point made under /tmp, which is then read-only: for a process that gives each of
    # its children a fresh tmpfs there (the checker's jail), so no writable place is shared.
    private_work: Path | None = None
    quota: int | None = None  # bytes: the working folder is a tmpfs of that size (bwrap only)
    user: int | None = None  # the uid it runs as (:func:`sandbox_user`); None: the grader's
    # Only ``sdverify check`` of the bundled reference (no target) runs the kit's reference inside.
    shows_reference: bool = False

    def command(self, argv: Iterable[str]) -> list[str]:
        """``argv`` wrapped for this level (unchanged for ``process``)."""
        argv = list(argv)
        if self.level == "process":
            return argv
        exe = shutil.which("bwrap")
        if exe is None:
            raise RuntimeError(bwrap_problem() or "bwrap vanished")
        out = [exe, "--dev", "/dev", *_tmpfs("/dev/shm", C.SANDBOX_SHM_BYTES, "1777"), "--proc", "/proc"]
        out += _tmpfs("/tmp", C.SANDBOX_TMP_BYTES, "1777")
        # In order: the system folders and the runtime, the inputs, all read-only; then empty
        # what must stay unseen even inside those; last the writable folders.
        for name in _SYSTEM:
            if os.path.islink(name):  # /bin -> usr/bin on merged-/usr systems
                out += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                out += ["--ro-bind", name, name]
        shared = () if self.shared is None else (self.shared,)
        out += self._passable_parents((*runtime_paths(), *self.readable, *self.hidden, self.scratch, *shared))
        for path in (*runtime_paths(), *self.readable):
            if path.exists():
                out += ["--ro-bind", str(path), str(path)]
        if not self.shows_reference:
            out += _without_reference()
        for path in self.hidden:
            if path.is_dir():
                out += _tmpfs(str(path), C.SANDBOX_COVER_BYTES)
        out += self._scratch_mount()
        for path in shared:
            out += _tmpfs(str(path), C.SANDBOX_SHARED_BYTES, "1777")
        if self.private_work is not None:
            out += ["--dir", str(self.private_work), "--remount-ro", "/tmp"]
        # Nothing else is writable: bwrap's own root and /dev are tmpfs, read-only from here on.
        out += ["--remount-ro", "/dev", "--remount-ro", "/"]
        out += [*self._namespaces(), "--die-with-parent", "--new-session"]
        out += ["--clearenv", "--chdir", str(self.scratch)]
        for key, value in sorted(self.env.items()):
            out += ["--setenv", key, value]
        return [*out, "--", *self._as_user(argv)]

    def popen_kwargs(self) -> dict[str, object]:
        """What ``subprocess.Popen`` needs besides the command: environment, folder, own session,
        and the uid it runs as (:attr:`user`, at both levels: bwrap is started as that user)."""
        kwargs: dict[str, object] = {"env": dict(self.env), "cwd": str(self.scratch), "start_new_session": True}
        if self.user is not None and self.level == "process":
            kwargs.update(user=self.user, group=self.user, extra_groups=[])
        return kwargs

    def open_shared(self, pid: int, timeout: float) -> int:
        """A descriptor of :attr:`shared` as the sandbox started as ``pid`` sees it (the grader
        reads and writes through ``/proc/self/fd/<fd>``): the folder itself at the process level;
        under bwrap the sandbox's tmpfs, reached through ``/proc/<child>/root`` once bwrap has
        mounted it (the host has no such folder).  Held open, it cannot come to mean another
        process's folder when ``pid`` is gone and its number reused."""
        assert self.shared is not None
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        if self.level == "process":
            return os.open(self.shared, flags | os.O_NOFOLLOW)
        deadline = time.monotonic() + timeout
        while True:
            for child in _children(pid):
                with contextlib.suppress(OSError):
                    return os.open(f"/proc/{child}/root{self.shared}", flags)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the sandbox did not mount {self.shared.name} within {timeout:g} s")
            time.sleep(0.01)

    def _namespaces(self) -> list[str]:
        """Fresh namespaces: user, PID, mount, network, IPC, UTS.  With :attr:`user` (the grader
        is root) no user namespace, whose uid would be the host's root: real root builds the
        mounts and :meth:`_as_user` then becomes ``user`` on the host, with no capabilities."""
        if self.user is None:
            uid = str(C.SANDBOX_UID)
            return ["--unshare-all", "--unshare-user", "--uid", uid, "--gid", uid]
        out = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        return [*out, "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]

    def _passable_parents(self, paths: Iterable[Path]) -> list[str]:
        """With :attr:`user`: the parents of ``paths``, made as empty passable folders before
        the binds (a root bwrap makes missing parents 0700, and a runtime under ``/root`` has
        one on the host too)."""
        if self.user is None:
            return []
        parents = sorted({parent for path in paths for parent in path.parents if parent.parent != parent})
        parents = [p for p in parents if p.parts[1] not in _SYSTEM_NAMES and str(p) not in ("/tmp", "/dev", "/proc")]
        return [arg for p in parents for arg in ("--perms", "0755", "--dir", str(p))]

    def _as_user(self, argv: list[str]) -> list[str]:
        """``argv`` run as :attr:`user` inside a root bwrap (no capabilities, no new privileges)."""
        if self.user is None:
            return argv
        uid = str(self.user)
        drop = ["--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}", *drop, "--", *argv]

    def _scratch_mount(self) -> list[str]:
        """The working folder: bound from the host, or with :attr:`quota` a tmpfs of that size
        holding the host folder's files read-only (a full disk is then the submission's own)."""
        if self.quota is None:
            return ["--bind", str(self.scratch), str(self.scratch)]
        out = _tmpfs(str(self.scratch), self.quota, "1777")
        for path in sorted(self.scratch.iterdir()):
            out += ["--ro-bind", str(path), str(path)]
        return out


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (none once it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def _without_reference() -> list[str]:
    """bwrap arguments that empty the kit's reference (its source and any compiled copy) in the
    sandbox: student code cannot read it to run a copy, and the sandboxed side never needs it
    (the grader computes the expected values)."""
    kit = Path(__file__).resolve().parent
    hidden = [kit / "reference.py", *kit.glob("__pycache__/reference.*.pyc")]
    return [arg for path in hidden if path.is_file() for arg in ("--ro-bind", "/dev/null", str(path))]


def describe(level: str) -> str:
    """What a level means, for a reader of the reports (``checker``: a module graded by the checker)."""
    meaning = {
        "bwrap": "bubblewrap sandbox: no network, no access to other submissions or the grader's files",
        "process": "child process only: the code could use the network and read the grader's files",
        "checker": "the checker's sandbox",
    }
    return f"isolation: {level or 'unknown'}" + (f" ({meaning[level]})" if level in meaning else "")


@functools.cache
def warn_once(level: Level) -> None:
    """Warn of the process level once per process (a :class:`SdverifyWarning`), and not of bwrap."""
    if level == "process":
        warnings.warn(PROCESS_WARNING, SdverifyWarning, stacklevel=2)


def limit_address_space(extra_mb: int) -> None:
    """Cap this process's address space at what it maps now plus ``extra_mb`` (soft and hard:
    the code under it cannot raise it back).  An allocation past it raises MemoryError in the
    submission instead of taking the machine's memory from the grader and other workers.
    Address space, not resident memory: CUDA's huge virtual mappings make it CPU-only."""
    import resource

    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + extra_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _tmpfs(path: str, size: int, perms: str = "0755") -> list[str]:
    """bwrap arguments for an empty tmpfs of at most ``size`` bytes at ``path``: its pages are
    the host's shared memory, which no limit of the process inside counts.  A root bwrap makes
    it root's, so one the sandbox writes is ``1777``, as ``/tmp`` is."""
    return ["--perms", perms, "--size", str(size), "--tmpfs", path]


def limit_resources() -> None:
    """Cap this process and what it starts (soft and hard): file size, CPU time and, where it runs
    as a sandbox uid (:func:`sandbox_user`, or bwrap's user namespace), the process count
    (contract ``SANDBOX_*``).  The kernel counts processes per uid: as your own user the count
    would include your whole session, and root ignores it.  A write past the file size fails
    with EFBIG in the submission instead of a SIGXFSZ that kills it."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = [(resource.RLIMIT_FSIZE, C.SANDBOX_FILE_BYTES), (resource.RLIMIT_CPU, C.SANDBOX_CPU_S)]
    if is_sandbox_uid(os.getuid()):
        limits.append((resource.RLIMIT_NPROC, C.SANDBOX_PROCESSES))
    for which, limit in limits:
        hard = resource.getrlimit(which)[1]
        limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(which, (limit, limit))


def is_sandbox_uid(uid: int) -> bool:
    """Whether ``uid`` is one student code runs as: a leased one, or bwrap's ``SANDBOX_UID``."""
    return uid == C.SANDBOX_UID or C.SANDBOX_UID_FIRST <= uid < C.SANDBOX_UID_FIRST + C.SANDBOX_UIDS


@contextlib.contextmanager
def sandbox_user(level: Level, needs: Iterable[Path] = ()) -> Iterator[int | None]:
    """The uid one run of student code has, for the ``with`` block: where the grader is root, a
    uid of its own (:func:`leased_uid`), so that it can write none of the grader's files, reach
    no other run's, count its processes apart, and leave nothing running; None (the grader's own
    uid) where the grader is not root, or where a sandbox uid cannot reach the runtime, ``needs``
    (weights), or start bwrap (then a warning names why)."""
    if os.geteuid() != 0:
        yield None
        return
    problem = _unreachable(level, tuple(runtime_paths()), tuple(sorted(set(needs))))
    if problem is not None:
        _warn_root(problem)
        yield None
        return
    with leased_uid() as uid:
        yield uid


@contextlib.contextmanager
def leased_uid() -> Iterator[int]:
    """A uid of ``SANDBOX_UID_FIRST``'s range that no other run holds (an exclusive ``flock`` on
    its file in a root-only folder, dropped by the kernel if the grader dies), with no process
    left when the block starts or ends (:func:`sweep`).  For a root grader only."""
    folder = _lease_folder()
    for uid in range(C.SANDBOX_UID_FIRST, C.SANDBOX_UID_FIRST + C.SANDBOX_UIDS):
        if _has_account(uid):
            continue
        fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            sweep(uid)  # what a grader killed before its own sweep left
            yield uid
        finally:
            sweep(uid)
            os.close(fd)
        return
    raise RuntimeError(f"all {C.SANDBOX_UIDS} sandbox uids from {C.SANDBOX_UID_FIRST} are in use")


def _lease_folder() -> Path:
    """Where the uids' lock files live: root's and writable by root only (student code at the
    process level sees ``/tmp``, and must not hold or forge a lease)."""
    for base in ("/run", tempfile.gettempdir()):
        folder = Path(base) / "sdverify-uids"
        with contextlib.suppress(OSError):
            folder.mkdir(mode=0o700, exist_ok=True)
            info = os.lstat(folder)
            if stat.S_ISDIR(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022:
                return folder
    raise RuntimeError("no root-only folder for the sandbox uids' lock files (/run or the temporary folder)")


def _has_account(uid: int) -> bool:
    """Whether ``uid`` (or the gid of the same number) names an account: never leased or swept."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    return False


# kill(-1) as the uid signals every process it may signal (those of that uid) but itself, in one
# pass over the task list that no fork can slip through.
_KILL_EVERY = "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\n"


def sweep(uid: int) -> None:
    """Kill every process whose real or saved uid is ``uid`` (a daemon that double-forked and
    took its own session included, in any PID namespace): ``kill(-1, SIGKILL)`` from a process
    that becomes ``uid``.  For a root grader only, on a uid it leased."""
    try:
        subprocess.run(
            [sys.executable, "-I", "-S", "-c", _KILL_EVERY],
            user=uid,
            group=uid,
            extra_groups=[],
            env={},
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:  # a uid that cannot start Python started nothing
        log.debug("sweep of uid %d: %s", uid, exc)


@functools.lru_cache(maxsize=8)
def _unreachable(level: Level, runtime: tuple[Path, ...], needs: tuple[Path, ...]) -> str | None:
    """Why a sandbox of ``level`` running as a sandbox uid cannot read the ``runtime`` and
    ``needs``, or None when it can (tried once: a Python started as the sandbox will start one)."""
    # The runtime's folders are checked, ``needs`` (weights: a few files) file by file.
    code = (
        "import os, sys\n"
        "cut = sys.argv.index('--')\n"
        "shallow, deep = sys.argv[1:cut], sys.argv[cut + 1:]\n"
        "files = [os.path.join(d, f) for p in deep for d, _, fs in os.walk(p, onerror=sys.exit) for f in fs]\n"
        "sys.exit(next((p for p in [*shallow, *deep, *files] if not os.access(p, os.R_OK)), None))\n"
    )
    with tempfile.TemporaryDirectory(prefix="sdverify-user-") as tmp, leased_uid() as uid:
        trial = Confinement(level, Path(tmp), sandbox_env(Path(tmp)), readable=needs, user=uid)
        hand_over(trial.user, Path(tmp))
        try:
            done = subprocess.run(
                trial.command([sys.executable, "-I", "-S", "-c", code, *map(str, runtime), "--", *map(str, needs)]),
                **trial.popen_kwargs(),  # type: ignore[call-overload]
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"a sandbox uid cannot start Python: {exc}"
    if done.returncode != 0:
        return f"a sandbox uid cannot read {done.stderr.strip()[-300:] or sys.executable}"
    return None


@functools.cache
def _warn_root(problem: str) -> None:
    warnings.warn(
        f"sdverify: the grader runs as root and {problem}: student code keeps root's uid (at the process level "
        "it can write your files, under bwrap read root-only ones) with no process-count limit; make the Python "
        "environment and the weights readable by others (zoo snapshots this version builds are)",
        SdverifyWarning,
        stacklevel=3,
    )


def hand_over(user: int | None, *paths: Path) -> None:
    """Make ``paths`` (folders and files made by the grader for the sandbox) the sandbox user's
    alone (mode 0700, a file 0600: no other run's uid reads them), and their parents passable,
    so that a sandbox running as ``user`` can write there; nothing for None."""
    if user is None:
        return
    for path in paths:
        # The mode first: once the sandbox owns ``path`` it may swap it for a link, which a chmod
        # by root would follow.
        os.chmod(path, 0o700 if path.is_dir() else 0o600)
        os.chown(path, user, user, follow_symlinks=False)
        mode = path.parent.stat().st_mode
        if mode & 0o111 != 0o111:
            os.chmod(path.parent, mode | 0o111)


def become(user: int) -> None:
    """Take ``user``'s uid and gid for good (no supplementary groups): for a root process only."""
    os.setgroups([])
    os.setresgid(user, user, user)
    os.setresuid(user, user, user)
