"""A lesson written for a GPU, graded on a CPU when its spec says so; offline preambles.

``examples/gpu_lesson`` is a lesson of the shape course notebooks have (hub login first,
``torch_device = "cuda"``, float16, ``autocast("cuda")``, LMS built by hand, a data file).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sdverify.notebooks.batch import grade_batch
from sdverify.notebooks.grading import Settings
from sdverify.notebooks.runner import run_notebook
from sdverify.notebooks.segmentation import Snapshot
from sdverify.notebooks.shell_escapes import neutralise_shell
from sdverify.notebooks.spec import Setup, load_spec

LESSON = Path(__file__).resolve().parents[1] / "examples" / "gpu_lesson"


def _spec(tmp_path: Path, old: str, new: str) -> Path:
    """The lesson's spec edited (``old`` -> ``new``) into ``tmp_path``, with its data file."""
    text = (LESSON / "spec.toml").read_text()
    assert old in text
    (tmp_path / "cat.png").write_bytes((LESSON / "cat.png").read_bytes())
    path = tmp_path / "spec.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_lessons_spec_maps_devices_ships_files_and_names_packages():
    setup = load_spec(LESSON / "spec.toml").setup
    assert setup.map_device
    assert setup.files == (("cat.png", (LESSON / "cat.png").resolve()),)
    assert setup.packages == ("tqdm",) and setup.missing_packages() == []
    assert load_spec().setup == Setup()  # the shipped lesson needs none of it


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("map_device = true", 'map_device = "cuda"', "map_device must be true or false, got 'cuda'"),
        ('files = ["cat.png"]', 'files = ["dog.png"]', "files: 'dog.png' not found (looked for"),
        ('files = ["cat.png"]', 'files = ["../cat.png"]', "'../cat.png' must be a path inside the spec's folder"),
        ('files = ["cat.png"]', 'files = "cat.png"', "files must be a list of strings, got 'cat.png'"),
        ('packages = ["tqdm"]', 'packages = ["tqdm; rm -rf"]', "packages: ['tqdm; rm -rf'] are not package names"),
        ("map_device = true", "map_devices = true", "unknown [lesson] keys ['map_devices']"),
    ],
)
def test_bad_setups_are_rejected_at_load(tmp_path, old, new, words):
    with pytest.raises(ValueError) as info:
        load_spec(_spec(tmp_path, old, new))
    assert words in str(info.value)


def test_missing_packages_stop_the_batch_before_any_notebook_runs(tmp_path):
    spec = load_spec(_spec(tmp_path, 'packages = ["tqdm"]', 'packages = ["tqdm", "sdverify-no-such-package"]'))
    with pytest.raises(ValueError) as info:
        grade_batch([LESSON / "lesson.ipynb"], tmp_path / "out", spec=spec, settings=Settings(), workers=1)
    message = str(info.value)
    assert "['sdverify-no-such-package']" in message and "pip install sdverify-no-such-package" in message
    assert not (tmp_path / "out").exists()


def test_the_setup_enters_the_definitions_only_once_set(tmp_path):
    keys = 'map_device = true\nfiles = ["cat.png"]\npackages = ["tqdm"]\n'
    bare = load_spec(_spec(tmp_path, keys, ""))
    off = load_spec(_spec(tmp_path, keys, "map_device = false\n"))
    on = load_spec(_spec(tmp_path, keys, "map_device = true\n"))
    assert bare.setup == off.setup == Setup() and bare.definitions() == off.definitions()
    assert all(a != b for a, b in zip(bare.definitions().values(), on.definitions().values()))


def test_a_gpu_lessons_preamble_lines_are_neutralised():
    cell = "!nvidia-smi\n!pip install -q --upgrade transformers diffusers ftfy accelerate"
    new, removed = neutralise_shell(cell)
    assert removed == cell.splitlines()
    assert "nvidia" not in new.split("#")[0]


