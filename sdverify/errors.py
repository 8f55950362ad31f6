"""The one error type that means "the user asked for something unusable".

A bad argument, a target or spec or roster that cannot be used, shard outputs that do not
fit together: the CLI prints it as ``error: ...`` and exits 2 (pytest: a usage error).  Any
other exception out of the library is a fault of the grader and surfaces as such; what a
submission does wrong is graded, never raised.  A subclass of ValueError, so callers that
caught ValueError still catch it.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input from the user, with a message naming what was wrong and what was expected."""
