"""The delegation policy: a submission must implement a stage, not hand it to the kit's
reference (``sdverify.*``) or to a ready-made pipeline (``StableDiffusionPipeline``...).

What is forbidden is data (:class:`Policy`: ``forbid`` / ``allow`` per API function for
``sdverify check``, per exercise in a notebook spec).  Uses are found two ways, each best
effort: statically, by reading the source (:mod:`.static`), and at run time, by tripwires in
the sandboxed process (:mod:`.tripwire`).  The grader judges both against the policy.
"""

from __future__ import annotations

from sdverify.delegation.policy import (
    CHECK_POLICY,
    DEFAULT_ALLOW,
    DEFAULT_FORBID,
    Policy,
    Use,
    Watch,
    own_work,
    validate_names,
    watch_lists,
)

__all__ = [
    "CHECK_POLICY",
    "DEFAULT_ALLOW",
    "DEFAULT_FORBID",
    "Policy",
    "Use",
    "Watch",
    "own_work",
    "validate_names",
    "watch_lists",
]
