"""One settings object for every front end: its validation, the CLI's timeouts (new names and
deprecated spellings), and the weight seed reaching a ``.py``'s expected values."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sdverify import cli
from sdverify import contract as C
from sdverify.grading.model import SubmissionGrade
from sdverify.settings import CHECK, GRADE, Settings


class Sentinel(Exception):
    """Raised by a fake to stop a run once it has seen its settings."""


def test_the_defaults_are_the_contracts():
    assert (CHECK.call_timeout, CHECK.timeout) == (C.CHECK_TIMEOUT_S, None)
    assert (GRADE.call_timeout, GRADE.timeout) == (C.GRADE_CELL_TIMEOUT_S, C.GRADE_NOTEBOOK_TIMEOUT_S)
    assert Settings() == GRADE


@pytest.mark.parametrize("field", ["call_timeout", "timeout"])
def test_a_timeout_must_be_positive_and_the_error_names_it(field):
    with pytest.raises(ValueError, match=rf"{field} must be > 0 seconds .* got -1"):
        Settings(**{field: -1})


def test_check_submission_names_an_unknown_setting():
    from sdverify.checker import check_submission

    with pytest.raises(ValueError, match=r"unknown settings \['total_timeout'\]; expected fields .*'call_timeout'"):
        check_submission(None, total_timeout=3)


def _checked_settings(monkeypatch, argv: list[str]) -> list[Settings]:
    from sdverify import checker

    seen: list[Settings] = []

    def fake(target, settings):
        seen.append(settings)
        return SubmissionGrade("fake", "fake", "module", [])

    monkeypatch.setattr(checker, "check_submission", fake)
    assert cli.main(["check", *argv]) == 0
    return seen


def test_check_names_its_timeouts_for_what_they_bound(monkeypatch, capsys):
    [settings] = _checked_settings(monkeypatch, ["--call-timeout", "7", "--timeout", "40", "--seed", "3"])
    assert (settings.call_timeout, settings.timeout, settings.seed) == (7, 40, 3)
    assert "warning" not in capsys.readouterr().err
    [default] = _checked_settings(monkeypatch, ["--probe-seed", "5"])
    assert default == replace(CHECK, probe_seed=5)


def test_checks_old_per_call_timeout_still_bounds_each_call_with_a_deprecation_warning(monkeypatch, capsys):
    [settings] = _checked_settings(monkeypatch, ["--timeout", "40"])
    assert (settings.call_timeout, settings.timeout) == (40, 40)
    err = capsys.readouterr().err
    assert "warning" in err and "deprecated" in err and "--call-timeout" in err


def _graded_settings(monkeypatch, tmp_path: Path, options: list[str]) -> Settings:
    from sdverify.notebooks import batch

    def fake(paths, out, *, settings, **_):
        raise Sentinel(settings)

    monkeypatch.setattr(batch, "grade_batch", fake)
    with pytest.raises(Sentinel) as caught:
        cli.main(["grade", str(tmp_path), "--out", str(tmp_path / "out"), "--sandbox", "process", *options])
    return caught.value.args[0]


def test_grade_takes_call_timeout_and_its_old_spelling_with_a_warning(monkeypatch, tmp_path, capsys):
    new = _graded_settings(monkeypatch, tmp_path, ["--call-timeout", "12", "--timeout", "60", "--seed", "2"])
    assert (new.call_timeout, new.timeout, new.seed) == (12, 60, 2)
    assert "warning" not in capsys.readouterr().err
    old = _graded_settings(monkeypatch, tmp_path, ["--cell-timeout", "12", "--timeout", "60", "--seed", "2"])
    assert old == replace(new, probe_seed=old.probe_seed)
    err = capsys.readouterr().err
    assert "--cell-timeout is deprecated" in err and "use --call-timeout" in err


def test_a_call_never_outlasts_the_submission(monkeypatch, tmp_path):
    graded = _graded_settings(monkeypatch, tmp_path, ["--call-timeout", "500", "--timeout", "60"])
    [checked] = _checked_settings(monkeypatch, ["--call-timeout", "500", "--timeout", "60"])
    assert (graded.call_timeout, graded.timeout) == (checked.call_timeout, checked.timeout) == (60, 60)


def test_check_submission_builds_the_expected_values_with_the_weight_seed(monkeypatch):
    from sdverify.checker import check_submission, checks

    def fake_context(*args):
        raise Sentinel(args)

    monkeypatch.setattr(checks, "context", fake_context)
    with pytest.raises(Sentinel) as caught:
        check_submission(None, seed=5, sandbox="process")
    assert caught.value.args[0] == ("tiny", 5, "cpu", None)


@pytest.mark.slow
def test_the_reference_passes_at_another_seed_against_that_seeds_expectations():
    from sdverify import zoo
    from sdverify.checker import check_submission, checks

    report = check_submission(None, seed=3, sandbox="process")
    assert report.passed and report.score == report.max_score == 100, report.checks
    at_3, at_0 = checks.context("tiny", 3, "cpu", None), checks.context("tiny", 0, "cpu", None)
    assert at_3.weights == zoo.weights_dir("tiny", 3)
    probe = next(p for p in at_3.plan.probes if p.function == "encode_prompt")
    assert not at_3.expected[probe.id][0].equal(at_0.expected[probe.id][0])  # other weights, other values
