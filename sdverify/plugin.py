"""pytest plugin: options, markers and shared fixtures; checks live in the library.

Installed as a ``pytest11`` entry point, so it loads in every pytest run of the
environment: it registers options without importing torch, diffusers or transformers
(Hypothesis' own plugin is the model), and the heavy modules are imported only by the
fixtures and hooks that need them.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from sdverify import contract as C
from sdverify import pytest_contract
from sdverify.settings import CHECK, Settings

if TYPE_CHECKING:
    from sdverify.checker.submission import Implementation
    from sdverify.gpu.budgets import Budget
    from sdverify.gpu.report import TimingReport
    from sdverify.gpu.suite import SuiteConfig
    from sdverify.zoo import Components

# What the gpu suite accepts; checked here as text so that a bad value is a usage error
# before anything imports torch.
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class Options:
    """The plugin's options, resolved once in ``pytest_configure``: the checker's :class:`Settings`
    (what the contract items and the zoo fixtures use), and what only a test run has."""

    settings: Settings
    impl: str | None  # the student module the contract items check
    device: str | None  # the gpu suite's (None: cuda)
    timing_json: str | None
    budget_scale: float
    budget_gpu: str | None
    given: bool = False  # an --sdverify-* option was given: the session is sdverify's own

    @property
    def device_text(self) -> str:
        return self.device or "cuda"


_OPTIONS = pytest.StashKey[Options]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdverify", "SD1.5 pipeline verification")
    group.addoption(
        "--sdverify-preset",
        dest="sdverify_preset",
        default=os.environ.get("SDVERIFY_PRESET", "tiny"),
        choices=C.PRESET_NAMES,
        help="offline zoo preset the CPU tests load (default: tiny, or $SDVERIFY_PRESET)",
    )
    group.addoption("--sdverify-seed", dest="sdverify_seed", type=int, default=0, help="zoo weight seed (default 0)")
    group.addoption(
        "--sdverify-weights",
        dest="sdverify_weights",
        default=os.environ.get("SDVERIFY_WEIGHTS"),
        help="local diffusers folder with real SD1.5 weights, used instead of the zoo ($SDVERIFY_WEIGHTS)",
    )
    group.addoption(
        "--sdverify-device",
        dest="sdverify_device",
        default=os.environ.get("SDVERIFY_DEVICE"),
        help="device for the gpu suite (default cuda); 'cpu' runs its logic on the tiny preset",
    )
    group.addoption(
        "--sdverify-timing-json",
        dest="sdverify_timing_json",
        default=os.environ.get("SDVERIFY_TIMING_JSON"),
        help="write the gpu suite's timing report as JSON to this path ($SDVERIFY_TIMING_JSON)",
    )
    group.addoption(
        "--sdverify-budget-scale",
        dest="sdverify_budget_scale",
        type=float,
        default=os.environ.get("SDVERIFY_BUDGET_SCALE", "1"),  # a string: argparse converts it, naming a bad value
        help="multiply the per-GPU time budgets; 0 turns them off ($SDVERIFY_BUDGET_SCALE, default 1)",
    )
    group.addoption(
        "--sdverify-budget-gpu",
        dest="sdverify_budget_gpu",
        default=os.environ.get("SDVERIFY_BUDGET_GPU"),
        help="apply this budget-table row (e.g. A100) instead of the detected GPU's ($SDVERIFY_BUDGET_GPU)",
    )
    group.addoption(
        "--sdverify-impl",
        dest="sdverify_impl",
        default=os.environ.get("SDVERIFY_IMPL"),
        metavar="PATH_OR_MODULE",
        help="add the contract's checks as test items for this student module, and run the tests using "
        "the sd_impl fixture against it instead of sdverify.reference ($SDVERIFY_IMPL)",
    )
    group.addoption(
        "--sdverify-sandbox",
        dest="sdverify_sandbox",
        default=None,
        choices=C.SANDBOX_CHOICES,
        help="isolation of the contract items' student code: bwrap, process, or auto ($SDVERIFY_SANDBOX)",
    )
    group.addoption(
        "--sdverify-allow",
        dest="sdverify_allow",
        action="append",
        default=[],
        metavar="NAME",
        help="relax the contract items' delegation policy: a module or class the student may use (repeatable)",
    )
    group.addoption(
        "--sdverify-probe-seed",
        dest="sdverify_probe_seed",
        type=int,
        default=None,
        metavar="N",
        help="the seed of the contract items' drawn probe cases (default: a new one per run; sdverify check prints it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    device = config.getoption("sdverify_device")
    if device is not None and not _DEVICE.fullmatch(device):
        raise pytest.UsageError(
            f"--sdverify-device {device!r} is not usable by the gpu suite; expected 'cuda', 'cuda:N' or 'cpu'"
        )
    settings = replace(
        CHECK,
        preset=config.getoption("sdverify_preset"),
        seed=config.getoption("sdverify_seed"),
        weights=config.getoption("sdverify_weights"),
        sandbox=config.getoption("sdverify_sandbox"),
        allow=_allowed(config.getoption("sdverify_allow")),
        probe_seed=config.getoption("sdverify_probe_seed"),
    )
    config.stash[_OPTIONS] = options = Options(
        settings,
        impl=config.getoption("sdverify_impl"),
        device=device,
        timing_json=config.getoption("sdverify_timing_json"),
        budget_scale=config.getoption("sdverify_budget_scale"),
        budget_gpu=config.getoption("sdverify_budget_gpu"),
        given=_options_given(config),
    )
    if options.given:  # else only once gpu tests are collected: unrelated projects untouched
        from sdverify.gpu import session as gpu_session  # light: no torch until a gpu test needs it

        gpu_session.claim_worker(config, options.device)
    if options.impl:
        pytest_contract.register_markers(config, (*C.API_NAMES, C.SANDBOX_GROUP))


def pytest_report_header(config: pytest.Config) -> str:
    o = options_of(config)
    weights = o.settings.weights or f"offline zoo seed {o.settings.seed}"
    impl = o.impl or "sdverify.reference"
    return f"sdverify: impl={impl} preset={o.settings.preset} weights={weights} gpu-suite device={o.device_text}"


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: they select among the contract items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    o = options_of(config)
    if o.impl:
        report = pytest_contract.run_once(config, o.impl, o.settings)
        items.extend(pytest_contract.contract_items(session, report))
    if any(item.get_closest_marker("gpu") for item in items):
        from sdverify.gpu import session as gpu_session

        if not o.given:  # a worker's tests have not run yet: CUDA is not started
            gpu_session.claim_worker(config, o.device)
        gpu_session.configure(config, o.device)
        gpu_session.skip_without_device(items, o.device)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:  # pytest-xdist controller: collect worker timings
    from sdverify.gpu import session as gpu_session

    gpu_session.receive_from_worker(node.config, node)


def pytest_sessionfinish(session: pytest.Session) -> None:
    from sdverify.gpu import session as gpu_session

    gpu_session.send_to_controller(session.config)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    from sdverify.gpu import session as gpu_session

    gpu_session.terminal_summary(terminalreporter, config, options_of(config).timing_json)
    points = pytest_contract.points_summary(terminalreporter) if options_of(config).impl else None
    if points:
        terminalreporter.write_line(points, bold=True)


def _allowed(names: list[str]) -> tuple[str, ...]:
    if not names:
        return ()
    from sdverify.delegation import validate_names  # imports torch: only when the option is given

    try:
        return validate_names(names, "--sdverify-allow")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _options_given(config: pytest.Config) -> bool:
    """Whether an ``--sdverify-*`` option is on the command line, in ``PYTEST_ADDOPTS`` or in the
    ini file's ``addopts`` (an xdist worker gets the controller's arguments: the same answer)."""
    words = [
        *map(str, config.invocation_params.args),
        *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
        *config.getini("addopts"),
    ]
    return any(word.startswith("--sdverify-") for word in words)


def options_of(config: pytest.Config) -> Options:
    """The plugin's resolved options (for fixtures in other modules)."""
    return config.stash[_OPTIONS]


