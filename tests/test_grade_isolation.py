"""Grader containment, measured through the score: a breach overwrites a graded variable.

Each hostile notebook is the correct sample plus a last cell that zeroes ``image`` when it
CAN do something forbidden (read the grader's environment or HOME, see the report folder,
reach a TCP listener of the test, see a sibling submission).  Under bwrap every such
notebook gets full marks; under the process level the same probes cost points, which
shows the oracles can fire.  Shell escapes must not run at either level.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from sdverify import contract as C
from sdverify import isolation, zoo
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.kernel_launcher import MEMORY_VARIABLE
from sdverify.notebooks.runner import run_notebook
from sdverify.notebooks.segmentation import Snapshot
from sdverify.notebooks.spec import load_spec

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
CANARY = "sdverify-canary-7f3a"
needs_bwrap = pytest.mark.skipif(
    isolation.bwrap_problem() is not None, reason=f"bwrap cannot isolate here: {isolation.bwrap_problem()}"
)

# Probe name -> code that appends the name to `breaches` when the forbidden thing works.
PROBES = {
    "env": "if os.environ.get('SDV_CANARY') == {canary!r}: breaches.append('env')",
    "home": "if pathlib.Path({home_file!r}).read_text() == {canary!r}: breaches.append('home')",
    "out": "seen = pathlib.Path({out!r}, 'submissions').exists()  # the grader wrote it before the run\n"
    "pathlib.Path({out!r}, 'breach.txt').write_text('x')\n"
    "if seen: breaches.append('out')",
    "tcp": "socket.create_connection(('127.0.0.1', {port}), timeout=2).close(); breaches.append('tcp')",
    "sibling": "if pathlib.Path({subs!r}, 'alice.ipynb').read_text(): breaches.append('sibling')",
}


def _probe_cell(probes: list[str], **where: object) -> str:
    lines = ["import os, pathlib, socket", "breaches = []"]
    for name in probes:
        body = PROBES[name].format(canary=CANARY, **where).replace("\n", "\n    ")
        lines += ["try:", f"    {body}", "except Exception:", "    pass"]
    return "\n".join([*lines, "if breaches:", "    image = image * 0  # a breach costs the image checks"])


def _outside_tmp() -> Path:
    """A folder outside /tmp (which bwrap empties anyway), so that hiding it is what is tested."""
    for base in ("/srv", "/mnt", "/opt", "/var/lib"):
        if os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="sdverify-isolation-", dir=base))
    return Path(tempfile.mkdtemp(prefix="sdverify-isolation-"))


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """The grader's world: a canary variable, a fake HOME with a secret, submissions and
    report folders outside /tmp, a TCP listener on loopback."""
    root = _outside_tmp()
    monkeypatch.setenv("SDVERIFY_CACHE", str(zoo.default_cache_root()))  # the zoo stays where it is
    home = root / "home"
    home.mkdir()
    (home / "secret.txt").write_text(CANARY)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SDV_CANARY", CANARY)
    subs, out = root / "submissions", root / "out"
    subs.mkdir()
    (subs / "alice.ipynb").write_text((SAMPLES / "correct.ipynb").read_text())
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0)
    try:
        yield {
            "root": root,
            "subs": subs,
            "out": out,
            "listener": listener,
            "where": {"home_file": str(home / "secret.txt"), "out": str(out), "subs": str(subs)}
            | {"port": listener.getsockname()[1]},
        }
    finally:
        listener.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _hostile(world: dict, name: str, probes: list[str]) -> Path:
    nb = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    nb.cells.append(new_code_cell(_probe_cell(probes, **world["where"])))
    path = world["subs"] / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


def _connected(listener: socket.socket) -> bool:
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@needs_bwrap
@pytest.mark.slow  # the laptop tier's isolation case is the checker's (tests/test_checker_isolation.py)
def test_bwrap_contains_every_probe_full_marks(world):
    path = _hostile(world, "mallory", list(PROBES))
    settings = Settings(sandbox="bwrap", call_timeout=100)
    [grade] = grade_batch([path], world["out"], spec=load_spec(), settings=settings, workers=1)
    assert grade.error is None and grade.isolation == "bwrap"
    assert grade.score == grade.max_score, [c.message for e in grade.exercises for c in e.checks if not c.passed]
    assert not (world["out"] / "breach.txt").exists()
    assert not _connected(world["listener"])
    results = json.loads((world["out"] / "submissions" / "mallory" / "results.json").read_text())
    assert results["output"].startswith("isolation: bwrap")
    assert "isolation,bwrap" not in (world["out"] / "grades.csv").read_text()  # a column, not a row
    assert (world["out"] / "grades.csv").read_text().splitlines()[1].endswith(",bwrap")
    assert '<property name="isolation" value="bwrap"' in (world["out"] / "junit.xml").read_text()
    assert "isolation: bwrap" in (world["out"] / "index.html").read_text()
    assert "isolation: bwrap" in (world["out"] / "submissions" / "mallory" / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=needs_bwrap), "process"])
def test_each_probe_through_the_score(world, level):
    # The environment is an allow-list at both levels; everything else is only closed by bwrap.
    for probe in PROBES:
        _hostile(world, f"probe_{probe}", [probe])
    settings = Settings(sandbox=level, call_timeout=100)
    paths = sorted(world["subs"].glob("probe_*.ipynb"))
    grades = grade_batch(paths, world["out"], spec=load_spec(), settings=settings, workers=2)
    lost = {g.name.removeprefix("probe_") for g in grades if g.score < g.max_score}
    assert all(g.error is None and g.isolation == level for g in grades)
    # At the process level as the grader's own user it can read and write what the grader can; as
    # a uid of its own (a root grader) it keeps only the network.
    other_uid = level == "process" and _sandboxed(level, zoo.default_cache_root())
    assert lost == (set() if level == "bwrap" else {"tcp"} if other_uid else set(PROBES) - {"env"})
    assert (world["out"] / "breach.txt").exists() == (level == "process" and not other_uid)


def _run(tmp_path: Path, cells: list[str], level: str, env: dict[str, str] | None = None, **limits: float):
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), str(path))
    snapshot = Snapshot("all", "^# never", ("x",))
    run = run_notebook(
        path,
        [snapshot],
        env=env or {},
        cell_timeout=limits.get("cell_timeout", 30),
        notebook_timeout=60,
        level=isolation.resolve(level),
    )
    return run


@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=[needs_bwrap, pytest.mark.slow]), "process"])
def test_shell_escapes_do_not_run(tmp_path, level):
    logs = [tmp_path / f"pip{i}.log" for i in range(3)]
    cells = [
        f"!touch {tmp_path / 'bang'}",
        f"%pip install --no-index --log {logs[0]} sdverify-no-such-package",
        f"pip install --no-index --log {logs[1]} sdverify-no-such-package",
        f"get_ipython().automagic = True\npip install --no-index --log {logs[2]} sdverify-no-such-package",
        "x = get_ipython().automagic",
    ]
    run = _run(tmp_path, cells, level)
    assert not (tmp_path / "bang").exists() and not any(log.exists() for log in logs)
    shell = [e.message for e in run.events if e.kind == "shell"]
    assert sum("shell escape not run" in m for m in shell) == 4, shell
    assert any("automagic" in m and "attempted" in m for m in shell), shell
    assert run.variable("all", "x").value is True  # student code can turn it back on: hence the rewrite


@needs_bwrap
@pytest.mark.slow
def test_bwrap_kernel_is_interruptible_and_outputs_are_capped(tmp_path):
    cells = ["x = 1\nwhile True:\n    pass", f"print('y' * {3 * C.GRADE_CELL_TEXT_BYTES})\nx = 2"]
    run = _run(tmp_path, cells, "bwrap", cell_timeout=3)
    kinds = {(e.index, e.kind): e.message for e in run.events}
    assert "was interrupted" in kinds[(0, "timeout")]  # the interrupt reached the kernel: no restart
    assert "outputs cut" in kinds[(1, "capped")]
    text = "".join(o.get("text", "") for o in run.executed.cells[1].outputs)
    assert C.GRADE_CELL_TEXT_BYTES <= len(text) < C.GRADE_CELL_TEXT_BYTES + 100
    assert run.variable("all", "x").value == 2


@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=[needs_bwrap, pytest.mark.slow]), "process"])
def test_kernel_allocation_past_its_memory_limit_fails_in_its_cell(tmp_path, level):
    cells = [
        "import os\nlimit = os.environ.get('SDVERIFY_KERNEL_MEMORY_MB')",  # gone before the notebook runs
        "try:\n    block = bytearray(8 * 2**30)\n    x = 'allocated'\nexcept MemoryError:\n    x = 'refused'",
        "x = (x, limit)",
    ]
    run = _run(tmp_path, cells, level, env={MEMORY_VARIABLE: "2048"})
    assert run.variable("all", "x").value == ["refused", None]  # a tuple comes back as a list


# --- the kernel's limits (contract SANDBOX_*): what a notebook may take from the host ------------

LIMITS_CELL = """import os, resource
limits = {{n: list(resource.getrlimit(getattr(resource, n))) for n in ('RLIMIT_FSIZE', 'RLIMIT_CPU', 'RLIMIT_NPROC')}}
try:
    with open('sparse', 'wb') as f:  # one byte past the file-size limit, without writing the rest
        f.seek({size})
        f.write(b'x')
    past = 'written'
