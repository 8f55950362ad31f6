"""``--sdverify-impl``: the contract tests' ``sd_impl`` fixture loads a student module."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"

TEST_FILE = """
import torch

def test_cfg(sd_impl):
    u, c = torch.zeros(1, 4, 64, 64), torch.ones(1, 4, 64, 64)
    assert torch.equal(sd_impl.cfg_combine(u, c, 2.0), torch.full((1, 4, 64, 64), 2.0))

def test_decode_is_there(sd_impl):
    assert callable(sd_impl.decode_latents)
"""


def test_default_is_the_reference(pytester: pytest.Pytester):
    pytester.makepyfile(TEST_FILE)
    pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=2)


def test_student_module_replaces_the_reference(pytester: pytest.Pytester):
    pytester.makepyfile(TEST_FILE)
    result = pytester.runpytest_inprocess(f"--sdverify-impl={CATALOG / 'wrong_cfg_swapped.py'}")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*not implemented: *wrong_cfg_swapped.py defines no decode_latents()*"])
