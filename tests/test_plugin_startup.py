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


# Each test writes what its worker saw; the workers inherit a GPU host's CUDA_VISIBLE_DEVICES.
_REPORT_ENV = """
import os, pathlib

def test_{name}(worker_id):
    seen = os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS")
    pathlib.Path(f"seen-{name}-{{worker_id}}.txt").write_text(repr(seen))
"""


def _seen_by_workers(pytester: pytest.Pytester, *args: str) -> set[tuple[str | None, str | None]]:
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", *args)
    assert result.ret == 0, result.stdout.str()
    return {eval(p.read_text()) for p in pytester.path.glob("seen-*.txt")}


@pytest.mark.slow  # an xdist session in a subprocess; the laptop tier keeps the plain unrelated project
def test_an_unrelated_xdist_session_on_a_gpu_host_is_left_alone(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
):
    """Two GPUs visible, four tests on two workers: nothing pins a worker or its threads."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makepyfile(**{f"test_{n}": _REPORT_ENV.format(name=n) for n in "abcd"})
    assert _seen_by_workers(pytester) == {("0,1", None)}


@pytest.mark.slow  # torch in every worker: a gpu test makes the session sdverify's
@pytest.mark.parametrize("how", ["gpu mark", "option"])
def test_an_sdverify_xdist_session_pins_one_gpu_per_worker(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, how: str
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    files = {f"test_{n}": _REPORT_ENV.format(name=n) for n in "abcd"}
    args: tuple[str, ...] = ("--sdverify-preset", "tiny") if how == "option" else ()
    if how == "gpu mark":
        files["test_gpu"] = "import pytest\n\n@pytest.mark.gpu\ndef test_on_gpu():\n    pass\n"
    pytester.makepyfile(**files)
    seen = _seen_by_workers(pytester, *args)
    assert {gpu for gpu, _ in seen} <= {"0", "1"} and len(seen) >= 1
    assert all(threads is not None for _, threads in seen)