except OSError as exc:
    past = exc.errno
sizes = {{p: os.statvfs(p).f_blocks * os.statvfs(p).f_frsize for p in ('/tmp', '/dev/shm', os.getcwd())}}
x = [limits, past, sizes, os.getuid()]"""


def _sandboxed(level: str, *needs: Path) -> bool:
    """Whether a kernel of ``level`` reading ``needs`` runs as a sandbox uid here (bwrap: 65534 in
    its own user namespace, or a leased uid on the host), not as the grader's."""
    if level == "bwrap":
        return True
    with isolation.sandbox_user("process", needs) as user:
        return user is not None


@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=[needs_bwrap, pytest.mark.slow]), "process"])
def test_kernel_gets_the_sandbox_limits(tmp_path, level):
    run = _run(tmp_path, [LIMITS_CELL.format(size=C.SANDBOX_FILE_BYTES)], level)
    limits, past, sizes, uid = run.variable("all", "x").value
    assert limits["RLIMIT_FSIZE"] == [C.SANDBOX_FILE_BYTES] * 2 and past == errno.EFBIG
    assert limits["RLIMIT_CPU"] == [C.SANDBOX_CPU_S] * 2
    assert isolation.is_sandbox_uid(uid) == _sandboxed(level)
    if _sandboxed(level):  # as your own user the count would be your whole session's: not set
        assert limits["RLIMIT_NPROC"] == [C.SANDBOX_PROCESSES] * 2
    if level == "bwrap":  # RAM-backed and size-limited; at the process level they are the host's (README)
        work = next(p for p in sizes if p not in ("/tmp", "/dev/shm"))
        assert sizes == {"/tmp": C.SANDBOX_TMP_BYTES, "/dev/shm": C.SANDBOX_SHM_BYTES, work: C.SANDBOX_WORK_BYTES}


