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
  Where the grader runs as root, root-owned files in the system folders that root may
  read (``/etc/shadow``) stay readable, never writable: run the grader as an ordinary
  user to close that.
* ``process`` — a child process with the same allow-listed environment, a scratch working
  folder, resource limits and a process group the grader kills; it can read what your user
  can read and use the network.  Used where bwrap cannot run (macOS, containers without
  user namespaces); reports say so and one warning is printed.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Level = Literal["bwrap", "process"]
CHOICES = ("auto", "bwrap", "process")
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
_UNPRIVILEGED = "65534"  # nobody, inside the user namespace
# What any program needs to run (binaries, libraries, /etc for the loader, /sys for CPU facts).
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/sys")


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
        raise ValueError(f"--sandbox {requested!r}: expected one of {', '.join(CHOICES)}")
    if requested == "process":
        return "process"
    problem = bwrap_problem()
    if problem is None:
        return "bwrap"
    if requested == "bwrap":
        raise ValueError(f"--sandbox bwrap: {problem}")
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


@dataclass(frozen=True)
class Confinement:
    """How one sandboxed process is started: its level, what it may write, read and not see."""

    level: Level
    scratch: Path  # the working folder, the only writable place (with ``writable``)
    env: dict[str, str]
    writable: tuple[Path, ...] = ()  # e.g. a socket folder shared with the grader
    readable: tuple[Path, ...] = ()  # re-shown read-only after hiding (weights, caches)
    hidden: tuple[Path, ...] = field(default_factory=tuple)  # shown empty (submissions, grader output)
    # A mount point made under /tmp, which is then read-only: for a process that gives each of
    # its children a fresh tmpfs there (the checker's jail), so no writable place is shared.
    private_work: Path | None = None

    def command(self, argv: Iterable[str]) -> list[str]:
        """``argv`` wrapped for this level (unchanged for ``process``)."""
        argv = list(argv)
        if self.level == "process":
            return argv
        exe = shutil.which("bwrap")
        if exe is None:
            raise RuntimeError(bwrap_problem() or "bwrap vanished")
        out = [exe, "--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc", "--tmpfs", "/tmp"]
        # In order: the system folders and the runtime, the inputs, all read-only; then empty
        # what must stay unseen even inside those; last the writable folders.
        for name in _SYSTEM:
            if os.path.islink(name):  # /bin -> usr/bin on merged-/usr systems
                out += ["--symlink", os.readlink(name), name]
            elif os.path.isdir(name):
                out += ["--ro-bind", name, name]
        for path in (*runtime_paths(), *self.readable):
            if path.exists():
                out += ["--ro-bind", str(path), str(path)]
        out += _without_reference()
        for path in self.hidden:
            if path.is_dir():
                out += ["--tmpfs", str(path)]
        for path in (self.scratch, *self.writable):
            out += ["--bind", str(path), str(path)]
        if self.private_work is not None:
            out += ["--dir", str(self.private_work), "--remount-ro", "/tmp"]
        # Nothing else is writable: bwrap's own root and /dev are tmpfs, read-only from here on.
        out += ["--remount-ro", "/dev", "--remount-ro", "/"]
        out += ["--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
        out += ["--uid", _UNPRIVILEGED, "--gid", _UNPRIVILEGED]
        out += ["--clearenv", "--chdir", str(self.scratch)]
        for key, value in sorted(self.env.items()):
            out += ["--setenv", key, value]
        return [*out, "--", *argv]

    def popen_kwargs(self) -> dict[str, object]:
        """What ``subprocess.Popen`` needs besides the command: environment, folder, own session."""
        return {"env": dict(self.env), "cwd": str(self.scratch), "start_new_session": True}


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
    """Print the process level's warning once per process (stderr), and nothing for bwrap."""
    if level == "process":
        print(PROCESS_WARNING, file=sys.stderr)


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
