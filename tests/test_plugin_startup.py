"""The plugin and the command line start without torch, diffusers or transformers.

pytest loads the installed plugin in every run of the environment, so its import cost is
paid by projects that have nothing to do with sdverify.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]
HEAVY = ("torch", "diffusers", "transformers")


def _imports_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_loading_the_plugin_imports_nothing_heavy():
    assert _imports_after("import sdverify.plugin") == set()


def test_building_the_command_line_imports_nothing_heavy():
    assert _imports_after("from sdverify.cli import build_parser\nbuild_parser()") == set()


def test_an_unrelated_project_never_imports_torch(pytester: pytest.Pytester):
    pytester.makepyfile(
        f"""
        import sys

        def test_unrelated():
            assert not [m for m in {HEAVY!r} if m in sys.modules]
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["sdverify: impl=sdverify.reference preset=tiny weights=offline zoo seed 0 *"])
