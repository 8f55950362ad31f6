"""Delegating: reads the kit's reference from the sandbox and runs a copy of it under the kit's own
file name (``exec(compile(src, path, "exec"))``): every API function is the reference's.

It scored 100/100 (issue 21).  At the process level the tripwire records the compiled text as a
copy of sdverify.reference; under bwrap the sandbox's reference.py is empty.
"""
import sys
from pathlib import Path

path = Path(sys.modules["sdverify"].__file__).parent / "reference.py"  # the kit, loaded in the sandbox
src = path.read_text()
exec(compile(src, str(path), "exec"))
