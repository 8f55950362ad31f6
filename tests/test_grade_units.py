"""Unit tests of the notebook grader's parts that need no kernel."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sdverify import contract as C
from sdverify.cli import main
from sdverify.delegation import Policy
from sdverify.notebooks.exercises import ddpm_posterior_mean_std, normal_statistics
from sdverify.notebooks.output_caps import cap_notebook
from sdverify.notebooks.segmentation import Snapshot, locate_exercises, plan_snapshots
from sdverify.notebooks.shell_escapes import escape_calls, neutralise_shell
from sdverify.notebooks.spec import DEFAULT_SPEC, load_spec
from sdverify.notebooks.submissions import survey, unique_names
from sdverify.schedulers import make_scheduler


@pytest.mark.parametrize(
    ("source", "removed"),
    [
        ("!pip install -q diffusers\nimport torch", ["!pip install -q diffusers"]),
        ("if True:\n    !ls -la\nx = 1", ["!ls -la"]),
        ("%pip install torch", ["%pip install torch"]),
        ("%conda install torch", ["%conda install torch"]),
        ("%mamba install torch", ["%mamba install torch"]),
        ("files = !ls", ["!ls"]),
        ("files = %sx ls", ["%sx ls"]),
        ("%system ls", ["%system ls"]),
        ("%sc -l files = ls", ["%sc -l files = ls"]),
        ("%alias rmall rm -rf %s", ["%alias rmall rm -rf %s"]),
        ("%rm -rf ~", ["%rm -rf ~"]),  # IPython's default aliases run the shell too
        ("%automagic on", ["%automagic on"]),
        ("%time !ls", ["%time !ls"]),
        ("%timeit -n 1 -r 1 %system ls", ["%timeit -n 1 -r 1 %system ls"]),
        ("pip install diffusers", ["pip install diffusers"]),  # automagic's bare form
        ("for _ in range(1):\n    conda install torch", ["conda install torch"]),
        ("%%bash\nrm -rf /\n", ["%%bash"]),
        ("\n%%sh\nrm -rf /\n", ["%%sh"]),
        ("%%script bash\nrm -rf /", ["%%script bash"]),
        ("%%!\nrm -rf /", ["%%!"]),
        ("%%python3\nimport os; os.system('rm -rf /')", ["%%python3"]),
        ("%%python\nimport os", ["%%python"]),
        ("%%python2\nimport os", ["%%python2"]),
        ("%%pypy\nimport os", ["%%pypy"]),
        ("%%capture\n%%bash\nrm -rf /", ["%%bash"]),  # the body of %%capture is a cell again
        ("x = 3 != 4  # not a shell escape\nprint('!pip')", []),
        ("pip = 3\npip in [3]\nsystem = 1", []),
    ],
)
def test_shell_escapes_are_neutralised(source, removed):
    new, found = neutralise_shell(source)
    assert found == removed
    if removed:
        compile(new, "<cell>", "exec")  # still valid Python
        code = "\n".join(line.split("#")[0] for line in new.splitlines())  # comments name what was removed
        assert not {"rm", "install", "!", "%", "ls"} & set(re.findall(r"[\w!%]+", code)), code
    else:
        assert new == source


@pytest.mark.parametrize(
    ("source", "calls"),
    [
        ("get_ipython().system('ls')", ["system()"]),
        ("import os\nos.system('curl example.com')", ["system()"]),
        ("get_ipython().getoutput('ls')", ["getoutput()"]),
        ("get_ipython().run_line_magic('pip', 'install x')", ["run_line_magic()"]),
        ("get_ipython().run_cell_magic('bash', '', 'ls')", ["run_cell_magic()"]),
        ("import subprocess\nsubprocess.run(['ls'])", ["subprocess"]),
        ("os.popen('ls')\nos.execvp('ls', ['ls'])", ["os.popen/exec/spawn/fork"]),
        ("import pty; pty.spawn('sh')", ["pty.spawn()"]),
        ("get_ipython().automagic = True", ["automagic"]),
        ("get_ipython().alias_manager.define_alias('x', 'ls')", ["alias_manager"]),
        ("z = torch.randn(1, 4, 64, 64)\nsystem_prompt = 'x'", []),
    ],
)
def test_shell_calls_are_detected(source, calls):
    assert escape_calls(source) == calls


def test_cap_notebook_drops_the_largest_outputs_first():
    big, small = "x" * 3000, "y" * 100
    nb = new_notebook(cells=[new_code_cell("a", outputs=[new_output("stream", text=t)]) for t in (small, big, small)])
    assert cap_notebook(nb, limit=len(nbformat.writes(nb)) - 1000) == [1]
    assert [len(c.outputs) for c in nb.cells] == [1, 0, 1]
    assert cap_notebook(nb, limit=10**6) == []


def test_snapshots_go_before_the_next_exercise_heading():
    cells = [
        new_markdown_cell("# Title"),
        new_code_cell("setup = 1"),
        new_markdown_cell("## Exercise 1: load"),
        new_code_cell("a = 1"),
        new_markdown_cell("## Exercise 2: tokens"),
        new_code_cell("b = 2"),
        new_code_cell("c = 3"),
    ]
    snaps = [
        Snapshot("one", r"^#+.*Exercise\s*1\b", ("a",)),
        Snapshot("two", r"^#+.*Exercise\s*2\b", ("b",)),
        Snapshot("lost", r"^#+.*Exercise\s*9\b", ("c",)),
    ]
    plan = plan_snapshots(cells, snaps)
    assert {i: [s.id for s in v] for i, v in plan.items()} == {4: ["one"], 7: ["two", "lost"]}


LESSON_HEADINGS = [Snapshot(f"ex{n}", rf"^#+.*Exercise\s*{n}\b", ()) for n in (1, 2, 3, 4)]


def _lesson(*extra_before: NotebookNode) -> list[NotebookNode]:
    cells = [new_markdown_cell("# The lesson"), *extra_before]
    for n in (1, 2, 3, 4):
        cells += [new_markdown_cell(f"## Exercise {n}: part {n}"), new_code_cell(f"x{n} = {n}")]
    return cells


@pytest.mark.parametrize(
    "noise",
    [
        new_code_cell("# device and dtype are reused in Exercise 3 and Exercise 4\ndevice = 'cpu'"),
        new_markdown_cell("Contents:\n# Exercise 1\n# Exercise 2\n# Exercise 3\n# Exercise 4"),
        new_markdown_cell("- [Exercise 1](#e1)\n- [Exercise 2](#e2)"),
        new_code_cell("print('Exercise 2 starts below')"),
    ],
    ids=["comment-mentions-exercises", "table-of-contents-of-headings", "linked-contents", "print"],
)
def test_comments_contents_and_prints_do_not_move_any_exercise(noise: NotebookNode):
    clean, _ = locate_exercises(_lesson(), LESSON_HEADINGS)
    noisy, notes = locate_exercises(_lesson(noise), LESSON_HEADINGS)
    assert notes == [] and {k: v - 1 for k, v in noisy.items()} == clean  # shifted by the one extra cell


def test_repeated_and_out_of_order_headings_are_located_in_document_order_with_a_warning():
    cells = _lesson()
    cells.append(new_markdown_cell("## Exercise 2: recap"))  # a repeated heading after Exercise 4
    starts, notes = locate_exercises(cells, LESSON_HEADINGS)
    assert starts == {"ex1": 1, "ex2": 3, "ex3": 5, "ex4": 7} and notes == []
    swapped = [cells[0], *cells[5:7], *cells[1:5], *cells[7:9]]  # Exercise 3 moved before Exercise 1
    starts, notes = locate_exercises(swapped, LESSON_HEADINGS)
    assert starts["ex3"] == 1 and any("ex3" in n and "before the previous" in n for n in notes)
    starts, notes = locate_exercises([c for c in cells if "Exercise 4" not in c.source], LESSON_HEADINGS)
    assert "ex4" not in starts and any("ex4: no markdown heading" in n for n in notes)


def test_shipped_spec_loads_and_names_the_lesson_variables():
    spec = load_spec()
    assert all(e.policy == Policy() for e in spec.exercises)  # the defaults, written out
    assert spec.lesson.prompt == "a cat sitting on a beach at sunset" and spec.lesson.seed == 42
    names = {e.id: set(e.snapshot().names) for e in spec.exercises}
    assert {"eps_uncond", "eps_cond", "eps_cfg", "z_t", "t", "z_t_minus_1", "dtype", "device"} <= names["ex3"]
    assert {"image", "z", "clip_time", "denoise_time", "vae_time"} <= names["ex4"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('check = "token_ids"', 'check = "token_idz"'), "unknown check 'token_idz'"),
        (('component = "vae"', 'component = "vae", colour = "red"'), "bad parameters for 'param_count'"),
        (('points = 2, value = "token_ids"', 'points = -1, value = "token_ids"'), "points must be a number >= 0"),
        (("seed = 42", "seed = 42\nsteps_per_second = 3"), "unknown [lesson] keys ['steps_per_second']"),
        (("heading = '^#+.*Exercise\\s*1\\b'", "heading = '(unclosed'"), "heading is not a valid regex"),
        (('allow = ["sdverify.contract"]', 'allow = "sdverify.contract"'), "exercise 'ex1' allow: expected a list"),
        (('forbid = ["sdverify", ', 'forbid = ["sdverify reference", '), "'sdverify reference' is not a dotted name"),
    ],
)
def test_bad_specs_are_rejected_with_the_reason(tmp_path, edit, words):
    text = DEFAULT_SPEC.read_text()
    assert edit[0] in text
    bad = tmp_path / "spec.toml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ValueError, match=None) as info:
        load_spec(bad)
    assert words in str(info.value)


def test_ddpm_posterior_recovers_mean_and_noise():
    scheduler = make_scheduler("ddpm")
    scheduler.set_timesteps(C.NUM_INFERENCE_STEPS)
    t = scheduler.timesteps[0]
    gen = torch.Generator().manual_seed(123)
    sample, eps = torch.randn(C.LATENT_SHAPE, generator=gen), torch.randn(C.LATENT_SHAPE, generator=gen)
    mean, std = ddpm_posterior_mean_std(scheduler, eps, t, sample)
    stepped = scheduler.step(eps, t, sample, generator=torch.Generator().manual_seed(7)).prev_sample
    noise = torch.randn(C.LATENT_SHAPE, generator=torch.Generator().manual_seed(7))
    assert std > 0
    assert torch.allclose(stepped.double(), mean + std * noise.double(), atol=1e-5)


def test_normal_statistics_names_uniform_draws():
    gen = torch.Generator().manual_seed(0)
    assert normal_statistics(torch.randn(C.LATENT_SHAPE, generator=gen))[2] is None
    assert "torch.rand" in normal_statistics(torch.rand(C.LATENT_SHAPE, generator=gen))[2]
    assert "not those of a standard normal" in normal_statistics(2 * torch.randn(C.LATENT_SHAPE, generator=gen))[2]


def test_survey_and_unique_names(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    for p in ("a/alice.ipynb", "b/alice.ipynb", "b/bob.py", "b/notes.txt", ".ipynb_checkpoints/alice.ipynb"):
        (tmp_path / p).write_text("{}")
    found = survey([tmp_path])
    assert [e.file for e in found.submissions] == ["a/alice.ipynb", "b/alice.ipynb", "b/bob.py"]
    names = unique_names(found.submissions)
    assert re.fullmatch(r"alice-[0-9a-f]{8}", names[0]) and re.fullmatch(r"alice-[0-9a-f]{8}", names[1])
    assert names[0] != names[1] and names[2] == "bob"
    assert [s.file for s in found.skipped] == [".ipynb_checkpoints/", "b/notes.txt"]
    [alone] = survey([tmp_path / "b" / "notes.txt"]).submissions  # named alone: that student's error
    assert alone.refusal and "cannot grade a .txt file" in alone.refusal


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["grade", "missing_folder"], "no such file or folder"),
        (["grade", ".", "--workers", "0"], "--workers must be >= 1"),
        (["grade", ".", "--spec", "nope.toml"], "spec file nope.toml not found"),
        (["grade", ".", "--allow", "*", "--allow", "1x"], "--allow: '1x' is not a dotted name"),
    ],
)
def test_cli_usage_errors(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    assert words in capsys.readouterr().err


def test_cli_empty_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "no .ipynb or .py submissions found" in capsys.readouterr().err


def test_default_spec_path_exists():
    assert Path(DEFAULT_SPEC).is_file()


def test_py_submission_is_graded_by_the_checker_one_exercise_per_function(monkeypatch, tmp_path):
    from sdverify import checker
    from sdverify.checker.report import CheckEntry, SubmissionReport
    from sdverify.notebooks.batch import grade_batch
    from sdverify.notebooks.grading import Settings

    calls = []

    def fake_check_submission(target, **options):
        calls.append((target, options))
        return SubmissionReport(
            target,
            [
                CheckEntry(
                    "cfg_combine.formula", "cfg_combine", False, 0.0, 2.0, "the two predictions are swapped", "CFG"
                ),
                CheckEntry("tokenize.reference", "tokenize", True, 1.0, 1.0, ""),
            ],
            None,
            0.5,
        )

    monkeypatch.setattr(checker, "check_submission", fake_check_submission)
    module = tmp_path / "alice.py"
    module.write_text("def cfg_combine(u, c, w):\n    return c + w * (u - c)\n")
    out = tmp_path / "out"
    [grade] = grade_batch(
        [module],
        out,
        spec=load_spec(),
        settings=Settings(cell_timeout=30, notebook_timeout=90, sandbox="process"),
        workers=1,
        progress=False,
    )
    expected = {
        "preset": "tiny",
        "weights": None,
        "timeout": 30,
        "total_timeout": 90,
        "sandbox": "process",
        "allow": (),
        "probe_seed": None,
    }
    assert calls == [(str(module.resolve()), expected)]
    assert (grade.kind, [e.id for e in grade.exercises], grade.score, grade.max_score) == (
        "module",
        ["cfg_combine", "tokenize"],
        1,
        3,
    )
    assert "swapped" in (out / "submissions" / "alice" / "report.html").read_text()
    assert (out / "grades.csv").read_text().splitlines()[0] == (
        "student,file,cfg_combine,tokenize,total,max_total,error,isolation"
    )


def test_a_notebook_pipeline_call_is_charged_to_its_exercise_from_source_and_tripwire():
    from sdverify.delegation import watch_lists
    from sdverify.notebooks.grading import _section
    from sdverify.notebooks.runner import RunResult
    from sdverify.notebooks.uses import notebook_uses, outside_exercises

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "examples" / "notebooks" / "delegating_pipeline.ipynb", 4)
    nb.cells.insert(1, new_code_cell("import sdverify.reference as R"))  # before the first exercise
    spec = load_spec()
    starts, _ = locate_exercises(nb.cells, [e.snapshot() for e in spec.exercises])
    pipeline = ["diffusers.StableDiffusionPipeline", "diffusers.DiffusionPipeline"]
    records = [
        {"how": "call", "names": pipeline, "where": 7, "cell": 11},
        {"how": "import", "names": ["sdverify.reference"], "where": 1, "cell": 1},
        {"how": "bogus", "names": [], "cell": 11},  # forged: named in a note, never trusted
    ]
    run = RunResult({}, {}, [], 0.0, nb, starts, [], tripwire=records)
    watch = watch_lists(e.policy for e in spec.exercises)
    uses, notes = notebook_uses(run, watch, lambda index: _section(run, index))
    forbidden = {(u.where, u.names[0], u.at) for u in uses if Policy().broken_by(u)}
    assert forbidden == {
        ("ex4", "diffusers.StableDiffusionPipeline", "cell 11, line 11"),
        ("ex4", "diffusers.StableDiffusionPipeline", "cell 11, at run time"),
        ("", "sdverify.reference", "cell 1, line 1"),
        ("", "sdverify.reference", "cell 1, at run time"),
    }
    assert any("malformed" in n for n in notes)
    notes = outside_exercises(uses, lambda u: Policy().broken_by(u) is not None)
    assert notes == [
        f"delegation: imports sdverify.reference ({at}) before the first exercise (charged to no exercise)"
        for at in ("cell 1, line 1", "cell 1, at run time")
    ]


def test_one_runner_per_kind_and_a_clear_error_for_others(tmp_path):
    from sdverify.notebooks.grading import RUNNERS, runner_for
    from sdverify.notebooks.submissions import SUFFIXES

    assert runner_for(tmp_path / "a.ipynb").kind == "notebook" and runner_for(tmp_path / "a.py").kind == "module"
    assert SUFFIXES == tuple(RUNNERS)
    with pytest.raises(ValueError, match=r"a\.txt: cannot grade a \.txt file; expected one of \['\.ipynb', '\.py'\]"):
        runner_for(tmp_path / "a.txt")


def test_modules_and_notebooks_share_one_offline_hub_cache(tmp_path):
    """Real weights too: a .py's top-level from_pretrained(<hub id>) resolves to them offline."""
    from sdverify import zoo
    from sdverify.checker.parent import _hub_env

    real = tmp_path / "weights"
    real.mkdir()
    env = _hub_env(real)
    cache = Path(env["HF_HUB_CACHE"])
    assert cache == zoo.hub_cache_for(real.resolve())  # the notebooks' kernels get this one too
    assert zoo.snapshot_dir(cache, "local").resolve() == real.resolve()
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