@pytest.fixture(scope="session")
def sd_tokenizer() -> Any:
    """The real SD1.5 CLIP tokenizer shipped in fixtures/."""
    from sdverify.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def sd_weights_dir(pytestconfig: pytest.Config) -> Path:
    """Diffusers folder of the configured preset (built once, cached on disk) or real weights."""
    from sdverify import zoo

    s = options_of(pytestconfig).settings
    return zoo.weights_dir(s.preset, s.seed, s.weights)


@pytest.fixture(scope="session")
def sd_components(sd_weights_dir: Path) -> Components:
    """Components on CPU float32.  Models are shared: tests must not mutate them;
    schedulers are stateful, so tests make their own with ``make_scheduler``."""
    from sdverify import zoo

    return zoo.load_components(sd_weights_dir)


@pytest.fixture(scope="session")
def sd_impl(pytestconfig: pytest.Config) -> Implementation:
    """The implementation under test: ``--sdverify-impl`` (loaded in this process), else the reference.

    A name the module lacks fails the test that uses it as "not implemented".
    """
    from sdverify.checker.submission import Implementation

    return Implementation.load(options_of(pytestconfig).impl)


@pytest.fixture(scope="session")
def gpu_config(pytestconfig: pytest.Config) -> SuiteConfig:
    """The gpu suite's settings: sd15 float16 on CUDA, tiny float32 with --sdverify-device cpu."""
    from sdverify.gpu import devices, suite

    o = options_of(pytestconfig)
    return suite.suite_config(devices.resolve_device(o.device), o.settings.seed, o.settings.weights)


@pytest.fixture(scope="session")
def gpu_components(gpu_config: SuiteConfig) -> Components:
    """Components built on the suite's device (shared: tests must not mutate them)."""
    from sdverify.gpu import suite

    return suite.load_suite_components(gpu_config)


@pytest.fixture(scope="session")
def gpu_report(pytestconfig: pytest.Config, gpu_config: SuiteConfig) -> TimingReport:
    """This process's timing report, printed in the terminal summary (and written as JSON)."""
    from sdverify.gpu import report
    from sdverify.gpu import session as gpu_session

    env = report.environment(gpu_config.device, gpu_config.preset, gpu_config.dtype)
    return gpu_session.new_report(pytestconfig, report.TimingReport(env))


@pytest.fixture(scope="session")
def gpu_budget(pytestconfig: pytest.Config, gpu_config: SuiteConfig) -> Budget | None:
    """The absolute budget row for this GPU (scaled), or None off the table / on CPU."""
    from sdverify.gpu import devices
    from sdverify.gpu import session as gpu_session

    if not gpu_config.on_cuda:
        return None
    o = options_of(pytestconfig)
    return gpu_session.budget_for(devices.device_name(gpu_config.device), o.budget_scale, o.budget_gpu)
