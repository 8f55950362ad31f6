"""Execute a student notebook unmodified in its own kernel and bring named variables back.

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
At level ``bwrap`` it runs inside bubblewrap, talking to the grader over ipc sockets in a
bound folder (loopback TCP does not cross the network namespace); the scratch folder, the
socket folder and the extraction folder are its only writable places.  Shell escapes
(``!pip ...``, ``%pip``, ``%%bash``, bare ``pip install`` ...) are replaced by ``pass``
and reported; calls the rewrite cannot see (``os.system``, ``subprocess``...) are
reported.  What the grader keeps of a cell's outputs is capped.  A cell that raises is
recorded and execution continues; a cell that exceeds its time limit is interrupted; a
cell that kills or wedges the kernel is skipped and the notebook is replayed in a fresh
kernel without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import nbformat
import torch
import zmq
import zmq.asyncio
from IPython.core.alias import default_aliases
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from safetensors.torch import load

from sdverify import contract as C
from sdverify import isolation
from sdverify.delegation import tripwire
from sdverify.isolation import Confinement, Level, sandbox_env
from sdverify.notebooks import device_map
from sdverify.notebooks.paths import WALK_CODE, kernel_request

_KERNEL_NAME = "sdverify-python"
# Read with every snapshot: torch.initial_seed() in the kernel, the seed its last
# torch.manual_seed(N) set (what a replay must use; never parsed from source text).
KERNEL_SEED = "__torch_initial_seed__"
# Read with every snapshot too: initial_seed() of each seeded torch.Generator bound to a name
# (``generator = torch.Generator(device).manual_seed(N)``, the diffusers idiom), at most 16.
KERNEL_GENERATORS = "__torch_generator_seeds__"
# Read with every snapshot too: the delegation tripwire's records so far (sdverify.delegation).
KERNEL_USES = "__sdverify_tripwire__"
# And the device map's records (sdverify.notebooks.device_map): kind -> execution counts.
KERNEL_MAPPED = "__sdverify_device_map__"
_KIT = str(Path(__file__).resolve().parents[1]) + os.sep  # frames of the grader's own package
_TIMEOUT_ENAME = "CellTimeoutError"
# An extraction cell serialises a handful of tensors; a generous bound still catches a wedged kernel.
EXTRACT_TIMEOUT_S = 60
# After an interrupted cell, a trivial cell must finish this fast or the kernel is replaced.
PROBE_TIMEOUT_S = 10
MAX_RESTARTS = 2

_KERNEL_CONFINED = "sdverify-python-confined"  # interrupts as a message: signals do not reach into bwrap

# Cell magics that hand their body to something other than this kernel's Python.
_SHELL_CELL_MAGICS: tuple[str, ...] = (
    "bash",
    "sh",
    "script",
    "system",
    "sx",
    "perl",
    "ruby",
    "cmd",
    "powershell",
    "writefile",
)
_SHELL_CELL_MAGICS += ("python", "python2", "python3", "pypy")  # another Python process
# Line magics that run a command (IPython's default aliases %ls, %rm... included) or re-enable
# automagic, under which any of them runs without its ``%``.
_SHELL_LINE_MAGICS: tuple[str, ...] = (
    "pip",
    "conda",
    "mamba",
    "micromamba",
    "sx",
    "system",
    "sc",
    "alias",
    "rehashx",
    "automagic",
)
_SHELL_LINE_MAGICS += tuple(name for name, _ in default_aliases())
_LINE_NAMES = "|".join(sorted(_SHELL_LINE_MAGICS, key=len, reverse=True))
# Magics such as ``%time -n 1`` run the rest of their line as IPython input, escapes included.
_MAGIC_PREFIX = r"(?:%\w+(?:\s+-\w+(?:\s+\d+)?)*\s+)*"
_SHELL = rf"{_MAGIC_PREFIX}(?:!|%(?:{_LINE_NAMES})\b)"
# Anywhere in a cell: after a ``%%time``/``%%capture`` line the next line is a cell magic again.
_SHELL_CELL = re.compile(rf"^\s*%%(?:!|(?:{'|'.join(_SHELL_CELL_MAGICS)})\b)", re.MULTILINE)
_SHELL_ASSIGN = re.compile(rf"^(\s*)([\w.\[\], ]+?)\s*=\s*({_SHELL}.*)$")
_SHELL_LINE = re.compile(rf"^(\s*)({_SHELL}.*)$")
# A bare ``pip install x``: IPython runs it as ``%pip`` while automagic is on (the kernel turns
# automagic off first, but student code can turn it back on).
_SHELL_BARE = re.compile(r"^(\s*)((?:pip|conda|mamba|micromamba)\s+(?!(?:is|not|in|and|or|if|else|for)\b)[a-z].*)$")
# Calls the rewrite cannot see; reported, and contained by the OS under bwrap.
_ESCAPE_CALLS = (
    ("system()", re.compile(r"\bsystem(?:_piped|_raw)?\s*\(")),  # os.system, get_ipython().system
    ("getoutput()", re.compile(r"\bgetoutput\s*\(")),
    ("run_line_magic()", re.compile(r"\brun_line_magic\b")),
    ("run_cell_magic()", re.compile(r"\brun_cell_magic\b")),
    ("magic()", re.compile(r"\.magic\s*\(")),
    ("subprocess", re.compile(r"\bsubprocess\b")),
    ("os.popen/exec/spawn/fork", re.compile(r"\bos\s*\.\s*(?:popen|exec\w*|spawn\w*|posix_spawnp?|fork\w*)\b")),
    ("pty.spawn()", re.compile(r"\bpty\s*\.\s*spawn\b")),
    ("automagic", re.compile(r"\bautomagic\b")),
    ("alias_manager", re.compile(r"\balias_manager\b")),
)
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
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/svg+xml")


@dataclass
class Variable:
    """One variable as the extraction cell described it (``meta``) plus its tensors."""

    name: str
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.meta.get("kind", "missing")

    @property
    def tensor(self) -> torch.Tensor | None:
        return self.tensors.get(self.name)

    @property
    def value(self) -> Any:
        return self.meta.get("value")

    def describe(self) -> str:
        """How a teacher would name what was found, for feedback messages."""
        if self.kind == "missing":
            return "not defined"
        if self.kind == "error":
            return f"not readable ({self.meta.get('error')})"
        if self.kind == "unreadable":  # a variable path's step raised (sdverify.notebooks.paths)
            return f"unreadable ({self.meta.get('error')})"
        if self.kind == "tensor":
            dtype = self.meta["dtype"].replace("torch.", "")
            return f"a {dtype} tensor of shape {self.meta['shape']} on {self.meta['device']}"
        type_name = self.meta.get("type", "?").rsplit(".", 1)[-1]
        if self.kind == "value":
            return f"{type_name} {self.value!r}"
        return f"a {type_name}"


@dataclass
class CellEvent:
    """Something the teacher should know about one cell (error, timeout, shell escape...)."""

    index: int
    kind: str  # "error" | "timeout" | "killed" | "not-run" | "shell" | "capped"
    message: str


@dataclass
class RunResult:
    """What the grader learns from one execution: snapshots per exercise and cell events."""

    snapshots: dict[str, dict[str, Variable]]
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

    def variable(self, exercise: str, name: str) -> Variable:
        return self.snapshots.get(exercise, {}).get(name) or Variable(name, {"kind": "missing"})


@dataclass(frozen=True)
class Snapshot:
    """Extraction point: after the cells of exercise ``id`` (found by ``heading``), read ``names``.

    A v2 spec's snapshot reads variable paths (``walk``), matches markdown heading lines only
    (``headings_only``) and may end its section at the first heading line matching ``ends``.
    """

    id: str
    heading: str
    names: tuple[str, ...]
    ends: str | None = None
    walk: bool = False
    headings_only: bool = False

    def requests(self) -> list[list[Any]]:
        """What the extraction cell reads: each name as ``[text, root, steps]``."""
        return [kernel_request(name, walk=self.walk) for name in self.names]


def neutralise_shell(source: str) -> tuple[str, list[str]]:
    """Replace shell escapes by ``pass``; return the new source and what was removed."""
    if m := _SHELL_CELL.search(source):
        magic = source[m.start() :].strip().splitlines()[0].strip()
        return f"pass  # [sdverify] shell cell removed: {magic}", [magic]
    removed: list[str] = []
    lines = []
    for line in source.splitlines():
        if m := _SHELL_ASSIGN.match(line):
            removed.append(m.group(3).strip())
            line = f"{m.group(1)}{m.group(2)} = []  # [sdverify] shell escape removed"
        elif m := _SHELL_LINE.match(line) or _SHELL_BARE.match(line):
            removed.append(m.group(2).strip())
            line = f"{m.group(1)}pass  # [sdverify] shell escape removed"
        lines.append(line)
    return "\n".join(lines), removed


def escape_calls(source: str) -> list[str]:
    """Shell escapes made as calls (``os.system``, ``subprocess``...): found, never removed."""
    return [label for label, pattern in _ESCAPE_CALLS if pattern.search(source)]


def locate_exercises(cells: list[NotebookNode], snapshots: list[Snapshot]) -> tuple[dict[str, int], list[str]]:
    """Exercise id -> index of the markdown cell that opens it, and the segmentation warnings.

    Only markdown headings count (a code comment mentioning "Exercise 3" is not one), in
    document order: each exercise opens at the first matching heading after the previous
    exercise's, so a repeated heading (a recap) does not move it.  A markdown cell matching
    several exercises is a table of contents, not a heading.  A heading found only out of
    order, or not at all, is graded best-effort and said so.
    """
    patterns = [(snap.id, re.compile(snap.heading, re.IGNORECASE | re.MULTILINE)) for snap in snapshots]
    markdown = [(i, c.source) for i, c in enumerate(cells) if c.cell_type == "markdown"]
    headings = [(i, heading_lines(text)) for i, text in markdown]
    texts = [headings if snap.headings_only else markdown for snap in snapshots]
    matches = [{i for i, text in where if p.search(text)} for (_, p), where in zip(patterns, texts)]
    contents = {i for i, _ in markdown if sum(i in found for found in matches) > 1}
    starts: dict[str, int] = {}
    notes: list[str] = []
    previous = -1
    for (id, pattern), matched in zip(patterns, matches):
        found = sorted(matched - contents)
        after = [i for i in found if i > previous]
        if after:
            starts[id] = previous = after[0]
        elif found:
            starts[id] = found[0]
            notes.append(f"{id}: its heading comes before the previous exercise's; graded from cell {found[0]}")
        else:
            notes.append(f"{id}: no markdown heading matches {pattern.pattern!r}; its variables are read at the end")
    return starts, notes


_HEADING_LINE = re.compile(r"^ {0,3}#.*$", re.MULTILINE)


def heading_lines(markdown: str) -> str:
    """The markdown heading lines (``# ...``) of a cell's text, one per line."""
    return "\n".join(m.group() for m in _HEADING_LINE.finditer(markdown))


def locate_ends(cells: list[NotebookNode], snapshots: list[Snapshot], starts: dict[str, int]) -> dict[str, int]:
    """Exercise id -> index of the markdown cell whose heading line matches its ``ends`` (the first
    after its start; exercises without ``ends``, or whose end is not found, have none)."""
    ends: dict[str, int] = {}
    for snap in snapshots:
        start = starts.get(snap.id)
        if snap.ends is None or start is None:
            continue
        pattern = re.compile(snap.ends, re.IGNORECASE | re.MULTILINE)
        found = [
            i
            for i, c in enumerate(cells)
            if i > start and c.cell_type == "markdown" and pattern.search(heading_lines(c.source))
        ]
        if found:
            ends[snap.id] = found[0]
    return ends


def plan_snapshots(cells: list[NotebookNode], snapshots: list[Snapshot]) -> dict[int, list[Snapshot]]:
    """Cell position -> snapshots to take just before it (``len(cells)`` means at the end).

    An exercise's snapshot goes before its ``ends`` heading or the next exercise heading after
    its own, whichever comes first.  An exercise whose heading is missing is snapshotted at the
    end, so renamed headings cost precision (later cells may overwrite names) but never the
    grade outright.
    """
    starts, _ = locate_exercises(cells, snapshots)
    ends = locate_ends(cells, snapshots, starts)
    plan: dict[int, list[Snapshot]] = {}
    for snap in snapshots:
        start = starts.get(snap.id)
        later = [i for i in [*starts.values(), ends.get(snap.id, -1)] if start is not None and i > start]
        plan.setdefault(min(later) if later else len(cells), []).append(snap)
    return plan


_EXTRACT_CODE = r"""
import importlib
json = importlib.import_module("json")
os = importlib.import_module("os")
sys = importlib.import_module("sys")
torch = importlib.import_module("torch")
save_file = importlib.import_module("safetensors.torch").save_file
B = importlib.import_module("builtins")

def qualname(v):
    c = B.object.__getattribute__(v, "__class__")
    return c.__module__ + "." + c.__qualname__

def keep(key, t, tensors):
    tensors[key] = t.detach().to("cpu").contiguous().clone()

def describe(name, v, tensors):
    meta = {"type": qualname(v)}
    np = sys.modules.get("numpy")
    pil = sys.modules.get("PIL.Image")
    if B.isinstance(v, torch.Tensor):
        keep(name, v, tensors)
        meta.update(kind="tensor", dtype=B.str(v.dtype), device=B.str(v.device), shape=B.list(v.shape))
    elif v is None or B.isinstance(v, (B.bool, B.int, B.float, B.str)):
        meta.update(kind="value", value=v)
    elif B.isinstance(v, (torch.dtype, torch.device)):
        meta.update(kind="value", value=B.str(v))
    elif B.isinstance(v, torch.nn.Module):
        params = B.list(v.parameters())
        meta.update(kind="module", params=B.sum(p.numel() for p in params),
                    dtype=B.str(params[0].dtype) if params else None,
                    device=B.str(params[0].device) if params else None, training=B.bool(v.training))
    elif B.hasattr(v, "timesteps") and B.hasattr(v, "config") and B.callable(B.getattr(v, "step", None)):
        meta.update(kind="scheduler", config=json.loads(json.dumps(B.dict(v.config), default=B.str)))
        if B.isinstance(v.timesteps, torch.Tensor):
            keep(name + ".timesteps", v.timesteps, tensors)
    elif np is not None and B.isinstance(v, np.ndarray):
        keep(name, torch.from_numpy(np.ascontiguousarray(v)), tensors)
        meta.update(kind="tensor", dtype=B.str(tensors[name].dtype), device="numpy", shape=B.list(v.shape))
    elif np is not None and B.isinstance(v, np.generic):
        meta.update(kind="value", value=v.item())
    elif pil is not None and B.isinstance(v, pil.Image):
        keep(name, torch.from_numpy(np.array(v)), tensors)
        meta.update(kind="tensor", dtype="torch.uint8", device="PIL", shape=B.list(tensors[name].shape))
    elif B.hasattr(v, "keys") and B.hasattr(v, "__getitem__"):
        keys = []
        for key in B.list(v.keys()):
            item = v[key]
            if B.isinstance(item, torch.Tensor):
                keep(name + "." + B.str(key), item, tensors)
            keys.append(B.str(key))
        meta.update(kind="mapping", keys=keys)
    else:
        try:
            meta.update(kind="value", value=json.loads(json.dumps(v)))
        except B.Exception:
            meta.update(kind="object", repr=B.repr(v)[:300])
    return meta

manifest, tensors = {}, {}
for name, root, steps in NAMES:
    if root not in NS:
        manifest[name] = {"kind": "missing"}
        continue
    try:
        manifest[name] = describe(name, walk(root, steps), tensors)
    except Unreadable as exc:
        manifest[name] = {"kind": "unreadable", "error": B.str(exc)}
    except B.BaseException as exc:
        manifest[name] = {"kind": "error", "error": qualname(exc) + ": " + B.str(exc)[:300]}
manifest[SEED] = {"kind": "value", "value": torch.initial_seed()}  # the seed the notebook last set
try:
    seeds = [B.int(v.initial_seed()) for v in B.list(NS.values()) if B.type(v) is torch.Generator][:16]
except B.BaseException:
    seeds = []
manifest[GENERATORS] = {"kind": "value", "value": seeds}
try:
    wire = B.list(sys.modules[TRIPWIRE].TRIPWIRE.records)
except B.BaseException:
    wire = None
manifest[USES] = {"kind": "value", "value": wire}
try:
    mapped = sys.modules[DEVICE_MAP].MAPPED
    mapped = {B.str(k): B.sorted(c for c in v if B.isinstance(c, B.int)) for k, v in mapped.items()}
except B.BaseException:
    mapped = None
manifest[MAPPED] = {"kind": "value", "value": mapped}
save_file(tensors, os.path.join(FOLDER, "values.safetensors"))
with B.open(os.path.join(FOLDER, "manifest.json"), "w") as f:
    json.dump(manifest, f, default=B.str)
"""


def _extraction_source(requests: list[list[Any]], folder: Path) -> str:
    # The outer two lines use only `import` and attributes of the fresh builtins module;
    # everything else runs under exec with a clean globals dict.
    return (
        "import builtins as _sdv_b\n"
        f"_sdv_b.exec(_sdv_b.compile({WALK_CODE + _EXTRACT_CODE!r}, '<sdverify-extract>', 'exec'), "
        f"{{'__builtins__': _sdv_b, 'NS': _sdv_b.globals(), 'NAMES': {requests!r}, 'FOLDER': {str(folder)!r}, "
        f"'SEED': {KERNEL_SEED!r}, 'GENERATORS': {KERNEL_GENERATORS!r}, 'USES': {KERNEL_USES!r}, "
        f"'TRIPWIRE': {tripwire.KERNEL_MODULE!r}, 'MAPPED': {KERNEL_MAPPED!r}, "
        f"'DEVICE_MAP': {device_map.KERNEL_MODULE!r}}})\n"
        "del _sdv_b"
    )


def _read_regular(path: Path, limit: int) -> bytes:
    """``path``'s bytes, only if it is a regular file of at most ``limit`` bytes: the kernel can
    write where snapshots land, so a FIFO, a link or a flood is refused before it is read."""
    if path.parent.is_symlink():
        raise ValueError(f"{path.parent.name} is a symbolic link")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"{path.name}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{path.name} is {info.st_size >> 20} MiB, over the {limit >> 20} MiB limit")
        return f.read(limit + 1)[:limit]


