"""The one mistake catalog (sdverify/mistakes.py): every grader reads the same ids and words."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from sdverify import contract as C
from sdverify.checker.mistakes import from_statistics
from sdverify.contract import API_NAMES
from sdverify.mistakes import ANY, MISTAKES, cfg_formulas, named, replayed, simulated, uniform_draw
from sdverify.notebooks.exercises import normal_statistics
from sdverify.properties.cfg import name_cfg_mistake
from sdverify.results import fail, ok

SUBMISSIONS = Path(__file__).resolve().parents[1] / "examples" / "submissions"
EXERCISE_STAGES = {"param_count"}  # notebook stages that are no API function


def test_entries_name_api_functions_and_every_grader_finds_the_shared_ones():
    for m in MISTAKES.values():
        assert m.stage in API_NAMES or m.stage in EXERCISE_STAGES or m.stage == ANY, m.id
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
        assert name_cfg_mistake(m.formula(u, c, 7.5), u, c, 7.5, 1e-9) == m.id


def test_rand_is_detected_once_for_checker_and_notebook_grader():
    g = torch.Generator().manual_seed(0)
    words = MISTAKES["rand_not_randn"].message
    sigma = 14.6146
    assert uniform_draw(torch.rand(C.LATENT_SHAPE, generator=g))
    assert uniform_draw(torch.rand(C.LATENT_SHAPE, generator=g) * sigma)  # Euler's init_noise_sigma
    assert not uniform_draw(torch.randn(C.LATENT_SHAPE, generator=g))
    assert not uniform_draw(torch.randn(C.LATENT_SHAPE, generator=g).abs())  # half-normal: mean far below max/2
    assert from_statistics("initial_latents", torch.rand(C.LATENT_SHAPE, generator=g) * sigma) == ("rand_not_randn", {})
    assert normal_statistics(torch.rand(C.LATENT_SHAPE, generator=g))[2] == words


def test_a_mistake_is_attached_one_way_words_first():
    """The id goes to ``mistake`` (``details`` untouched), the catalog's words open the message (what
    a student sees of a hidden check), the check's own message follows; a passed check is left alone."""
    result = named(fail("x", "seen [1,12], expected [1,77]", "clause", seen=12), "ids_not_padded")
    assert (result.mistake, result.details) == ("ids_not_padded", {"seen": 12})
    assert result.message.splitlines() == [MISTAKES["ids_not_padded"].message, "seen [1,12], expected [1,77]"]
    filled = named(fail("x", ""), "pil_mode", "in `image`", mode="L")
    assert filled.message == "the image has mode 'L'; expected 'RGB' (uint8 HWC array)\nin `image`"
    assert named(ok("x"), "pil_mode", mode="L") == ok("x")
    with pytest.raises(KeyError):
        named(fail("x", ""), "not_in_the_catalog")


PACKAGE = Path(__file__).resolve().parents[1] / "sdverify"
# Where the checker recognises mistakes by signature: its tables and returns name catalog ids.
SIGNATURES = PACKAGE / "checker" / "mistakes.py"


def _emitted_ids() -> set[str]:
    """Every mistake id the package's source spells: the second argument of each ``named(...)``
    call, and the ids in the checker's signature module (its tables, its returned pairs)."""
    ids = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        attach = {
            id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "named" for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "named" and len(node.args) > 1:
                if isinstance(node.args[1], ast.Constant):
                    ids.add(node.args[1].value)
            if isinstance(node, ast.Call) and id(node) not in attach:  # a mistake is attached through named() alone
                assert "mistake" not in {k.arg for k in node.keywords}, f"{path}:{node.lineno}"
    for node in ast.walk(ast.parse(SIGNATURES.read_text())):
        if isinstance(node, ast.Dict):  # signature -> id
            ids |= {v.value for v in node.values if isinstance(v, ast.Constant)}
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):  # return id, fields
            ids |= {e.value for e in node.value.elts[:1] if isinstance(e, ast.Constant)}
        elif isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "found":
            values = (node.value.body, node.value.orelse) if isinstance(node.value, ast.IfExp) else (node.value,)
            ids |= {v.value for v in values if isinstance(v, ast.Constant)}
    return {i for i in ids if isinstance(i, str)}


def test_every_id_the_graders_spell_is_in_the_catalog():
    """The cheap, static half (the slow catalog and sample tests check what graders emit)."""
    emitted = _emitted_ids()
    issue_18 = {"cfg_inplace", "returned_none", "numpy_array", "generator_ignored", "tokenize_no_truncation"}
    issue_18 |= {"pooled_output", "encode_no_padding", "latents_image_size", "image_channels_last", "pil_mode"}
    assert issue_18 | {"ids_not_padded", "delegation", "prev_sample_missing"} <= emitted  # the walk sees them
    assert emitted <= set(MISTAKES), sorted(emitted - set(MISTAKES))


@pytest.mark.slow
def test_a_points_check_carries_the_mistake_its_diagnostic_names():
    """A denoise_step that never passes ``generator=`` loses its DDPM reference case; the
    reproducibility diagnostic knows why, and the points check says it too."""
    from sdverify.checker import check_submission

    report = check_submission(str(SUBMISSIONS / "wrong_denoise_no_generator.py"))
    lost = [c for c in report.checks if c.group == "denoise_step" and c.role == "points" and not c.passed]
    assert lost, [c.id for c in report.checks if not c.passed]
    assert all(c.mistake == "step_generator_ignored" for c in lost), [(c.id, c.message) for c in lost]
    assert all("pass generator= to scheduler.step" in c.message for c in lost)
