"""Write fixtures/scheduler_idioms.json: what each registered scheduler gives, built by each lesson
idiom, from SD1.5's published scheduler_config.json (sdverify/published), not from the zoo.

On the real model, ``from_pretrained`` reads that file and the pipeline's scheduler is a PNDM
scheduler made from it; this script reproduces both from the published content alone.
Run from the repository root: ``python scripts/derive_scheduler_idioms.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import diffusers

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scheduler_idioms import BY_HAND, FIXTURE, facts

from sdverify import published
from sdverify.schedulers import SCHEDULERS, scheduler_class


def main() -> None:
    file_config = published.config(published.CONFIG_FILES["scheduler"])
    pipeline_config = scheduler_class("pndm").from_config(file_config).config
    builders = {
        "from_pretrained": lambda cls: cls.from_config(file_config),
        "from_config": lambda cls: cls.from_config(pipeline_config),
        "by_hand": lambda cls: cls(**BY_HAND),
    }
    fixture = {
        "_about": __doc__.splitlines()[0] + f" Derived with diffusers {diffusers.__version__}.",
        "schedulers": {name: {idiom: facts(name, b) for idiom, b in builders.items()} for name in SCHEDULERS},
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")


if __name__ == "__main__":
    main()
