"""The grading kernel's entry point: ipykernel under an address-space limit and the sandbox's
limits on file size, process count and CPU time (:func:`sdverify.isolation.limit_resources`).

A notebook that allocates without bound then gets MemoryError in its own cell, graded as
that cell's failure, instead of taking the machine's memory from the grader and the other
workers.  The limit arrives as ``$SDVERIFY_KERNEL_MEMORY_MB`` (removed before the notebook
runs); 0 or unset means none.
"""

from __future__ import annotations

import os
import runpy

from sdverify.hub import explain_not_served_here
from sdverify.isolation import limit_address_space, limit_resources

MEMORY_VARIABLE = "SDVERIFY_KERNEL_MEMORY_MB"


def main() -> None:
    limit_resources()
    extra_mb = int(os.environ.pop(MEMORY_VARIABLE, "0") or 0)
    if extra_mb > 0:
        limit_address_space(extra_mb)
    explain_not_served_here()  # from_pretrained(<id not served>) then says which ids are
    runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
