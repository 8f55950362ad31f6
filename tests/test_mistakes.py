"""The one mistake catalog (sdverify/mistakes.py): every grader reads the same ids and words."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdverify import contract as C
from sdverify.checker.mistakes import from_statistics
from sdverify.checker.submission import API_NAMES
from sdverify.mistakes import MISTAKES, cfg_formulas, replayed, simulated, uniform_draw
from sdverify.notebooks.exercises import normal_statistics
from sdverify.properties.cfg import name_cfg_mistake

SUBMISSIONS = Path(__file__).resolve().parents[1] / "examples" / "submissions"
EXERCISE_STAGES = {"param_count"}  # notebook stages that are no API function


def test_entries_name_api_functions_and_every_grader_finds_the_shared_ones():
    for m in MISTAKES.values():
        assert m.stage in API_NAMES or m.stage in EXERCISE_STAGES, m.id
        assert set(m.simulations) <= set(API_NAMES), m.id
    # A mistake made in one stage shows downstream under the same id: the checker simulates
    # it in every function that contains the stage, the notebook grader replays it.
    assert {"cfg_swapped", "timesteps_reversed", "scaling_factor_not_divided"} <= {
        m.id for m, _ in simulated("generate")
    }
    assert {"cfg_swapped", "guidance_ignored"} <= {m.id for m, _ in simulated("denoise_step")}
    assert {m.id for m, _ in replayed()} == {"timesteps_reversed", "cfg_swapped", "rand_not_randn"}


def test_each_cfg_formula_is_named_by_its_own_id_and_words():
    u, c = torch.randn(2, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0)).double()
    for m in cfg_formulas():
        assert m.formula is not None
        assert name_cfg_mistake(m.formula(u, c, 7.5), u, c, 7.5, 1e-9) == (m.id, m.message)


def test_rand_is_detected_once_for_checker_and_notebook_grader():
    g = torch.Generator().manual_seed(0)
    words = MISTAKES["rand_not_randn"].message
    sigma = 14.6146
    assert uniform_draw(torch.rand(C.LATENT_SHAPE, generator=g))
    assert uniform_draw(torch.rand(C.LATENT_SHAPE, generator=g) * sigma)  # Euler's init_noise_sigma
    assert not uniform_draw(torch.randn(C.LATENT_SHAPE, generator=g))
    assert not uniform_draw(torch.randn(C.LATENT_SHAPE, generator=g).abs())  # half-normal: mean far below max/2
    assert from_statistics("initial_latents", torch.rand(C.LATENT_SHAPE, generator=g) * sigma) == (
        "rand_not_randn",
        words,
    )
    assert normal_statistics(torch.rand(C.LATENT_SHAPE, generator=g))[2] == words


@pytest.mark.slow
def test_a_points_check_carries_the_mistake_its_diagnostic_names():
    """A denoise_step that never passes ``generator=`` loses its DDPM reference case; the
    reproducibility diagnostic knows why, and the points check says it too."""
    from sdverify.checker import check_submission

    report = check_submission(str(SUBMISSIONS / "wrong_denoise_no_generator.py"))
    lost = [c for c in report.checks if c.function == "denoise_step" and c.role == "points" and not c.passed]
    assert lost, [c.id for c in report.checks if not c.passed]
    assert all(c.details.get("mistake") == "generator_ignored" for c in lost), [(c.id, c.message) for c in lost]
    assert all("pass generator= to scheduler.step" in c.message for c in lost)