# Fills each RAM-backed folder with files under the file-size limit until it is full, or past
# twice its cap (so a regression fails the test instead of taking the host's memory).
FLOOD_CELL = """import os
def shmem():
    return int(next(l for l in open('/proc/meminfo') if l.startswith('Shmem:')).split()[1]) << 10
before, written = shmem(), {{}}
for folder, budget in (('/dev/shm', {shm}), ('/tmp', {tmp}), (os.getcwd(), {work})):
    n = 0
    try:
        while n < 2 * budget:
            with open(os.path.join(folder, f'flood{{n}}'), 'wb') as f:
                for _ in range(32):
                    f.write(b'x' * (1 << 20))
                    n += 1 << 20
    except OSError:
        pass
    written[folder] = n
x = [written, shmem() - before]"""


def _peak_shmem(stop: threading.Event, peak: list[int]) -> None:
    """The host's shared memory, sampled until ``stop``: its highest value lands in ``peak``."""
    while not stop.wait(0.05):
        peak[0] = max(peak[0], _shmem())


def _shmem() -> int:
    with open("/proc/meminfo") as f:
        return int(next(line for line in f if line.startswith("Shmem:")).split()[1]) << 10


@needs_bwrap
@pytest.mark.slow
def test_a_flooding_kernel_takes_no_more_host_memory_than_its_caps(tmp_path):
    caps = {"shm": C.SANDBOX_SHM_BYTES, "tmp": C.SANDBOX_TMP_BYTES, "work": C.SANDBOX_WORK_BYTES}
    before, peak, stop = _shmem(), [0], threading.Event()
    sampler = threading.Thread(target=_peak_shmem, args=(stop, peak))
    sampler.start()
    try:
        run = _run(tmp_path, [FLOOD_CELL.format(**caps)], "bwrap")
    finally:
        stop.set()
        sampler.join()
    written, grown = run.variable("all", "x").value
    for filled, cap in zip(written.values(), caps.values()):  # each filled to its cap (less what IPython keeps)
        assert cap - (16 << 20) <= filled <= cap
    slack = 128 << 20  # the rest of the machine (other tests) moves Shmem too
    assert grown <= sum(caps.values()) + slack and peak[0] - before <= sum(caps.values()) + slack
    deadline = time.monotonic() + 30  # and all of it is given back once the kernel's namespaces are gone
    while _shmem() - before >= slack and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _shmem() - before < slack


