"""Delegating: loads a fresh copy of the kit's reference with importlib.util.spec_from_file_location
under another module name and hands in its functions.

It scored 19/19 cases (issue 21).  The tripwire records the load of a kit file and names the
functions by the kit file their code is in; under bwrap the sandbox's reference.py is empty.
"""
import importlib.util
import sys
from pathlib import Path

path = Path(sys.modules["sdverify"].__file__).parent / "reference.py"  # the kit, loaded in the sandbox
spec = importlib.util.spec_from_file_location("fresh_copy", path)
fresh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fresh)
tokenize, encode_prompt, cfg_combine = fresh.tokenize, fresh.encode_prompt, fresh.cfg_combine
