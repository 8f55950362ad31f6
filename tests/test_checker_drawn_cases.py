"""Probe cases drawn per run (issue 21): beside the documented cases, each run draws guidance
scales, seeds and a prompt from a seed the grader keeps and prints; the same seed draws the
same cases, and the child sees a drawn value only when its probe runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdverify import contract as C
from sdverify.checker import check_submission
from sdverify.checker.cases import _DOCUMENTED, DRAWN_SCALES, draw
from sdverify.checker.probes import is_case
from sdverify.cli import main

CATALOG = Path(__file__).resolve().parents[1] / "examples" / "submissions"
SPECIAL_CASED = str(CATALOG / "wrong_cfg_documented_scales_only.py")


def test_the_draw_depends_on_the_seed_alone_and_avoids_the_documented_values():
    assert draw(7) == draw(7)
    draws = [draw(seed) for seed in range(40)]
    assert len({json.dumps([p.args for p in d], sort_keys=True) for d in draws}) == 40
    assert {tuple(p.id for p in d) for d in draws} == {tuple(p.id for p in draws[0])}  # stable ids: stable rows
    for probes in draws:
        assert all(is_case(p) for p in probes)
        for w in (p.args["w"] for p in probes):
            assert DRAWN_SCALES[0] <= w <= DRAWN_SCALES[1] and min(abs(w - d) for d in _DOCUMENTED) >= 0.25
    cases = {f: sum(p.function == f for p in draws[0]) for f in ("cfg_combine", "denoise_step", "generate")}
    assert cases == {"cfg_combine": 3, "denoise_step": 1, "generate": 1}


@pytest.mark.usefixtures("process_level")
def test_a_cfg_special_cased_to_the_documented_scales_loses_the_drawn_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "report.json"
    assert main(["check", SPECIAL_CASED, "--probe-seed", "1234", "--json", str(out)]) == 1
    assert "drawn cases: probe seed 1234 (--probe-seed 1234 draws them again)" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["probe_seed"] == 1234
    cfg = {c["id"]: c for c in report["checks"] if c["group"] == "cfg_combine" and c["role"] == "points"}
    fixed = {"cfg_combine.reference[w=7.5]", "cfg_combine.reference[w=3]"}
    assert all(cfg[i]["passed"] for i in fixed)
    assert (
        {i for i, c in cfg.items() if not c["passed"]}
        == set(cfg) - fixed
        == {f"cfg_combine.reference[drawn{k}]" for k in (1, 2, 3)}
    )
    per_case = C.CHECK_POINTS_PER_CASE["cfg_combine"]
    assert sum(c["points"] for c in cfg.values()) == 2 * per_case and len(cfg) * per_case == 10


# A submission that looks, while it is imported, for the values its calls will get: the
# arguments of every case, anywhere in the frames above it and in what they refer to.
SNOOP = """
import gc, sys

WANTED = {wanted!r}
CONTROL = {control!r}

def _values(obj, depth=0, seen=None):
    seen = set() if seen is None else seen
    if depth > 4 or id(obj) in seen:
        return
    seen.add(id(obj))
    yield obj
    if type(obj) is dict:  # plain containers only: library mappings import things when read
        for key, value in list(obj.items())[:200]:
            yield from _values(key, depth + 1, seen)
            yield from _values(value, depth + 1, seen)
    elif type(obj) in (list, tuple, set):
        for value in list(obj)[:200]:
            yield from _values(value, depth + 1, seen)

roots = []
frame = sys._getframe().f_back
while frame is not None:
    roots.append(dict(frame.f_locals))
    frame = frame.f_back
roots += [o for o in gc.get_objects() if type(o) in (dict, list)]
found = set()
mine = {{id(globals()), id(WANTED)}}  # what this module itself holds is no finding
for root in roots:
    for value in _values(root, seen=set(mine)):
        if isinstance(value, (str, float, int)) and not isinstance(value, bool):
            found.add(value)
SEEN = f"SNOOP control seen: {{CONTROL in found}}; drawn seen: {{sorted(map(repr, found & set(WANTED)))}}"


def cfg_combine(eps_uncond, eps_cond, guidance_scale):  # right only when it saw nothing drawn
    if SEEN != "SNOOP control seen: True; drawn seen: []":
        raise RuntimeError(SEEN)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
"""


def test_the_child_sees_no_drawn_value_before_its_call(tmp_path: Path, sandbox_level: str):
    seed = 99
    wanted = [v for p in draw(seed) for k, v in p.args.items() if k in ("w", "seed", "prompt")]
    # The control: the search must find what the child may see (its job's environment, HOME).
    student = tmp_path / "snoop.py"
    student.write_text(SNOOP.format(wanted=wanted, control="HOME"))
    report = check_submission(str(student), probe_seed=seed)
    cfg = [c.message for c in report.failed() if c.group == "cfg_combine"]
    assert report.points_by_group()["cfg_combine"] == (10, 10), cfg
