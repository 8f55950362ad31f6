"""A batch always finishes, with every result, whatever one submission does to its worker or
to the weights (the process level, where a notebook can do both; bwrap prevents them), or to
the reports and the terminal with control characters; the kit's reference graded as a
submission is charged for using the kit."""

from __future__ import annotations

import csv
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from sdverify import zoo
from sdverify.cli import main
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.spec import load_spec

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "notebooks"
KIT_REFERENCE = Path(__file__).resolve().parents[1] / "sdverify" / "reference.py"


def _with_cell(folder: Path, name: str, source: str) -> Path:
    nb = nbformat.read(str(SAMPLES / "correct.ipynb"), as_version=4)
    nb.cells.append(new_code_cell(source))
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_a_notebook_that_kills_its_worker_fails_alone(tmp_path: Path):
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(SAMPLES / "correct.ipynb", subs / "honest.ipynb")
    _with_cell(subs, "killer", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    settings = Settings(sandbox="process", call_timeout=120)
    grades = {g.name: g for g in grade_batch([subs], tmp_path / "out", spec=load_spec(), settings=settings, workers=2)}
    assert grades["honest"].score == grades["honest"].max_score and grades["honest"].error is None
    assert grades["killer"].error and "worker failed twice" in grades["killer"].error
    assert (tmp_path / "out" / "grades.csv").read_text().count("\n") == 3  # header + both students


def test_weights_edited_in_place_are_named_rebuilt_and_harm_no_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SDVERIFY_CACHE", str(tmp_path / "cache"))  # a zoo of its own, built here
    weights = zoo.weights_dir("tiny", 0)
    target = weights / "vae" / "diffusion_pytorch_model.safetensors"
    poison = (
        "import os\n"
        f"p = {str(target)!r}\n"
        "st = os.stat(p)\n"
        "with open(p, 'r+b') as f:\n    f.seek(st.st_size // 2)\n    f.write(b'\\x7f' * 4096)\n"
        "os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))\n"
    )
    subs = tmp_path / "subs"
    subs.mkdir()
    _with_cell(subs, "a_poisoner", poison)
    shutil.copy(SAMPLES / "correct.ipynb", subs / "b_honest.ipynb")
    settings = Settings(sandbox="process", call_timeout=120)
    grades = {g.name: g for g in grade_batch([subs], tmp_path / "out", spec=load_spec(), settings=settings, workers=1)}
    assert grades["b_honest"].score == grades["b_honest"].max_score
    assert grades["a_poisoner"].error and "changed the grader's weights" in grades["a_poisoner"].error
    assert zoo.verify(weights) == []


def test_control_characters_and_the_kits_reference_graded_as_submissions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """For real (issue 21): a module raising with terminal sequences, a copy of the kit's reference
    and, through ``sdverify check``, a link to it; no exemption and no raw control character."""
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    (subs / "a b.py").write_text("raise RuntimeError('nul\\x00 clear\\x1b[2J title\\x1b]0;pwned\\x07')\n")
    shutil.copy(KIT_REFERENCE, subs / "dave.py")
    (tmp_path / "link.py").symlink_to(KIT_REFERENCE)
    assert main(["grade", str(subs), "--out", str(out), "--workers", "1", "--quiet", "--sandbox", "process"]) == 0
    assert main(["check", str(tmp_path / "link.py"), "--sandbox", "process", "--junit", str(tmp_path / "c.xml")]) == 1
    shown = capsys.readouterr()
    assert "\x1b" not in shown.out + shown.err and "\\x1b[2J" in shown.out
    suites = {s.get("name"): s for s in ET.parse(out / "junit.xml").getroot().findall("testsuite")}
    assert sorted(suites) == ["a_b", "dave"]
    with open(out / "grades.csv", newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert "\\x00" in rows["a_b"]["error"] and "\x00" not in rows["a_b"]["error"]
    # The copy is charged where it uses the kit (tokenize calls sdverify.tokenizer), as any import of it is;
    # the link (its path resolves into the kit) is no longer exempt: it runs the kit's own code, so
    # every function is charged (the tripwire names code by the file it sits in), the copy's too.
    failed = [
        {
            c.get("name")
            for c in root.iter("testcase")
            if c.get("name", "").endswith(".own_work") and c.find("failure") is not None
        }
        for root in (suites["dave"], ET.parse(tmp_path / "c.xml").getroot())
    ]
    assert "tokenize.own_work" in failed[0] and failed[0] <= failed[1]
    assert float(rows["dave"]["total"]) < float(rows["dave"]["max_total"])
    [(link_score, link_max)] = re.findall(r"^FAILED: (\S+)/(\S+) points", shown.out, re.M)
    assert float(link_score) <= float(rows["dave"]["total"]) and link_max == rows["dave"]["max_total"]
