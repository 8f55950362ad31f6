"""Reusable property checks: each returns :class:`~sdverify.results.CheckResult` objects.

The pytest suite, the student checker and the notebook grader call the same functions
on the reference or on any implementation handed in; a check never raises because the
implementation misbehaves, it reports what was expected and what was seen.
"""
