"""Gradescope: ``results.json`` from a grade, the ``autograder.zip`` bundle, and its run.

The laptop tier checks the conversion (format, visibility, what a hidden exercise shows),
the zip's contents and the run's handling of unusable submission folders.  The slow tier
runs the bundle end to end as Gradescope would, in a temporary ``$AUTOGRADER_ROOT``:
``setup.sh`` (installs skipped: ``$SDVERIFY_PYTHON`` is this interpreter; the zoo is built
into the root) and ``run_autograder`` on sample notebooks and modules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
from synthetic_class import module_grade

from sdverify import isolation
from sdverify.autograder.bundle import SCRIPTS, build_gradescope_bundle
from sdverify.autograder.run import UNFINISHED, find_submission, run
from sdverify.cli import main
from sdverify.grading.gradescope import to_gradescope
from sdverify.grading.model import CheckEntry
from sdverify.notebooks.grading import ExerciseGrade, Settings, SubmissionGrade
from sdverify.notebooks.spec import DEFAULT_SPEC, VISIBILITIES, load_spec

# The bundle's wheel is built from this checkout, also where the sdverify under test is an installed
# wheel (.ci/run's second environment), which knows no checkout of its own.
CHECKOUT = Path(__file__).resolve().parents[1]
EXAMPLES = CHECKOUT / "examples"
# Gradescope's results.json: keys and values it accepts (gradescope-autograders.readthedocs.io, specs).
TOP_KEYS = {"score", "execution_time", "output", "output_format", "visibility", "stdout_visibility", "tests"}
STATUSES = {"passed", "failed"}
SECRET = "got -2.71781, expected 3.3156"  # expected values of a hidden check: never shown to students


def _grade() -> SubmissionGrade:
    """One exercise per visibility; the hidden one fails a check naming its mistake and one naming none."""

    def check(id: str, passed: bool, points: float, message: str = "", mistake: str | None = None) -> CheckEntry:
        worth = points if passed else 0.0
        return CheckEntry(id, "ex", passed, worth, points, message, f"clause of {id}", mistake=mistake)

    swapped = "the two predictions are swapped in the guidance formula"
    return SubmissionGrade(
        "alice",
        "/subs/alice.ipynb",
        "notebook",
        [
            ExerciseGrade("ex1", "Exercise 1", [check("a", True, 1), check("b", False, 2, "b is wrong")]),
            ExerciseGrade("ex2", "Exercise 2", [check("c", False, 3, "c is wrong")], visibility="after_due_date"),
            ExerciseGrade(
                "ex3",
                "Exercise 3",
                [
                    check("eps_cfg", False, 2, f"{swapped}\n16384/16384 elements differ, {SECRET}", "cfg_swapped"),
                    check("z_next", False, 2, f"16384 elements differ, {SECRET}"),
                    check("t", True, 1),
                ],
                notes=["cell 7: NameError"],
                visibility="hidden",
            ),
        ],
        seconds=12.4,
        isolation="bwrap",
    )


def test_results_json_has_gradescope_fields_and_the_grade_s_points():
    grade = _grade()
    results = to_gradescope(grade)
    json.dumps(results)  # serialisable as is
    assert set(results) == TOP_KEYS
    assert results["score"] == grade.score == 2  # read from the grade, not recomputed
    assert results["execution_time"] == 12 and results["output_format"] == "text"
    assert "isolation: bwrap" in results["output"] and "Exercise 3: cell 7: NameError" in results["output"]
    scored = [t for t in results["tests"] if "score" in t]
    assert len(scored) == sum(len(e.checks) for e in grade.exercises)
    assert sum(t["score"] for t in scored) == results["score"]
    assert sum(t["max_score"] for t in scored) == grade.max_score
    for test in results["tests"]:
        assert test["status"] in STATUSES and test["visibility"] in VISIBILITIES
        assert isinstance(test["name"], str) and isinstance(test["output"], str)
    by_name = {t["name"]: t for t in results["tests"]}
    assert by_name["Exercise 1: b"]["output"] == "contract: clause of b\nb is wrong"
    assert by_name["Exercise 1: a"] == {
        "name": "Exercise 1: a",
        "score": 1.0,
        "max_score": 1.0,
        "status": "passed",
        "output": "clause of a",
        "visibility": "visible",
    }


def test_each_check_takes_its_exercise_s_visibility():
    results = to_gradescope(_grade())
    visibility = {t["name"]: t["visibility"] for t in results["tests"] if "score" in t}
    assert visibility == {
        "Exercise 1: a": "visible",
        "Exercise 1: b": "visible",
        "Exercise 2: c": "after_due_date",
        "Exercise 3: eps_cfg": "hidden",
        "Exercise 3: z_next": "hidden",
        "Exercise 3: t": "hidden",
    }


def test_a_hidden_exercise_shows_students_the_named_mistake_and_nothing_of_its_checks():
    results = to_gradescope(_grade())
    [summary] = [t for t in results["tests"] if t["visibility"] == "visible" and t["name"].startswith("Exercise 3")]
    assert summary["name"] == "Exercise 3 (hidden checks)" and summary["status"] == "failed"
    assert "score" not in summary and "max_score" not in summary  # the points are the hidden tests'
    assert summary["output"].splitlines() == [
        "1/3 hidden checks passed",
        "mistake found: the two predictions are swapped in the guidance formula",
        "1 failed check(s) recognise no known mistake; their details are not shown",
    ]
    for leak in (SECRET, "clause of", "eps_cfg", "z_next", "contract:"):
        assert leak not in summary["output"]
    # Instructors still see everything in the hidden tests themselves.
    hidden = {t["name"]: t["output"] for t in results["tests"] if t["visibility"] == "hidden"}
    assert SECRET in hidden["Exercise 3: z_next"]


def test_an_all_passing_hidden_exercise_says_so():
    grade = _grade()
    hidden = grade.exercises[2]
    hidden.checks = [c for c in hidden.checks if c.passed]
    [summary] = [t for t in to_gradescope(grade)["tests"] if t["name"].endswith("(hidden checks)")]
    assert (summary["status"], summary["output"]) == ("passed", "1/1 hidden checks passed")


def test_notebook_checks_record_the_mistake_they_recognise():
    import torch

    from sdverify.notebooks.exercises import Lesson, latent_noise
    from sdverify.untrusted.value import UntrustedValue

    ctx = SimpleNamespace(lesson=Lesson())  # the lesson's facts are all this check reads of its context

    def lookup(x: torch.Tensor):
        meta = {"kind": "tensor", "dtype": str(x.dtype), "device": "cpu", "shape": list(x.shape)}
        return lambda name: UntrustedValue(name, meta, {name: x}) if name == "z_t" else UntrustedValue(name, {})

    gen = torch.Generator().manual_seed(0)
    uniform = latent_noise(ctx, lookup(torch.rand(1, 4, 64, 64, generator=gen)))
    entry = CheckEntry.from_result("ex3", uniform, 2.0)
    assert entry.mistake == "rand_not_randn"
    assert entry.named_mistake == entry.message.splitlines()[0] and "torch.rand" in entry.named_mistake
    scaled = CheckEntry.from_result("ex3", latent_noise(ctx, lookup(3 * torch.randn(1, 4, 64, 64, generator=gen))))
    assert not scaled.passed and scaled.named_mistake is None  # wrong, but no known mistake


def _spec_with(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_SPEC.read_text()
    assert old in text
    path = tmp_path / "spec.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_spec_visibility_reaches_the_exercises_and_bad_values_are_named(tmp_path):
    spec = load_spec(_spec_with(tmp_path, 'id = "ex3"\n', 'id = "ex3"\nvisibility = "hidden"\n'))
    assert {e.id: e.visibility for e in spec.exercises} == {
        "ex1": "visible",
        "ex2": "visible",
        "ex3": "hidden",
        "ex4": "visible",
    }
    with pytest.raises(ValueError, match=r"visibility 'secret'; expected one of \['visible', 'after_due_date'"):
        load_spec(_spec_with(tmp_path, 'id = "ex3"\n', 'id = "ex3"\nvisibility = "secret"\n'))
    with pytest.raises(ValueError, match=r"unknown exercise 'ex3' keys \['visiblity'\]; did you mean 'visibility'\?"):
        load_spec(_spec_with(tmp_path, 'id = "ex3"\n', 'id = "ex3"\nvisiblity = "hidden"\n'))


def test_bundle_holds_the_scripts_the_wheel_the_spec_and_its_settings(tmp_path):
    spec = _spec_with(tmp_path, 'id = "ex3"\n', 'id = "ex3"\nvisibility = "hidden"\n')
    settings = Settings(preset="tiny", seed=3, timeout=600, call_timeout=120)
    target = build_gradescope_bundle(tmp_path / "out", spec_path=spec, settings=settings, checkout=CHECKOUT)
    assert target == tmp_path / "out" / "autograder.zip"
    with zipfile.ZipFile(target) as archive:
        infos = {i.filename: i for i in archive.infolist()}
        [wheel] = [n for n in infos if n.endswith(".whl")]
        assert set(infos) == {*SCRIPTS, "autograder.env", "spec.toml", "constraints.txt", wheel}
        for name in SCRIPTS:  # executable, at the zip's root, as Gradescope requires
            assert infos[name].external_attr >> 16 & 0o111, name
            archive.extract(name, tmp_path / "source")
        assert archive.read("spec.toml").decode() == spec.read_text()
        assert archive.read("constraints.txt") == (CHECKOUT / "constraints.txt").read_bytes()
        env = dict(line.split("=", 1) for line in archive.read("autograder.env").decode().splitlines())
        archive.extract(wheel, tmp_path)
    assert env["SDVERIFY_PRESET"] == "tiny" and env["SDVERIFY_WHEEL"] == wheel
    assert (env["SDVERIFY_SEED"], env["SDVERIFY_TIMEOUT"], env["SDVERIFY_CELL_TIMEOUT"]) == ("3", "600", "120")
    assert env["SDVERIFY_TORCH"] and "+" not in env["SDVERIFY_TORCH"]
    with zipfile.ZipFile(tmp_path / wheel) as built:
        names = set(built.namelist())
    for needed in ("sdverify/autograder/run.py", "sdverify/autograder/templates/run_autograder", "sdverify/cli.py"):
        assert needed in names
    assert any(n.startswith("sdverify/_data/tokenizer/") for n in names)
    assert "sdverify/notebooks/kernel_program.py" in names  # read as text, so it must ship as a file
    assert not any("metamorphic" in n for n in names)  # the test suite's (tests/metamorphic), not shipped
    for name in SCRIPTS:
        assert subprocess.run(["bash", "-n", str(tmp_path / "source" / name)]).returncode == 0


def test_bundle_rejects_a_bad_spec_before_building(tmp_path, capsys):
    bad = _spec_with(tmp_path, 'check = "token_ids"', 'check = "token_idz"')
    assert main(["autograder", "gradescope", "--out", str(tmp_path / "out"), "--spec", str(bad)]) == 2
    assert "unknown check 'token_idz'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_submission_is_the_one_notebook_else_the_one_module(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "helper.py").write_text("x = 1\n")
    assert find_submission(tmp_path) == (tmp_path / "sub" / "helper.py").resolve()
    (tmp_path / "lesson.ipynb").write_text("{}")
    assert find_submission(tmp_path) == (tmp_path / "lesson.ipynb").resolve()  # a helper beside it is no rival
    (tmp_path / "sub" / "copy.ipynb").write_text("{}")
    with pytest.raises(ValueError, match=r"several notebooks in the submission: \['lesson.ipynb', 'sub/copy.ipynb'\]"):
        find_submission(tmp_path)


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ((), "no .ipynb notebook or .py module in the submission (found no files)"),
        (("report.pdf",), "(found ['report.pdf'])"),
        (("a.py", "b.py"), "several .py modules in the submission: ['a.py', 'b.py']; submit exactly one"),
    ],
)
def test_an_unusable_submission_gets_a_result_that_says_why(tmp_path, files, words):
    (tmp_path / "submission").mkdir()
    for name in files:
        (tmp_path / "submission" / name).write_text("")
    results = run(tmp_path, load_spec(), Settings())
    assert json.loads((tmp_path / "results" / "results.json").read_text()) == results
    assert results["score"] == 0 and words in results["output"]
    assert [t["status"] for t in results["tests"]] == ["failed"]
    assert UNFINISHED not in results["output"]


def test_run_grades_a_module_through_the_checker_and_writes_its_points(monkeypatch, tmp_path):
    from sdverify import checker

    def fake_check_submission(target, **options):
        checks = [
            CheckEntry("cfg_combine.cfg.swapped", "cfg_combine", False, 0.0, 2.0, "swapped", "not swapped"),
            CheckEntry("tokenize.reference", "tokenize", True, 1.0, 1.0, ""),
        ]
        return module_grade(target, checks, seconds=0.5)

    monkeypatch.setattr(checker, "check_submission", fake_check_submission)
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / "student.py").write_text("def tokenize(tokenizer, prompt):\n    return None\n")
    assert main(["autograder", "run", "--root", str(tmp_path), "--sandbox", "process"]) == 0
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 1.0
    assert [(t["name"], t["status"]) for t in results["tests"]] == [
        ("cfg_combine(): cfg_combine.cfg.swapped", "failed"),
        ("tokenize(): tokenize.reference", "passed"),
    ]


# What runs during a script (the grader, the zoo build) rewrites the rest of that script in place
# and appends to it, as a submission running as the grader's user could.  It stands in for the
# interpreter the script calls: one short Python start, no sdverify.
REWRITER = """#!{python} -IS
import pathlib, sys
script, marker, results = pathlib.Path({script!r}), {marker!r}, pathlib.Path({results!r})
data = script.read_bytes()
end = data.index(b"\\n", data.index({call!r})) + 1  # just after the line that called us
inject = f'touch "{{marker}}"; exit 0\\n'.encode()
script.write_bytes(data[:end] + inject + data[end:])
with open(script, "ab") as f:
    f.write(inject)
