"""Repository-wide pytest configuration: Hypothesis profiles.

Choose one with ``SDVERIFY_HYPOTHESIS_PROFILE`` (or Hypothesis' own
``--hypothesis-profile``): ``dev`` (default, fast), ``ci`` (derandomised: the same
examples on every run), ``thorough`` (many examples, for a night run).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,  # model calls vary in time with machine load
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=500)
settings.load_profile(os.environ.get("SDVERIFY_HYPOTHESIS_PROFILE", "dev"))