def read_snapshot(folder: Path) -> dict[str, Variable]:
    """Load what an extraction cell wrote (JSON manifest + safetensors; never pickle)."""
    manifest = json.loads(_read_regular(folder / "manifest.json", C.GRADE_SNAPSHOT_MANIFEST_BYTES))
    try:
        tensors = load(_read_regular(folder / "values.safetensors", C.GRADE_SNAPSHOT_BYTES))
    except ValueError:
        raise
    except Exception as exc:  # SafetensorError is no ValueError: garbage bytes are the notebook's fault
        raise ValueError(f"values.safetensors is unreadable ({exc})") from None
    out = {}
    for name, meta in manifest.items():
        own = {k: v for k, v in tensors.items() if k == name or k.startswith(name + ".")}
        out[name] = Variable(name, meta, own)
    return out


@lru_cache(maxsize=1)
def _kernel_dir() -> str:
    """Kernelspecs for *this* interpreter, whatever ``python3`` means on this machine."""
    root = Path(tempfile.mkdtemp(prefix="sdverify-kernelspec-"))
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

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.confinement is None:
            return cmd
        # Written (0600) just before this call: the kernel's own uid must be able to read it.
        isolation.hand_over(self.confinement.user, Path(self.connection_file))
        return self.confinement.command(cmd)

    def client(self, **kwargs: Any) -> Any:
        """A client whose sockets refuse any one message over ``GRADE_KERNEL_MESSAGE_BYTES``
        before buffering it: a flood drops the connection, not the grader's memory."""
        context = zmq.asyncio.Context()
        context.setsockopt(zmq.MAXMSGSIZE, C.GRADE_KERNEL_MESSAGE_BYTES)
        return super().client(context=context, **kwargs)


