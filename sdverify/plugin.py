"""pytest plugin: options, markers and shared fixtures; checks live in the library."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdverify import zoo

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


def pytest_configure(config: pytest.Config) -> None:
    # Resolve once; fixtures and hooks read the stash.
    config.stash[_SETTINGS] = {
        "preset": config.getoption("sdverify_preset"),
        "seed": config.getoption("sdverify_seed"),
        "weights": config.getoption("sdverify_weights"),
        "device": config.getoption("sdverify_device"),
    }


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
def sd_impl():
    """The pipeline implementation under test: the bundled reference by default."""
    from sdverify import reference

    return reference