results.parent.mkdir(exist_ok=True)
results.write_text('{{"score": 7}}')
"""


@pytest.mark.parametrize(("script", "call"), [("run_autograder", b"--call-timeout"), ("setup.sh", b"zoo install")])
def test_the_scripts_are_parsed_whole_before_anything_runs(tmp_path, script, call):
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "sdverify" / "autograder" / "templates" / script, source)
    (source / "autograder.env").write_text("SDVERIFY_PRESET=tiny\nSDVERIFY_TIMEOUT=60\nSDVERIFY_CELL_TIMEOUT=30\n")
    marker, results = tmp_path / "injected", tmp_path / "results" / "results.json"
    fake = tmp_path / "python"
    fake.write_text(
        REWRITER.format(
            python=sys.executable, script=str(source / script), marker=str(marker), results=str(results), call=call
        )
    )
    fake.chmod(0o755)
    env = {**os.environ, "AUTOGRADER_ROOT": str(tmp_path), "SDVERIFY_PYTHON": str(fake)}
    done = subprocess.run(["bash", str(source / script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (source / script).read_bytes().count(b"injected") == 2  # the rewrite happened...
    assert not marker.exists()  # ...and ran neither in place nor appended
    assert json.loads(results.read_text()) == {"score": 7}


# --- the bundle end to end, as Gradescope runs it (slow tier) ---------------------------


@pytest.fixture(scope="module")
def gradescope_root() -> Iterator[Path]:
    """A Gradescope root made from a fresh bundle (Exercise 3 hidden): source/ unzipped, setup.sh run.

    In a folder others may pass, as ``/autograder`` is: the sandbox's uid reads the zoo there."""
    base = Path(tempfile.mkdtemp(prefix="sdverify-gradescope-"))
    base.chmod(0o755)
    try:
        yield _gradescope_root(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _gradescope_root(base: Path) -> Path:
    spec = _spec_with(base, 'id = "ex3"\n', 'id = "ex3"\nvisibility = "hidden"\n')
    # Cells as slow as on a loaded 2-core machine (test_grade_samples' figure), well under the default.
    settings = Settings(call_timeout=100)
    bundle = build_gradescope_bundle(base / "out", spec_path=spec, settings=settings, checkout=CHECKOUT)
    root = base / "autograder"
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
    done = subprocess.run(["bash", str(root / "source" / "setup.sh")], env=_env(root), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list((root / "sdverify-cache").glob("tiny-seed0-*"))  # the zoo, prebuilt into the root
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "AUTOGRADER_ROOT": str(root), "SDVERIFY_PYTHON": sys.executable}


def _run_autograder(root: Path, *submissions: Path, wrap: list[str] | None = None, **env: str) -> dict:
    shutil.rmtree(root / "submission", ignore_errors=True)
    (root / "submission").mkdir()
    for path in submissions:
        shutil.copy(path, root / "submission")
    done = subprocess.run(
        [*(wrap or []), "bash", str(root / "source" / "run_autograder")],
        env={**_env(root), **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert set(results) == TOP_KEYS
    scored = [t for t in results["tests"] if "score" in t]
    assert results["score"] == sum(t["score"] for t in scored)
    for test in results["tests"]:
        assert test["status"] in STATUSES and test["visibility"] in VISIBILITIES
    return results


def _failed(results: dict) -> set[str]:
    return {t["name"] for t in results["tests"] if t["status"] == "failed" and "score" in t}


def _spec_test_names(spec_path: Path, failing: dict[str, dict[str, str]]) -> set[str]:
    titles = {e.id: e.title for e in load_spec(spec_path).exercises}
    return {f"{titles[exercise]}: {check}" for exercise, checks in failing.items() for check in checks}


@pytest.mark.slow
def test_bundle_grades_the_correct_notebook_with_full_marks(gradescope_root):
    results = _run_autograder(gradescope_root, EXAMPLES / "notebooks" / "correct.ipynb")
    assert _failed(results) == set()
    assert results["score"] == load_spec(gradescope_root / "source" / "spec.toml").max_points
    hidden = [t for t in results["tests"] if t["visibility"] == "hidden" and "score" in t]
    [summary] = [t for t in results["tests"] if t["name"].endswith("(hidden checks)")]
    assert hidden and summary["output"] == f"{len(hidden)}/{len(hidden)} hidden checks passed"
    assert summary["status"] == "passed"


@pytest.mark.slow
def test_bundle_grades_a_mistaken_notebook_and_hides_exercise_3_s_checks(gradescope_root):
    from test_grade_samples import EXPECTED

    spec_path = gradescope_root / "source" / "spec.toml"
    results = _run_autograder(gradescope_root, EXAMPLES / "notebooks" / "mistake_cfg_swapped.ipynb")
    assert _failed(results) == _spec_test_names(spec_path, EXPECTED["mistake_cfg_swapped"])
    assert results["score"] == sum(t["max_score"] for t in results["tests"] if t["status"] == "passed")
    hidden = [t for t in results["tests"] if t["name"].startswith("Exercise 3") and "score" in t]
    assert hidden and all(t["visibility"] == "hidden" for t in hidden)
    [summary] = [t for t in results["tests"] if t["name"].endswith("(hidden checks)")]
    assert summary["visibility"] == "visible" and summary["status"] == "failed"
    assert "mistake found:" in summary["output"] and "swapped" in summary["output"]
    assert "eps_cfg" not in summary["output"] and "contract:" not in summary["output"]


def _by_function(results: dict) -> dict[str, set[str]]:
    """Module tests by API function (their names start ``<function>(): ``): the statuses seen."""
    found: dict[str, set[str]] = {}
    for test in results["tests"]:
        found.setdefault(test["name"].split("(): ")[0], set()).add(test["status"])
    return found


@pytest.mark.slow
def test_bundle_grades_a_sample_module(gradescope_root):
    from test_checker_catalog import WRONG

    check_id, words = WRONG["wrong_cfg_swapped"]
    results = _run_autograder(gradescope_root, EXAMPLES / "submissions" / "wrong_cfg_swapped.py")
    [mistaken] = [t for t in results["tests"] if t["name"] == f"cfg_combine(): {check_id}"]
    assert mistaken["status"] == "failed" and words in mistaken["output"]
    # The module defines cfg_combine only: every other function fails as not implemented.
    missing = [t for t in results["tests"] if t["name"].split("(): ")[0] not in ("cfg_combine", "sandbox")]
    assert missing and all(t["status"] == "failed" and "not implemented" in t["output"] for t in missing)
    # Its gates pass, but no case matches the reference: no points (issue 11's points model).
    assert _by_function(results)["cfg_combine"] == {"passed", "failed"} and results["score"] == 0


@pytest.mark.slow
def test_bundle_keeps_the_points_of_the_other_functions_when_one_hangs(gradescope_root, tmp_path):
    module = tmp_path / "student.py"
    module.write_text(  # its own tokenize and encode_prompt (importing the kit's is delegation)
        "import torch\n\n\n"
        "def tokenize(tokenizer, prompt):\n"
        "    return tokenizer(prompt, padding='max_length', max_length=tokenizer.model_max_length,\n"
        "                     truncation=True, return_tensors='pt').input_ids\n\n\n"
        "def encode_prompt(tokenizer, text_encoder, prompt):\n"
        "    with torch.no_grad():\n"
        "        return text_encoder(tokenize(tokenizer, prompt).to(text_encoder.device))[0]\n\n\n"
        "def cfg_combine(u, c, w):\n    while True:\n        pass\n"
    )
    settings = gradescope_root / "source" / "autograder.env"
    original = settings.read_text()
    settings.write_text(original.replace("SDVERIFY_CELL_TIMEOUT=100", "SDVERIFY_CELL_TIMEOUT=10"))
    try:
        results = _run_autograder(gradescope_root, module)
    finally:
        settings.write_text(original)
    by_function = _by_function(results)
    assert by_function["tokenize"] == by_function["encode_prompt"] == {"passed"}
    cfg = [t for t in results["tests"] if t["name"].startswith("cfg_combine()")]
    assert "failed" in by_function["cfg_combine"] and sum(t.get("score", 0) for t in cfg) == 0  # gates may pass
    assert any("timed out" in t["output"] for t in results["tests"] if t["name"].startswith("cfg_combine()"))
    kept = [t for t in results["tests"] if t["name"].startswith(("tokenize()", "encode_prompt()"))]
    assert results["score"] >= sum(t["max_score"] for t in kept) > 0


# --- a submission that tries to forge its own grade (issue 21) --------------------------------

# The last cell of a correct notebook: find --root in a parent's command line, then rewrite the
# running run_autograder after `status=$?`, write results.json, change the bundle's settings, and
# leave a daemon that keeps writing results.json after the grader has.  WITNESS (a folder anyone
# may write, outside the sandbox's view under bwrap) records that the attack found its target and
# that the daemon outlived the grader.
FORGERY = """import os, pathlib, subprocess, sys
forged = '{"score": 1000, "output": "forged", "tests": []}'
witness = pathlib.Path(WITNESS)
pid = os.getpid()
for _ in range(8):
    try:
        pid = int(pathlib.Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[1])
        argv = pathlib.Path(f'/proc/{pid}/cmdline').read_bytes().split(b'\\0')
    except (OSError, ValueError, IndexError):
        break
    if b'--root' not in argv:
        continue
    root = pathlib.Path(argv[argv.index(b'--root') + 1].decode())
    script, results = root / 'source' / 'run_autograder', root / 'results' / 'results.json'
    inject = f"printf '%s' '{forged}' > '{results}'; exit 0\\n".encode()
    attempts = (
        lambda: script.write_bytes(script.read_bytes().replace(b'status=$?\\n', b'status=$?\\n' + inject)),
        lambda: results.write_text(forged),
        lambda: (root / 'source' / 'autograder.env').write_text('SDVERIFY_PRESET=forged\\n'),
    )
    for attempt in attempts:
        try:
            attempt()
        except OSError:
            pass
    (witness / 'found').write_text(str(root))
    daemon = (f'import time, pathlib\\nfor _ in range(150):\\n    pathlib.Path({str(witness / "daemon")!r}).touch()\\n'
              f'    try:\\n        pathlib.Path({str(results)!r}).write_text({forged!r})\\n'
              '    except OSError:\\n        pass\\n    time.sleep(0.2)')
    subprocess.Popen([sys.executable, '-c', daemon], start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    break"""


def _as_on_gradescope() -> list[str]:
    """A wrapper under which the sandbox's uid can run this Python, as on Gradescope (whose venv is
    ``/autograder/venv``): a runtime under a private folder (pyenv under ``/root``) is shown through
    a passable one, in a mount namespace of the grader's own (root's bwrap, nothing else changed)."""
    runtime = isolation.runtime_paths()
    blocked = {p for path in runtime for p in path.parents if p.is_dir() and not p.stat().st_mode & 0o001}
    tops = sorted(p for p in blocked if not any(q in blocked for q in p.parents))
    if not tops:
        return []
    out = ["bwrap", "--dev-bind", "/", "/"]
    for top in tops:
        out += ["--perms", "0755", "--tmpfs", str(top)]
        for child in sorted({top / path.relative_to(top).parts[0] for path in runtime if top in path.parents}):
            out += ["--dev-bind", str(child), str(child)]
    return [*out, "--"]


@pytest.mark.slow
@pytest.mark.parametrize("level", ["bwrap", "process"])
def test_a_submission_cannot_forge_its_grade(gradescope_root, tmp_path, level):
    if level == "bwrap" and isolation.bwrap_problem() is not None:
        pytest.skip(f"bwrap cannot isolate here: {isolation.bwrap_problem()}")
    if level == "process" and os.geteuid() != 0:
        pytest.skip("the grader is not root (Gradescope's is): the kernel runs as the grader's own user")
    witness = Path(tempfile.mkdtemp(prefix="sdverify-witness-"))
    witness.chmod(0o777)
    notebook = nbformat.read(str(EXAMPLES / "notebooks" / "correct.ipynb"), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(FORGERY.replace("WITNESS", repr(str(witness)))))
    path = tmp_path / "forger.ipynb"
    nbformat.write(notebook, str(path))
    path.chmod(0o644)
    source = gradescope_root / "source"
    before = {name: (source / name).read_bytes() for name in ("run_autograder", "autograder.env")}
    wrap = _as_on_gradescope() if level == "process" else []
    try:
        results = _run_autograder(gradescope_root, path, wrap=wrap, SDVERIFY_SANDBOX=level)
        (witness / "daemon").unlink(missing_ok=True)
        time.sleep(3)  # the daemon, where it outlived the grader, writes every 0.2 s
        after = json.loads((gradescope_root / "results" / "results.json").read_text())
        # Under bwrap the attack finds no grader; at the process level it does, but its daemon is
        # killed with every process of the run's uid when the run ends.
        live = {"found": level == "process", "daemon": False}
        assert {name: (witness / name).exists() for name in live} == live
    finally:
        shutil.rmtree(witness, ignore_errors=True)
    assert after == results and results["score"] == load_spec(source / "spec.toml").max_points
    assert results["output"].startswith(f"isolation: {level}")
    assert {name: (source / name).read_bytes() for name in before} == before
