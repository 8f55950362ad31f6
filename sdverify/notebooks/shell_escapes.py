"""Shell escapes in a notebook's code cells: rewritten to ``pass`` where IPython would run them,
reported where they are calls the rewrite cannot see.

``!pip ...``, ``%pip``, ``%%bash`` and bare ``pip install`` are replaced by ``pass`` (an
assignment ``files = !ls`` keeps its name, bound to ``[]``) and reported; ``os.system``,
``subprocess`` and friends are only reported: bwrap contains them, process mode does not.
"""

from __future__ import annotations

import re

from IPython.core.alias import default_aliases

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
