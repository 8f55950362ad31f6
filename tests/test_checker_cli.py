"""``sdverify check``: exit codes, the printed report, the JSON and JUnit files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sdverify.cli import main
from sdverify.mistakes import MISTAKES

# The checker's reference expectations are built once per process: keep these on one worker.
pytestmark = pytest.mark.usefixtures("process_level")

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"


def test_no_argument_checks_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["check", "--json", str(out_json), "--junit", str(out_xml)]) == 0
    assert "PASSED" in capsys.readouterr().out
    report = json.loads(out_json.read_text())
    assert report["schema"] == 2 and report["submission"] == "sdverify.reference" and report["passed"] is True
    assert report["score"] == report["max_score"] == 100
    for entry in report["checks"]:
        assert {"id", "group", "function", "passed", "role", "points", "max_points", "message"} <= set(entry)
        assert entry["function"] == entry["group"]  # kept for readers of schema 1
        assert entry["max_points"] > 0 if entry["role"] == "points" else entry["max_points"] == 0
    suite = ET.parse(out_xml).getroot()
    assert suite.get("failures") == "0" and len(suite.findall("testcase")) == len(report["checks"])


def test_wrong_submission_exits_1_naming_the_mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_json = tmp_path / "r.json"
    assert main(["check", str(CATALOG / "wrong_decode_no_scaling.py"), "--json", str(out_json)]) == 1
    text = capsys.readouterr().out
    assert "[FAIL] decode_latents.reference[noise]  0/9" in text and "not divided by the VAE scaling factor" in text
    failed = [c for c in json.loads(out_json.read_text())["checks"] if not c["passed"]]
    assert any(c["mistake"] == "scaling_factor_not_divided" for c in failed)
    assert {c["mistake"] for c in failed if c["mistake"]} <= set(MISTAKES)  # one catalog


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "no/such/file.py"],
        ["check", "no_such_module_xyz"],
        ["check", "--timeout", "0"],
        ["check", "--allow", "not a name"],
    ],
    ids=["missing-file", "missing-module", "bad-timeout", "bad-allow"],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]):
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_several_targets_in_one_call_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    wrong, correct = CATALOG / "wrong_pil_bgr.py", CATALOG / "correct_helper_class.py"
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    assert main(["check", str(wrong), str(correct), "--json", str(out_json), "--junit", str(out_xml)]) == 1
    text = capsys.readouterr().out
    assert "1/2 submission(s) passed every check" in text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith(str(CATALOG))}
    assert rows[str(correct)] == "100/100" and rows[str(wrong)] == "0/100"  # it implements only to_pil, wrongly
    reports = json.loads(out_json.read_text())["submissions"]
    assert [r["submission"] for r in reports] == [str(wrong), str(correct)]
    assert [r["passed"] for r in reports] == [False, True]
    suites = ET.parse(out_xml).getroot()
    assert suites.tag == "testsuites" and len(suites.findall("testsuite")) == 2


def test_an_unusable_target_among_several_checks_nothing(capsys: pytest.CaptureFixture[str]):
    assert main(["check", str(CATALOG / "correct_helper_class.py"), "no/such/file.py"]) == 2
    captured = capsys.readouterr()
    assert "no/such/file.py" in captured.err and "sdverify check:" not in captured.out
