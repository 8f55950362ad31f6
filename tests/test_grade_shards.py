"""Sharding a class (`--shard K/N`) and merging the shards' outputs (`sdverify grade merge`).

The laptop tier grades .py submissions with a stand-in checker (tests/synthetic_class.py):
the shards-then-merge path must give the very bytes of one unsharded run.  The slow tier does
the same with the real checker, where only the timings may differ.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from synthetic_class import fake_checker, module_class

from sdverify.cli import main
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.reports import PLOT, SUMMARY
from sdverify.notebooks.shards import in_shard, merge, parse_shard
from sdverify.notebooks.spec import load_spec

CLASS_FILES = ("grades.csv", "junit.xml", "index.html", SUMMARY, PLOT)
SETTINGS = Settings(sandbox="process", cell_timeout=60, notebook_timeout=120)


def _grade(folder: Path, out: Path, **options) -> list:
    return grade_batch([folder], out, spec=load_spec(), settings=SETTINGS, workers=1, progress=False, **options)


def _files(out: Path) -> dict[str, bytes]:
    """Every file of a grade output, by path relative to it."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("text", "shard"), [("1/1", (1, 1)), ("2/4", (2, 4)), (" 3 / 3 ", (3, 3))])
def test_parse_shard(text, shard):
    assert parse_shard(text) == shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "2", "a/b", "1/0", "-1/2"])
def test_parse_shard_rejects_what_is_not_k_of_n(text):
    with pytest.raises(ValueError, match=r"--shard expects K/N with 1 <= K <= N"):
        parse_shard(text)


def test_shards_partition_the_class_evenly_and_a_new_file_moves_no_one():
    names = [f"student{i:04d}" for i in range(600)]
    for n in (1, 2, 3, 8):
        shares = [{x for x in names if in_shard(x, (k, n))} for k in range(1, n + 1)]
        assert sorted(x for share in shares for x in share) == sorted(names)  # disjoint, covering
        assert all(0.7 * len(names) / n < len(share) < 1.3 * len(names) / n for share in shares)
        late = [*names, "zoe", "yann"]
        assert [{x for x in late if in_shard(x, (k, n))} - {"zoe", "yann"} for k in range(1, n + 1)] == shares


def test_two_shards_merged_equal_one_run_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    checked = fake_checker(monkeypatch)
    folder = module_class(tmp_path / "subs")
    whole = _grade(folder, tmp_path / "whole")
    first = _grade(folder, tmp_path / "s1", shard=(1, 2))
    second = _grade(folder, tmp_path / "s2", shard=(2, 2))
    assert first and second and sorted(g.name for g in first + second) == sorted(g.name for g in whole)
    assert sorted(checked) == sorted(2 * [g.name for g in whole])  # each graded once unsharded, once in a shard
    for k, out in ((1, "s1"), (2, "s2")):
        assert json.loads((tmp_path / out / SUMMARY).read_text())["shard"] == [k, 2]
    merged = merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    assert [g.name for g in merged] == sorted(g.name for g in whole)
    assert _files(tmp_path / "merged") == _files(tmp_path / "whole")
    assert set(CLASS_FILES) <= set(_files(tmp_path / "merged"))


def test_merge_refuses_a_missing_shard_a_repeated_one_and_an_unfinished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake_checker(monkeypatch)
    folder = module_class(tmp_path / "subs")
    for k in (1, 2):
        _grade(folder, tmp_path / f"s{k}", shard=(k, 2))
    with pytest.raises(ValueError, match=r"missing \[2\]"):
        merge([tmp_path / "s1"], tmp_path / "m")
    with pytest.raises(ValueError, match="is in both"):
        merge([tmp_path / "s1", tmp_path / "s1", tmp_path / "s2"], tmp_path / "m")
    shutil.copytree(tmp_path / "s2", tmp_path / "unfinished")
    (tmp_path / "unfinished" / SUMMARY).unlink()
    with pytest.raises(ValueError, match="did that batch finish"):
        merge([tmp_path / "s1", tmp_path / "unfinished"], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_cli_shards_and_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    fake_checker(monkeypatch)
    folder = module_class(tmp_path / "subs")
    common = ["--workers", "1", "--quiet", "--sandbox", "process"]
    for k in (1, 2):
        assert main(["grade", str(folder), "--out", str(tmp_path / f"s{k}"), "--shard", f"{k}/2", *common]) == 0
    capsys.readouterr()
    assert main(["grade", "merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[:-1]] == ["ann", "ben", "cat", "dan", "eva", "fay", "gus"]
    assert main(["grade", str(folder), "--shard", "3/2", "--out", str(tmp_path / "x")]) == 2
    assert "--shard expects K/N" in capsys.readouterr().err


def _without_timings(out: Path) -> dict[str, str]:
    """The class files with what measures time taken out (seconds, the slowest submissions)."""
    summary = json.loads((out / SUMMARY).read_text())
    summary.pop("slowest")
    index = (out / "index.html").read_text()
    index = re.sub(r"<section id='slowest'>.*?</section>", "", re.sub(r"<td class='t'[^>]*>.*?</td>", "", index))
    return {
        "grades.csv": (out / "grades.csv").read_text(),
        "junit.xml": re.sub(r' time="[^"]*"', "", (out / "junit.xml").read_text()),
        "index.html": index,
        SUMMARY: json.dumps(summary),
    }


@pytest.mark.slow
def test_real_checker_shards_merged_equal_one_run_except_timings(tmp_path: Path):
    catalog = Path(__file__).resolve().parents[1] / "examples" / "submissions"
    folder = tmp_path / "subs"
    folder.mkdir()
    for name in ("correct_helper_class", "wrong_cfg_swapped", "wrong_decode_no_scaling"):  # shards of 2 and 1
        shutil.copy(catalog / f"{name}.py", folder)
    whole = _grade(folder, tmp_path / "whole")
    assert any(g.score < g.max_score for g in whole) and any(g.score == g.max_score for g in whole)
    for k in (1, 2):
        _grade(folder, tmp_path / f"s{k}", shard=(k, 2))
    merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    assert _without_timings(tmp_path / "merged") == _without_timings(tmp_path / "whole")
    assert (tmp_path / "merged" / PLOT).read_bytes() == (tmp_path / "whole" / PLOT).read_bytes()