# Run in the kernel after the lesson's cells: each way a lesson asks for a GPU or float16.
_MAP_PROBE = r"""
import io
import safetensors.torch
assert torch.cuda.is_available() and torch.cuda.device_count() == 1
cuda = torch.device("cuda")
for v in (torch.ones(2).cuda(), torch.ones(2).to("cuda:0"), torch.ones(2).to(0), torch.zeros(2, device=cuda)):
    assert v.device.type == "cpu", v.device
for v in (torch.ones(2).half(), torch.ones(2).to("cuda", torch.float16), torch.ones(2).bfloat16()):
    assert v.dtype == torch.float32 and v.device.type == "cpu", (v.dtype, v.device)
g = torch.Generator(device="cuda").manual_seed(1)
assert isinstance(g, torch.Generator) and isinstance(torch.default_generator, torch.Generator)
cpu = torch.Generator().manual_seed(1)
assert torch.equal(torch.randn(3, generator=g, device="cuda"), torch.randn(3, generator=cpu))
with torch.cuda.amp.autocast():
    assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
torch.cuda.manual_seed(7)
a = torch.randn(3)
torch.manual_seed(7)
assert torch.equal(a, torch.randn(3)) and torch.initial_seed() == 7
torch.cuda.empty_cache(); torch.cuda.synchronize()
torch.set_default_dtype(torch.float16)
assert torch.get_default_dtype() == torch.float32
half = torch.frombuffer(bytearray(b"\x00\x3c" * 2), dtype=torch.float16)  # bytes read as float16: not mapped
assert half.dtype == torch.float16 and half.tolist() == [1.0, 1.0]
loaded = safetensors.torch.load(safetensors.torch.save({"w": half}))["w"]  # how float16 files are read
assert loaded.dtype == torch.float16 and loaded.to(torch.float16).dtype == torch.float32
buffer = io.BytesIO(); torch.save(torch.ones(1), buffer); buffer.seek(0)
assert torch.load(buffer, map_location="cuda").device.type == "cpu"
"""


def _kernel_lesson(tmp_path: Path) -> Path:
    """A small GPU-style notebook: a hub login, shell lines, a data file, cuda/float16 torch code."""
    cells = [
        new_code_cell("from huggingface_hub import notebook_login, login\nnotebook_login()\nlogin()"),
        new_code_cell("!nvidia-smi"),
        new_markdown_cell("## Exercise 1"),
        new_code_cell(
            "import torch\ntorch_device = 'cuda'\n"
            "data = open('data/prompt.txt').read()\n"
            "x = torch.randn(1, 4, device=torch_device, dtype=torch.float16)\n"
            "w = torch.nn.Linear(4, 4).half().to(torch_device)\n"
            "with torch.autocast('cuda'):\n    y = w(x)\n"
            "gpu = torch.cuda.get_device_name()"
        ),
        new_code_cell(_MAP_PROBE),
    ]
    path = tmp_path / "lesson.ipynb"
    nbformat.write(new_notebook(cells=cells), str(path))
    (tmp_path / "prompt.txt").write_text("a cat")
    return path


def test_a_gpu_notebook_runs_on_the_cpu_in_float32_with_its_files_and_no_login(tmp_path):
    path = _kernel_lesson(tmp_path)
    snapshot = Snapshot("ex1", "^#+ Exercise 1", ("x", "y", "data", "gpu"))
    run = run_notebook(
        path,
        [snapshot],
        env={},
        cell_timeout=60,
        notebook_timeout=120,
        level="process",
        files={"data/prompt.txt": tmp_path / "prompt.txt"},
        map_device=True,
    )
    assert [e.kind for e in run.events] == ["shell"], run.events
    found = run.snapshots["ex1"]
    assert [found[n].desc["device"] for n in "xy"] == ["cpu", "cpu"]
    assert [found[n].desc["dtype"] for n in "xy"] == ["torch.float32", "torch.float32"]
    assert found["data"].value == "a cat" and "cuda mapped" in found["gpu"].value
    assert run.mapped == {kind: [3, 4] for kind in ("device", "dtype", "autocast", "torch.cuda")}
    login = "".join(o.get("text", "") for o in run.executed.cells[0].outputs)
    assert "notebook_login() skipped" in login and "login() skipped" in login


def _grade(tmp_path: Path, spec: Path):
    grades = grade_batch(
        [LESSON / "lesson.ipynb"],
        tmp_path / "out",
        spec=load_spec(spec),
        settings=Settings(sandbox="process"),
        workers=1,
        progress=False,
    )
    return grades[0]


@pytest.mark.slow
def test_the_gpu_lesson_gets_full_marks_on_the_cpu_given_only_its_spec(tmp_path):
    grade = _grade(tmp_path, LESSON / "spec.toml")
    assert grade.error is None and grade.score == grade.max_score == 11, grade.notes
    assert not [n for e in grade.exercises for n in e.notes], "no cell failed"
    (note,) = [n for n in grade.notes if n.startswith("device map:")]
    assert "cuda devices -> cpu in cells [4, 7, 9]" in note and "autocast('cuda') disabled in cells [9]" in note
    assert sum("shell escape not run" in n for n in grade.notes) == 2


@pytest.mark.slow
def test_without_the_specs_permission_nothing_is_mapped_and_the_report_says_why(tmp_path):
    grade = _grade(tmp_path, _spec(tmp_path, "map_device = true", "map_device = false"))
    assert grade.error is None and grade.score < grade.max_score / 2
    assert "cell 4: AssertionError: Torch not compiled with CUDA enabled" in grade.notes
    (note,) = [n for n in grade.notes if n.startswith("device:")]
    assert "cells [3, 4] failed for want of a GPU" in note and "map_device = true" in note
