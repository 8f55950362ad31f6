"""The one error type that means "the user asked for something unusable", and the one warning type.

A bad argument, a target or spec or roster that cannot be used, shard outputs that do not
fit together: the CLI prints it as ``error: ...`` and exits 2 (pytest: a usage error).  Any
other exception out of the library is a fault of the grader and surfaces as such; what a
submission does wrong is graded, never raised.  A subclass of ValueError, so callers that
caught ValueError still catch it.

The library prints nothing: what the user should know but that stops nothing (student code runs
at the process level, or as root's uid) is a :class:`SdverifyWarning`, which the CLI prints as
its message alone and pytest lists in its warnings summary.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user, with a message naming what was wrong and what was expected."""


class SdverifyWarning(UserWarning):
    """Something the user should know about how grading runs; its message is complete, for a terminal."""
