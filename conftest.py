"""Repository-wide pytest configuration: the slow tier and Hypothesis profiles.

``pytest --sdverify-impl=student.py`` runs only the contract's items and the tests that
use the ``sd_impl`` fixture, against the student's module.

Tiers: ``pytest -m "not gpu"`` is the laptop tier (about a minute on 2 cores); tests
marked ``slow`` (the whole submission catalog, every sample notebook, every hostile case,
real-depth components) run only with ``--runslow`` — pytest's documented pattern for
opt-in tests — and always in ``.ci/run``.

Hypothesis profiles, chosen with ``SDVERIFY_HYPOTHESIS_PROFILE`` (or Hypothesis' own
``--hypothesis-profile``): ``ci`` (the default: derandomised, the same examples on every run,
so the README's command is green or red alike for everyone), ``dev`` (the same budget with
fresh random draws: exploration, which ``.ci/run`` runs once too), ``thorough`` (many random
examples, for a night run).  A failure found by exploring is fixed and kept as an ``@example``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev",
    max_examples=20,
    deadline=None,  # model calls vary in time with machine load
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True, print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=500)
settings.load_profile(os.environ.get("SDVERIFY_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["process", pytest.param("bwrap", marks=pytest.mark.slow)])
def sandbox_level(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each isolation level in turn, as ``$SDVERIFY_SANDBOX`` (bwrap: the slow tier, and skipped
    with the reason where it cannot run): a grade must not depend on the level."""
    from sdverify import isolation

    problem = isolation.bwrap_problem() if request.param == "bwrap" else None
    if problem:
        pytest.skip(problem)
    monkeypatch.setenv("SDVERIFY_SANDBOX", request.param)
    return str(request.param)


@pytest.fixture
def process_level(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run student code at the process level: tests of the checker's logic, not of its isolation
    (that is tests/test_checker_isolation.py); a bwrap start per submission would triple their cost."""
    monkeypatch.setenv("SDVERIFY_SANDBOX", "process")


def pytest_configure(config: pytest.Config) -> None:
    # The plugin shares the cores among xdist workers only in sdverify's own sessions; the kit's
    # self-tests are one too (torch in every worker).
    from sdverify.gpu.session import share_cpu_threads

    share_cpu_threads()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run the tests marked slow")


@pytest.hookimpl(trylast=True)  # after syrupy records the whole collection: deselected snapshots stay "not run"
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("sdverify_impl"):
        # Checking a student's module here: the contract items and the tests that run the
        # implementation under test (the sd_impl fixture), not the kit's self-tests.
        keep = [i for i in items if i.get_closest_marker("sdverify") or "sd_impl" in getattr(i, "fixturenames", ())]
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow tier: run with --runslow (.ci/run always does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