FORK_CELL = """import subprocess, sys
code = '''
import os, time
kids = []
while len(kids) < {budget}:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
print(len(kids))
'''
x = int(subprocess.run([sys.executable, '-I', '-S', '-c', code], capture_output=True, text=True).stdout)"""


@pytest.mark.slow
@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=needs_bwrap), "process"])
def test_a_fork_bomb_stops_at_the_process_limit(tmp_path, level):
    budget = C.SANDBOX_PROCESSES + 100
    forks = _run(tmp_path, [FORK_CELL.format(budget=budget)], level).variable("all", "x").value
    if _sandboxed(level):
        assert 0 < forks < C.SANDBOX_PROCESSES
    else:  # the OS limit: a process-level kernel as the grader's own user has no count (README)
        assert forks == budget


USERNS_CELL = """import subprocess
r = subprocess.run(['unshare', '-Urm', 'sh', '-c',
                    'mkdir -p big && mount -t tmpfs -o size=4g none big && df -B1 --output=size big | tail -n 1'],
                   capture_output=True, text=True)
x = [r.returncode, r.stdout.strip(), r.stderr[-300:]]"""


@pytest.mark.slow
@pytest.mark.parametrize("level", [pytest.param("bwrap", marks=needs_bwrap), "process"])
def test_what_remains_a_user_namespace_of_its_own_mounts_an_uncapped_tmpfs(tmp_path, level):
    """The documented OS limit (README "Isolation", docs/checker.md), asserted as it stands: where
    the host allows unprivileged user namespaces, a kernel makes one and mounts a tmpfs no cap
    bounds.  Once a seccomp filter closes it, this fails: then turn it round and fix the docs."""
    if not (_unprivileged_userns() and shutil.which("unshare")):
        pytest.skip("this host allows no unprivileged user namespaces (or has no unshare(1)): the gap is shut")
    code, size, err = _run(tmp_path, [USERNS_CELL], level).variable("all", "x").value
    assert code == 0, f"the gap looks closed here ({err!r}): update README and docs/checker.md"
    assert int(size) > C.SANDBOX_TMP_BYTES


def _unprivileged_userns() -> bool:
    def read(path: str, default: str) -> str:
        p = Path(path)
        return p.read_text().strip() if p.exists() else default

    return (
        int(read("/proc/sys/user/max_user_namespaces", "0")) > 0
        and read("/proc/sys/kernel/unprivileged_userns_clone", "1") == "1"
    )
