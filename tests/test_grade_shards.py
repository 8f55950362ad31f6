"""Sharding a class (`--shard K/N`) and merging the shards' outputs (`sdverify grade merge`).

The laptop tier grades .py submissions with a stand-in checker (tests/synthetic_class.py):
the shards-then-merge path must give the very bytes of one unsharded run.  The slow tier does
the same with the real checker, where only the timings may differ.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from synthetic_class import fake_checker, module_class

from sdverify.cli import main
from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.reports import PLOT, SUMMARY
from sdverify.notebooks.shards import in_shard, merge, parse_shard
from sdverify.notebooks.spec import load_spec

CLASS_FILES = ("grades.csv", "junit.xml", "index.html", SUMMARY, PLOT)
SETTINGS = Settings(sandbox="process", call_timeout=60, timeout=120, probe_seed=11)  # one draw for the class


def _grade(folder: Path, out: Path, **options) -> list:
    return grade_batch([folder], out, spec=load_spec(), settings=SETTINGS, workers=1, **options)


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


def test_a_shard_that_draws_no_one_merges_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake_checker(monkeypatch)
    folder = tmp_path / "subs"
    folder.mkdir()
    (folder / "solo.py").write_text("cfg_combine = pass\n")
    _grade(folder, tmp_path / "whole")
    shares = [_grade(folder, tmp_path / f"s{k}", shard=(k, 2)) for k in (1, 2)]
    assert sorted(len(share) for share in shares) == [0, 1]
    merge([tmp_path / "s1", tmp_path / "s2"], tmp_path / "merged")
    assert _files(tmp_path / "merged") == _files(tmp_path / "whole")


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
    with pytest.raises(ValueError, match="did its batch finish"):
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


ENGINES = Path(__file__).resolve().parents[1] / "examples" / "grading"


def _args(command: str):
    """``command`` (a ``sdverify ...`` line) as the CLI parses it."""
    from sdverify.cli import build_parser

    argv = shlex.split(command)[1:]
    if argv[:2] == ["grade", "merge"]:
        argv[:2] = ["grade-merge"]
    return build_parser().parse_args(argv)


def test_github_actions_recipe_grades_every_shard_and_merges_their_artifacts():
    workflow = yaml.safe_load((ENGINES / "github-actions-grade.yml").read_text())
    shard_job, merge_job = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    matrix = shard_job["strategy"]["matrix"]["shard"]
    [grade] = [s["run"] for s in shard_job["steps"] if "sdverify grade" in s.get("run", "")]
    shards = [parse_shard(_args(grade.replace("${{ matrix.shard }}", str(k))).shard) for k in matrix]
    assert shards == [(k, len(matrix)) for k in range(1, len(matrix) + 1)]
    [upload] = [s["with"] for s in shard_job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["path"] == _args(grade.replace("${{ matrix.shard }}", "1")).out
    [download] = [s["with"] for s in merge_job["steps"] if s.get("uses", "").startswith("actions/download-artifact")]
    [merge_run] = [s["run"] for s in merge_job["steps"] if "sdverify grade merge" in s.get("run", "")]
    # download-artifact puts each artifact in <path>/<name>: the merge's glob must match every shard's name
    names = [upload["name"].replace("${{ matrix.shard }}", str(k)) for k in matrix]
    assert all(fnmatch.fnmatch(f"{download['path']}/{n}", _args(merge_run).outs[0]) for n in names)
    assert fnmatch.fnmatch(names[0], download["pattern"]) and merge_job["needs"] == "shard"


def test_slurm_recipe_gives_each_array_task_its_shard(tmp_path: Path):
    stub = tmp_path / "bin" / "sdverify"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "sdverify $*" >> "$CALLS"\n')
    stub.chmod(0o755)
    calls = tmp_path / "calls"
    for task in (1, 8):
        env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "CALLS": str(calls)}
        env |= {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_CPUS_PER_TASK": "4"}
        subprocess.run(["bash", str(ENGINES / "slurm-grade.sbatch")], env=env, check=True, cwd=tmp_path)
    parsed = [_args(line) for line in calls.read_text().splitlines()]
    assert [(parse_shard(a.shard), a.out, a.workers) for a in parsed] == [
        ((1, 8), "shards/1", 4),
        ((8, 8), "shards/8", 4),
    ]
    array = re.search(r"#SBATCH --array=1-(\d+)", (ENGINES / "slurm-grade.sbatch").read_text())
    assert array and int(array[1]) == 8
