"""pytest plugin: options, markers and shared fixtures; checks live in the library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdverify import zoo
from sdverify.gpu import session as gpu_session

_SETTINGS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdverify", "SD1.5 pipeline verification")
    group.addoption(
        "--sdverify-preset",
        dest="sdverify_preset",
        default=os.environ.get("SDVERIFY_PRESET", "tiny"),
        choices=["tiny", "sd15"],
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
        help="run the contract tests against this student module instead of sdverify.reference ($SDVERIFY_IMPL)",
    )


def pytest_configure(config: pytest.Config) -> None:
    _share_cpu_threads()
    # Resolve once; fixtures and hooks read the stash.
    config.stash[_SETTINGS] = {
        "preset": config.getoption("sdverify_preset"),
        "seed": config.getoption("sdverify_seed"),
        "weights": config.getoption("sdverify_weights"),
        "device": config.getoption("sdverify_device"),
        "timing_json": config.getoption("sdverify_timing_json"),
        "budget_scale": config.getoption("sdverify_budget_scale"),
        "budget_gpu": config.getoption("sdverify_budget_gpu"),
        "impl": config.getoption("sdverify_impl"),
    }
    gpu_session.configure(config, config.stash[_SETTINGS]["device"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_session.skip_without_device(items, settings_of(config)["device"])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:  # pytest-xdist controller: one GPU per worker
    gpu_session.configure_node(node, settings_of(node.config)["device"])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # pytest-xdist controller: collect worker timings
    gpu_session.receive_from_worker(node.config, node)


def pytest_sessionfinish(session: pytest.Session) -> None:
    gpu_session.send_to_controller(session.config)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    gpu_session.terminal_summary(terminalreporter, config, settings_of(config)["timing_json"])


def _share_cpu_threads() -> None:
    """Give each xdist worker its share of the cores.

    N workers each running torch's default of all-cores threads oversubscribe the CPU,
    and OpenMP's spin-waiting then makes the suite several times slower.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def settings_of(config: pytest.Config) -> dict:
    """The plugin's resolved settings (for fixtures in other modules)."""
    return config.stash[_SETTINGS]


@pytest.fixture(scope="session")
def sd_tokenizer():
    """The real SD1.5 CLIP tokenizer shipped in fixtures/."""
    from sdverify.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def sd_weights_dir(pytestconfig: pytest.Config) -> Path:
    """Diffusers folder of the configured preset (built once, cached on disk) or real weights."""
    s = settings_of(pytestconfig)
    return zoo.weights_dir(s["preset"], s["seed"], s["weights"])


@pytest.fixture(scope="session")
def sd_components(sd_weights_dir: Path) -> zoo.Components:
    """Components on CPU float32.  Models are shared: tests must not mutate them;
    schedulers are stateful, so tests make their own with ``make_scheduler``."""
    return zoo.load_components(sd_weights_dir)


@pytest.fixture(scope="session")
def sd_impl(pytestconfig: pytest.Config):
    """The implementation under test: ``--sdverify-impl`` (loaded in this process), else the reference.

    A name the module lacks fails the test that uses it as "not implemented".
    """
    from sdverify.checker.submission import Implementation

    return Implementation.load(settings_of(pytestconfig)["impl"])


@pytest.fixture(scope="session")
def gpu_config(pytestconfig: pytest.Config):
    """The gpu suite's settings: sd15 float16 on CUDA, tiny float32 with --sdverify-device cpu."""
    from sdverify.gpu import devices, suite

    s = settings_of(pytestconfig)
    return suite.suite_config(devices.resolve_device(s["device"]), s["seed"], s["weights"])


@pytest.fixture(scope="session")
def gpu_components(gpu_config):
    """Components built on the suite's device (shared: tests must not mutate them)."""
    from sdverify.gpu import suite

    return suite.load_suite_components(gpu_config)


@pytest.fixture(scope="session")
def gpu_report(pytestconfig: pytest.Config, gpu_config):
    """This process's timing report, printed in the terminal summary (and written as JSON)."""
    from sdverify.gpu import report

    env = report.environment(gpu_config.device, gpu_config.preset, gpu_config.dtype)
    return gpu_session.new_report(pytestconfig, report.TimingReport(env))


@pytest.fixture(scope="session")
def gpu_budget(pytestconfig: pytest.Config, gpu_config):
    """The absolute budget row for this GPU (scaled), or None off the table / on CPU."""
    from sdverify.gpu import devices

    if not gpu_config.on_cuda:
        return None
    s = settings_of(pytestconfig)
    return gpu_session.budget_for(devices.device_name(gpu_config.device), s["budget_scale"], s["budget_gpu"])
