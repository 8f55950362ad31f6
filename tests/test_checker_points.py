"""The points model and the delegation policy of `sdverify check` on whole submissions.

Degenerate submissions (zeros, random, the input handed back, eps_cond for CFG, None,
NotImplementedError stubs) earn at most a tenth of the points: properties that hold for
trivial outputs are diagnostics, not points.  Delegating to the kit or to a ready-made
pipeline costs the delegating function its points, names it in every format, and costs
nothing elsewhere.  The laptop tier runs one of each kind; ``--runslow`` all of them.
"""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sdverify.checker import API_NAMES, check_submission
from sdverify.cli import main

# One worker runs this file (--dist loadfile), so the two tests of degenerate_zeros share its report.
pytestmark = pytest.mark.usefixtures("process_level")

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"
DEGENERATE = sorted(p.stem for p in CATALOG.glob("degenerate_*.py"))
# submission -> (functions that delegate, functions that are honest work)
DELEGATING = {
    "delegating_star_import": (set(API_NAMES), set()),
    "delegating_pipeline": ({"generate"}, {"decode_latents"}),
    "delegating_pipeline_stages": ({"encode_prompt"}, {"tokenize"}),
    "delegating_runtime_copy": (set(API_NAMES), set()),
    "delegating_fresh_module": ({"tokenize", "encode_prompt", "cfg_combine"}, set()),
    "delegating_obfuscated": ({"cfg_combine", "denoise_step"}, {"tokenize"}),
}
LAPTOP = {"degenerate_zeros", "delegating_obfuscated"}


def _params(names) -> list:
    return [pytest.param(n, marks=() if n in LAPTOP else pytest.mark.slow) for n in sorted(names)]


def test_the_catalog_has_every_degenerate_kind():
    assert DEGENERATE == [
        "degenerate_cfg_cond",
        "degenerate_identity",
        "degenerate_none",
        "degenerate_not_implemented",
        "degenerate_random",
        "degenerate_zeros",
    ]
    assert sorted(p.stem for p in CATALOG.glob("delegating_*.py")) == sorted(DELEGATING)


@functools.cache
def _checked(name: str):
    """The catalog submission ``name``'s report (checked once per worker: reports are read-only here)."""
    return check_submission(str(CATALOG / f"{name}.py"))


@pytest.mark.parametrize("name", _params(DEGENERATE))
def test_a_degenerate_submission_earns_at_most_a_tenth(name: str):
    report = _checked(name)
    assert report.max_score == 100
    assert report.score <= 0.1 * report.max_score, report.score
    for function, (points, most) in report.points_by_group().items():
        assert points <= 0.1 * most, (function, points, most)


def test_properties_that_hold_for_zeros_earn_nothing():
    # Zeros satisfy interface clauses and several properties (ids in the vocabulary, a CFG
    # affine in w and homogeneous): they pass, and are worth nothing on their own.
    report = _checked("degenerate_zeros")
    passing = [c for c in report.checks if c.passed and c.role != "points"]
    held = {
        "tokenize.tokens.shape_dtype",
        "tokenize.tokens.vocab",
        "cfg_combine.cfg.affine_in_w",
        "cfg_combine.cfg.homogeneous",
    }
    assert held <= {c.id for c in passing}
    assert report.score == 0 and all(c.max_points == 0 for c in passing)


@pytest.mark.parametrize("name", _params(DELEGATING))
def test_delegation_costs_the_delegating_function_its_points_and_nothing_else(name: str):
    delegated, honest = DELEGATING[name]
    report = check_submission(str(CATALOG / f"{name}.py"))
    by_id = {c.id: c for c in report.checks}
    points = report.points_by_group()
    for function in delegated:
        gate = by_id[f"{function}.own_work"]
        assert not gate.passed and gate.mistake == "delegation" and "delegation:" in gate.message
        assert points[function][0] == 0
        # Its values were right: only the policy took the points.
        cases = [c for c in report.checks if c.group == function and c.role == "points"]
        assert cases and all(c.passed and c.withheld_by == [gate.id] for c in cases)
    for function in honest:
        assert by_id[f"{function}.own_work"].passed
        assert points[function][0] == points[function][1] > 0


def test_delegation_is_named_in_text_json_and_junit(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out_json, out_xml = tmp_path / "r.json", tmp_path / "r.xml"
    target = str(CATALOG / "delegating_obfuscated.py")
    assert main(["check", target, "--json", str(out_json), "--junit", str(out_xml)]) == 1
    text = capsys.readouterr().out
    assert "[FAIL] cfg_combine.own_work  gate" in text and "calls sdverify.reference.cfg_combine (at run time)" in text
    assert "(withheld: cfg_combine.own_work failed)" in text
    checks = {c["id"]: c for c in json.loads(out_json.read_text())["checks"]}
    gate = checks["denoise_step.own_work"]
    assert (gate["passed"], gate["role"], gate["mistake"]) == (False, "gate", "delegation")
    assert "sdverify.reference.denoise_step" in gate["message"]
    assert checks["denoise_step.reference[pndm]"]["points"] == 0
    cases = {c.get("name"): c for c in ET.parse(out_xml).getroot().iter("testcase")}
    failure = cases["cfg_combine.own_work"].find("failure")
    assert failure is not None and "delegation" in failure.get("message", "")


def test_allow_relaxes_the_policy():
    target = str(CATALOG / "delegating_star_import.py")
    report = check_submission(target, allow=("sdverify",))
    assert report.passed and report.score == report.max_score == 100


@pytest.mark.slow
def test_the_bundled_reference_is_exempt_and_an_unused_import_is_only_noted(tmp_path: Path):
    assert check_submission(None).passed  # the kit checking itself: no policy
    student = tmp_path / "student.py"
    student.write_text(
        "import sdverify.reference as kit\n\n"
        "def cfg_combine(eps_uncond, eps_cond, guidance_scale):\n"
        "    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)\n"
    )
    report = check_submission(str(student))
    assert report.points_by_group()["cfg_combine"] == (10, 10)
    assert any("imports sdverify.reference" in n and "no points lost" in n for n in report.notes), report.notes


def test_a_call_that_raises_on_one_case_costs_that_case_only(tmp_path: Path):
    """An interface gate fails on the case whose call raised, and withholds that case alone
    (found by a red-team run: it used to withhold every case of the function)."""
    student = tmp_path / "student.py"
    student.write_text(
        "import torch\n\n\n"
        "def encode_prompt(tokenizer, text_encoder, prompt):\n"
        "    if not prompt:\n"
        "        raise ValueError('empty prompt')\n"
        "    ids = tokenizer(prompt, padding='max_length', max_length=77, truncation=True, return_tensors='pt')\n"
        "    with torch.no_grad():\n"
        "        return text_encoder(ids.input_ids)[0]\n"
    )
    entries = [c for c in check_submission(str(student)).checks if c.group == "encode_prompt"]
    cases = {c.id: c for c in entries if c.role == "points"}
    assert cases["encode_prompt.reference[empty]"].points == 0
    assert cases["encode_prompt.reference[astronaut]"].points == cases["encode_prompt.reference[astronaut]"].max_points
    gate = next(c for c in entries if c.id == "encode_prompt.embeddings.shape")
    assert not gate.passed and gate.failed_cases == ["encode_prompt[empty]"]
    assert gate.message.count("encode_prompt[empty]") == 1
