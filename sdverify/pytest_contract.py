"""The contract as pytest items: ``pytest --sdverify-impl=student.py`` in any folder.

The items are the checks of ``sdverify check``, made from the very report it writes (one
sandboxed run per session), so pytest and the command line can never disagree.  Under
pytest-xdist the first worker to collect runs the checker and the others read its report
from the run's temporary folder, which all workers share.  A failing item's report is the checker's message;
points travel as ``user_properties`` (so ``--junitxml`` carries them) and are summed in
the terminal summary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sdverify.settings import Settings

MARKER = "sdverify"
_POINTS, _MAX_POINTS, _ROLE = "points", "max_points", "role"


class ContractFailure(Exception):
    """A failed contract check; its text is the whole report, no traceback."""


class Contract(pytest.Collector):
    """``sdverify``: the contract, grouped by API function."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:  # built by ``contract_items``
        return []


class FunctionChecks(pytest.Collector):
    """The checks of one API function (``sdverify::cfg_combine``)."""

    def collect(self) -> list[pytest.Item | pytest.Collector]:  # built by ``contract_items``
        return []


class ContractItem(pytest.Item):
    """One check of the report: passes or fails with the checker's own verdict."""

    def __init__(self, *, entry: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.add_marker(MARKER)
        self.add_marker(entry["group"])

    def runtest(self) -> None:
        self.user_properties.append((_POINTS, self.entry["points"]))
        self.user_properties.append((_MAX_POINTS, self.entry["max_points"]))
        self.user_properties.append((_ROLE, self.entry.get("role", "points")))  # gates and diagnostics: 0/0
        if not self.entry["passed"]:
            from sdverify.grading.model import failure_text

            raise ContractFailure(failure_text(self.entry["clause"], self.entry["message"]))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ContractFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, None, str]:
        return self.path, None, self.nodeid


def register_markers(config: pytest.Config, functions: tuple[str, ...]) -> None:
    config.addinivalue_line("markers", f"{MARKER}: a contract check of sdverify (--sdverify-impl)")
    for function in functions:
        config.addinivalue_line("markers", f"{function}: sdverify contract checks of {function}()")


def contract_items(session: pytest.Session, report: dict[str, Any]) -> list[pytest.Item]:
    """One item per check of ``report``, under ``sdverify::<function>``."""
    # nodeid given: under the session (nodeid "") pytest would spell it "::sdverify".
    root = Contract.from_parent(session, name=MARKER, path=session.path, nodeid=MARKER)
    groups: dict[str, FunctionChecks] = {}
    items: list[pytest.Item] = []
    for entry in report["checks"]:
        function = entry["group"]
        if function not in groups:
            groups[function] = FunctionChecks.from_parent(root, name=function, path=session.path)
        name = entry["id"].removeprefix(f"{function}.")
        items.append(ContractItem.from_parent(groups[function], name=name, entry=entry, path=session.path))
    # Announce them as collected, as a collector's report would (the "collected N items" line).
    collected = pytest.CollectReport(root.nodeid, "passed", None, list(items))
    session.config.hook.pytest_collectreport(report=collected)
    return items


def run_once(config: pytest.Config, target: str, settings: Settings) -> dict[str, Any]:
    """The checker's report of ``target`` as a dict, computed once per test run.

    Without xdist it is computed here; with it, the first worker to get the lock computes
    it and the others read the file it wrote into the run's base temporary folder (each
    worker's ``--basetemp`` is a subfolder of it; pytest prunes old ones).  An unusable
    target is a usage error.
    """
    basetemp = getattr(config.option, "basetemp", None)
    if not hasattr(config, "workerinput") or not basetemp:
        return _check(target, settings)
    from filelock import FileLock

    path = Path(basetemp).parent / "sdverify-contract-report.json"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(_check(target, settings)))
            tmp.replace(path)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _check(target: str, settings: Settings) -> dict[str, Any]:
    """The checker's JSON report of ``target`` (``sdverify check --json``)."""
    from sdverify.checker import check_submission
    from sdverify.errors import UsageError
    from sdverify.grading.render import report_dict

    try:
        return report_dict(check_submission(target, settings))
    except (FileNotFoundError, UsageError) as exc:
        raise pytest.UsageError(f"--sdverify-impl: {exc}") from None


def points_summary(terminalreporter: Any) -> str | None:
    """``sdverify: 92/100 points`` over the contract items that ran (None when none did)."""
    points = max_points = 0.0
    seen = False
    for reports in terminalreporter.stats.values():
        for report in reports:
            properties = dict(getattr(report, "user_properties", ()))
            if getattr(report, "when", None) == "call" and _MAX_POINTS in properties:
                seen = True
                points += float(properties[_POINTS])
                max_points += float(properties[_MAX_POINTS])
    return f"sdverify: {points:g}/{max_points:g} points" if seen else None
