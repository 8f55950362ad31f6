"""Each registered scheduler, built by each lesson idiom from the zoo, gives what SD1.5's published config gives.

The expected values (fixtures/scheduler_idioms.json) are derived from the published
``scheduler_config.json`` alone by scripts/derive_scheduler_idioms.py; here the idioms read the
zoo's snapshot by hub id.  A zoo that wrote ``save_config()`` output (``timestep_spacing:
leading``) gave LMS 967 instead of 999 as its first timestep at 70 steps.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from scheduler_idioms import BY_HAND, FIXTURE, IDIOMS, facts

from sdverify import zoo
from sdverify.schedulers import SCHEDULERS

EXPECTED = json.loads(FIXTURE.read_text())["schedulers"]


@pytest.fixture(scope="module")
def where() -> dict[str, Any]:
    return {"cache_dir": zoo.hub_cache_of(zoo.weights_dir("tiny", 0)), "local_files_only": True}


@pytest.fixture(scope="module")
def pipeline_config(where: dict[str, Any]) -> Any:
    """``pipe.scheduler.config`` of the pipeline loaded from the zoo by hub id."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(zoo.HUB_ID, **where).scheduler.config


def _mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """Where ``actual`` first differs from ``expected`` (numbers to 1e-6), or None."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        return next((m for k in expected if (m := _mismatch(expected[k], actual[k], f"{path}/{k}"))), None)
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path}: {len(actual)} values != {len(expected)}"
        return next(
            (m for i, (e, a) in enumerate(zip(expected, actual)) if (m := _mismatch(e, a, f"{path}[{i}]"))), None
        )
    if isinstance(expected, float) and isinstance(actual, float):
        return (
            None
            if math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-6)
            else f"{path}: got {actual}, published {expected}"
        )
    return None if expected == actual else f"{path}: got {actual!r}, published {expected!r}"


@pytest.mark.parametrize("idiom", IDIOMS)
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_idiom_gives_what_the_published_config_gives(
    name: str, idiom: str, where: dict[str, Any], pipeline_config: Any
):
    builders = {
        "from_pretrained": lambda cls: cls.from_pretrained(zoo.HUB_ID, subfolder="scheduler", **where),
        "from_config": lambda cls: cls.from_config(pipeline_config),
        "by_hand": lambda cls: cls(**BY_HAND),
    }
    assert _mismatch(EXPECTED[name][idiom], facts(name, builders[idiom])) is None


def test_the_fixture_covers_every_registered_scheduler_and_idiom():
    assert {(n, i) for n in EXPECTED for i in EXPECTED[n]} == {(n, i) for n in SCHEDULERS for i in IDIOMS}


def test_a_save_config_scheduler_file_would_be_caught():
    """The failure this guards against: ``timestep_spacing: leading`` in the file moves LMS off 999."""
    from sdverify.published import CONFIG_FILES, config
    from sdverify.schedulers import scheduler_class

    leading = scheduler_class("lms").from_config({**config(CONFIG_FILES["scheduler"]), "timestep_spacing": "leading"})
    actual = facts("lms", lambda cls: cls.from_config(leading.config))
    assert _mismatch(EXPECTED["lms"]["from_pretrained"], actual) is not None