def _sizes(out: NotebookNode) -> tuple[int, int]:
    """(text bytes, image bytes) of one output."""
    if out.get("output_type") == "stream":
        return len(str(out.get("text", "")).encode()), 0
    if out.get("output_type") == "error":
        return sum(len(str(line).encode()) for line in [out.get("evalue", ""), *out.get("traceback", [])]), 0
    text = image = 0
    for mime, value in out.get("data", {}).items():
        size = len(value.encode()) if isinstance(value, str) else len(json.dumps(value).encode())
        if mime in _IMAGE_TYPES:
            image += size
        else:
            text += size
    return text, image


class _Client(NotebookClient):
    """nbclient with our kernelspec, remembering each cell's execute reply (status, ename),
    keeping at most ``GRADE_CELL_TEXT_BYTES`` of text and ``GRADE_CELL_IMAGE_BYTES`` of
    images per cell (a cell printing gigabytes must not fill the grader's memory)."""

    def __init__(self, *args: Any, confinement: Confinement, sockets: Path, **kwargs: Any) -> None:
        super().__init__(*args, on_cell_executed=self._remember, **kwargs)
        self.last_reply: dict[str, Any] = {}
        self.confinement = confinement
        self.sockets = sockets
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
        used = self.used.setdefault(cell_index, [0, 0])
        text, image = _sizes(out)
        if image and used[1] + image > C.GRADE_CELL_IMAGE_BYTES:
            for mime in _IMAGE_TYPES:
                out.get("data", {}).pop(mime, None)
            self.capped.add(cell_index)
            image = 0
        if used[0] + text > C.GRADE_CELL_TEXT_BYTES:
            self.capped.add(cell_index)
            room = max(0, C.GRADE_CELL_TEXT_BYTES - used[0])
            if out.get("output_type") == "stream" and room:
                out.text = out.text.encode()[:room].decode(errors="ignore") + "\n[sdverify] output cut\n"
                text = room
            else:
                outs.pop()
                return None
        if out.get("output_type") in ("display_data", "execute_result") and not out.get("data"):
            outs.pop()
            return None
        used[0] += text
        used[1] += image
        return out

    def create_kernel_manager(self) -> AsyncKernelManager:
        confined = self.confinement.level == "bwrap"
        # The connection file lives in the socket folder, which the kernel's uid can read.
        ipc: dict[str, Any] = {"connection_file": str(self.sockets / "k.json")}
        if confined:
            ipc |= {"transport": "ipc", "ip": str(self.sockets / "k")}
        km = _ConfinedKernelManager(
            kernel_name=_KERNEL_CONFINED if confined else _KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[_kernel_dir()]),
            config=self.config,
            **ipc,
        )
        km.confinement = self.confinement
        self.km = km
        return km


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

    taken: dict[str, dict[str, Variable]] = {}
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
    with tempfile.TemporaryDirectory(prefix="sdverify-nb-") as tmp:
        # work: the kernel's cwd and HOME; extract: where extraction cells write; sockets: ipc.
        work, extract, sockets = Path(tmp) / "work", Path(tmp) / "extract", Path(tmp) / "sockets"
        for folder in (work, extract, sockets):
            folder.mkdir()
        shutil.copy2(path, work / Path(path).name)
        for name, source in (files or {}).items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
        confinement = Confinement(
            level,
            work,
            sandbox_env(work, env),
            writable=(extract, sockets),
            readable=readable,
            hidden=hidden,
            quota=C.SANDBOX_WORK_BYTES,
            user=isolation.sandbox_user(level, readable),
        )
        isolation.hand_over(confinement.user, work, extract, sockets)
        for _attempt in range(MAX_RESTARTS + 1):
            client = _Client(
                nb,
                confinement=confinement,
                sockets=sockets,
                allow_errors=True,
                interrupt_on_timeout=True,
                error_on_timeout={"ename": _TIMEOUT_ENAME, "evalue": "", "traceback": []},
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
                            _take_snapshot(client, step, extract, taken, errors, confinement.user)
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
        events[(index, "capped")] = CellEvent(
            index,
            "capped",
            f"outputs cut: the grader keeps {C.GRADE_CELL_TEXT_BYTES >> 20} MiB of text and "
            f"{C.GRADE_CELL_IMAGE_BYTES >> 20} MiB of images per cell",
        )
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


def _by_cell(latest: Variable | None, nb: NotebookNode) -> list[dict[str, Any]] | None:
    """The tripwire's records, each given the index of the cell whose execution count it carries."""
    value = latest.value if latest is not None else None
    if not isinstance(value, list):
        return None
    cells = _cells(nb)
    return [{**r, "cell": cells.get(r.get("where"))} for r in value if isinstance(r, dict)]


def _mapped_cells(latest: Variable | None, nb: NotebookNode) -> dict[str, list[int]]:
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


def cap_notebook(nb: NotebookNode, limit: int = C.GRADE_NOTEBOOK_BYTES) -> list[int]:
    """Clear the outputs of the largest cells until ``nb`` serialises within ``limit`` bytes;
    return the cleared cells' indices (the executed copy is for reading, not for storage)."""
    cleared: list[int] = []
    sizes = sorted(
        ((len(json.dumps(c.get("outputs", []))), i) for i, c in enumerate(nb.cells) if c.get("outputs")),
        reverse=True,
    )
    for _size, index in sizes:
        if len(nbformat.writes(nb).encode()) <= limit:
            break
        nb.cells[index].outputs = []
        cleared.append(index)
    return sorted(cleared)


def _run_cell(client: _Client, nb: NotebookNode, index: int, timeout: float, events: dict) -> None:
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
    if status.get("ename") == _TIMEOUT_ENAME:
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


def _probe(client: _Client) -> bool:
    """Is the kernel responsive again after an interrupt?"""
    try:
        reply = client.run(nbformat.v4.new_code_cell("pass"), None, PROBE_TIMEOUT_S)
    except DeadKernelError:
        return False
    return reply.get("ename") != _TIMEOUT_ENAME


def _take_snapshot(client: _Client, step: _Step, tmp: Path, taken: dict, errors: dict, user: int | None) -> None:
    snap = step.snapshot
    assert snap is not None
    folder = Path(tempfile.mkdtemp(prefix=f"{snap.id}-", dir=tmp))
    isolation.hand_over(user, folder)
    cell = nbformat.v4.new_code_cell(_extraction_source(snap.requests(), folder))
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
