"""``--sdverify-impl``: the contract as pytest items, and the ``sd_impl`` fixture, in any folder.

Runs in-process (pytester), on the worker that holds the checker's reference expectations,
so each run costs only the sandboxed run of its submission.  The checker's modules are
imported here, at collection: pytester drops the modules a test imported when it ends, and
the sandbox's forkserver needs the very module it was started from.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from sdverify import reference
from sdverify.checker import check_submission, checks, parent  # noqa: F401 - see the docstring
from sdverify.grading.model import failure_text

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("process_level")
CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"

TEST_FILE = """
import torch

def test_cfg(sd_impl):
    u, c = torch.zeros(1, 4, 64, 64), torch.ones(1, 4, 64, 64)
    assert torch.equal(sd_impl.cfg_combine(u, c, 2.0), torch.full((1, 4, 64, 64), 2.0))

def test_decode_is_there(sd_impl):
    assert callable(sd_impl.decode_latents)
"""


def _junit_cases(path: Path) -> dict[str, ET.Element]:
    return {f"{c.get('classname')}.{c.get('name')}": c for c in ET.parse(path).getroot().iter("testcase")}


def test_without_the_option_only_the_folders_tests_run_against_the_reference(pytester: pytest.Pytester):
    pytester.makepyfile(TEST_FILE)
    pytester.runpytest_inprocess("-p", "no:randomly").assert_outcomes(passed=2)


@pytest.mark.slow  # .ci/run's last step runs it too, from a folder outside the checkout
def test_reference_copied_out_passes_every_contract_item_once_the_kit_is_allowed(pytester: pytest.Pytester):
    # The copy still imports the kit's helpers (sdverify.tokenizer, sdverify.stage_recorder):
    # delegation under the default policy, full marks once the instructor allows the kit.
    shutil.copy(reference.__file__, pytester.path / "student.py")
    strict = check_submission(str(pytester.path / "student.py"))
    own = {c.group: c for c in strict.checks if c.id.endswith(".own_work")}
    assert not own["tokenize"].passed and "sdverify.tokenizer" in own["tokenize"].message
    assert own["cfg_combine"].passed  # it uses nothing of the kit
    expected = check_submission(str(pytester.path / "student.py"), allow=("sdverify",))
    assert expected.passed
    result = pytester.runpytest_inprocess(
        "--sdverify-impl=student.py", "--sdverify-allow=sdverify", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=len(expected.checks))
    result.stdout.fnmatch_lines([f"sdverify: {expected.max_score:g}/{expected.max_score:g} points"])


def test_a_mistake_fails_exactly_the_checks_sdverify_check_fails(pytester: pytest.Pytester):
    student = pytester.path / "student.py"
    shutil.copy(CATALOG / "wrong_denoise_chunk_order.py", student)
    pytester.makepyfile(TEST_FILE)  # the folder's own tests run too, on the student's module: it lacks both
    junit = pytester.path / "junit.xml"
    report = check_submission(str(student), probe_seed=7)  # the same drawn cases in both runs
    result = pytester.runpytest_inprocess(
        "--sdverify-impl=student.py", "--sdverify-probe-seed=7", f"--junitxml={junit}", "-p", "no:randomly"
    )
    failed = {c.id: c for c in report.failed()}
    assert failed, "the catalog mistake must fail some check"
    result.assert_outcomes(passed=len(report.checks) - len(failed), failed=len(failed) + 2)
    cases = _junit_cases(junit)
    for entry in report.checks:
        case = cases[f"sdverify.{entry.group}.{entry.id.removeprefix(entry.group + '.')}"]
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert properties.pop("role") == entry.role
        assert {k: float(v) for k, v in properties.items()} == {"points": entry.points, "max_points": entry.max_points}
        failure = case.find("failure")
        if entry.passed:
            assert failure is None, entry.id
        else:  # the checker's own words, no sdverify traceback
            assert failure is not None and failure.text == failure_text(entry.clause, entry.message)
            assert "Traceback" not in failure.text and "sdverify/" not in failure.text
    result.stdout.fnmatch_lines([f"sdverify: {report.score:g}/{report.max_score:g} points"])


def test_missing_functions_fail_as_not_implemented_and_markers_select(pytester: pytest.Pytester):
    (pytester.path / "student.py").write_text("def cfg_combine(u, c, w):\n    return u + w * (c - u)\n")
    report = check_submission(str(pytester.path / "student.py"))
    result = pytester.runpytest_inprocess(
        "--sdverify-impl=student.py", "-m", "sdverify and not generate", "-k", "tokenize or cfg_combine"
    )
    count = {f: sum(c.group == f for c in report.checks) for f in ("tokenize", "cfg_combine")}
    unselected = len(report.checks) - sum(count.values())
    result.assert_outcomes(passed=count["cfg_combine"], failed=count["tokenize"], deselected=unselected)
    result.stdout.fnmatch_lines(["*sdverify::tokenize::tokens.vocab*", "not implemented: *defines no tokenize()"])


def test_an_unusable_target_is_a_usage_error(pytester: pytest.Pytester):
    result = pytester.runpytest_inprocess("--sdverify-impl=no_such_file.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sdverify-impl: *no_such_file.py*"])


@pytest.mark.slow
def test_inside_this_repository_only_the_contract_and_the_sd_impl_tests_run():
    root = Path(__file__).resolve().parents[1]
    student = CATALOG / "correct_helper_class.py"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", f"--sdverify-impl={student}", "--collect-only", "-q", "-p", "no:randomly"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    contract = [i for i in ids if i.startswith("sdverify::")]
    assert len(contract) == len(check_submission(str(student)).checks)
    others = {i.split("::")[0] for i in ids if not i.startswith("sdverify::")}
    assert others == {"tests/test_reference.py"}, others  # the kit's self-tests that use sd_impl


def test_the_options_reach_the_checker_as_one_settings_object(pytester: pytest.Pytester, monkeypatch):
    from sdverify import checker
    from sdverify.grading.model import SubmissionGrade
    from sdverify.settings import CHECK, Settings

    seen: list[Settings] = []

    def fake(target, settings):
        seen.append(settings)
        return SubmissionGrade(str(target), str(target), "module", [])

    monkeypatch.setattr(checker, "check_submission", fake)
    (pytester.path / "student.py").write_text("")
    options = ["--sdverify-seed", "3", "--sdverify-probe-seed", "9", "--sdverify-sandbox", "process"]
    pytester.runpytest_inprocess("-p", "no:randomly", "--sdverify-impl=student.py", *options)
    assert seen == [replace(CHECK, seed=3, probe_seed=9, sandbox="process")]
