"""Snapshots of a notebook's variables: the cell that takes one, and how the grader reads it.

The extraction cell runs :mod:`.kernel_program` (and the describer it calls) from this
package's files, in a fresh namespace of the kernel; it writes a JSON manifest and a
safetensors file into a folder made for that snapshot, which the grader reads with bounds.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdverify import contract as C
from sdverify.delegation import tripwire
from sdverify.notebooks import device_map
from sdverify.untrusted import describer
from sdverify.untrusted.value import UntrustedValue, load_tensors, read_bounded

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
_KEYS = {
    "seed": KERNEL_SEED,
    "generators": KERNEL_GENERATORS,
    "uses": KERNEL_USES,
    "tripwire": tripwire.KERNEL_MODULE,
    "mapped": KERNEL_MAPPED,
    "device_map": device_map.KERNEL_MODULE,
}
# Runs under exec in a clean globals dict: the describer's text, the program's, then the call.
_RUN = (
    "exec(compile(DESCRIBER, '<sdverify-describer>', 'exec'), globals())\n"
    "exec(compile(PROGRAM, '<sdverify-extract>', 'exec'), globals())\n"
    "extract(NS, NAMES, FOLDER, KEYS)\n"
)


@lru_cache(maxsize=1)
def _program() -> tuple[str, str]:
    """The texts the kernel runs: the describer's and the extraction program's."""
    here = Path(__file__).resolve().parent
    return Path(describer.__file__).read_text(), (here / "kernel_program.py").read_text()


def extraction_source(requests: list[list[Any]], folder: Path) -> str:
    """The cell that snapshots ``requests`` (:meth:`.segmentation.Snapshot.requests`: each a name
    or variable path, its root and its steps) and the kernel's seeds and records into ``folder``.

    Its two outer lines use only ``import`` and attributes of the builtins module; everything
    else runs under exec with a clean globals dict.
    """
    describer_text, program_text = _program()
    namespace = (
        f"{{'__builtins__': _sdv_b, 'NS': _sdv_b.globals(), 'NAMES': {requests!r}, "
        f"'FOLDER': {str(folder)!r}, 'KEYS': {_KEYS!r}, 'DESCRIBER': {describer_text!r}, 'PROGRAM': {program_text!r}}}"
    )
    return (
        "import builtins as _sdv_b\n"
        f"_sdv_b.exec(_sdv_b.compile({_RUN!r}, '<sdverify-extract>', 'exec'), {namespace})\n"
        "del _sdv_b"
    )


def read_snapshot(folder: Path) -> dict[str, UntrustedValue]:
    """Load what an extraction cell wrote (JSON manifest + safetensors; never pickle)."""
    manifest = json.loads(read_bounded(folder / "manifest.json", C.GRADE_SNAPSHOT_MANIFEST_BYTES))
    if not isinstance(manifest, dict):
        raise ValueError("manifest.json is not an object")
    tensors = load_tensors(read_bounded(folder / "values.safetensors", C.GRADE_SNAPSHOT_BYTES), "values.safetensors")
    out = {}
    for name, desc in manifest.items():
        own = {k: v for k, v in tensors.items() if k == name or k.startswith(name + ".")}
        out[name] = UntrustedValue(
            name, desc if isinstance(desc, dict) else {"kind": "error", "error": "not an object"}, own
        )
    return out
