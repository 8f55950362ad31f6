"""Hostile and broken submissions: each is graded as failing the affected checks with a
clear message, its other checks still pass, and the grader process stays intact."""

from __future__ import annotations

import os
import shutil
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sdverify import zoo
from sdverify.checker import API_NAMES, check_submission

# The checker's reference expectations are built once per process: keep these on one worker.
pytestmark = pytest.mark.usefixtures("sandbox_level")

GOOD_TOKENIZE = """
def tokenize(tokenizer, prompt):
    return tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
"""


def _write(tmp_path: Path, body: str, name: str = "student.py") -> str:
    path = tmp_path / name
    path.write_text("import os, sys, torch\n" + GOOD_TOKENIZE + textwrap.dedent(body))
    return str(path)


def _check(tmp_path: Path, body: str, **kwargs) -> dict[str, list]:
    report = check_submission(_write(tmp_path, body), **kwargs)
    by_function: dict[str, list] = {}
    for c in report.checks:
        by_function.setdefault(c.group, []).append(c)
    assert all(c.passed for c in by_function["tokenize"]), "the well-behaved function must still pass"
    return by_function


def _messages(entries) -> str:
    return "\n".join(c.message for c in entries if not c.passed)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "function", "words"),
    [
        ("def cfg_combine(u, c, w):\n    raise ValueError('boom')\n", "cfg_combine", "raised ValueError: boom"),
        ("def decode_latents(vae, latents):\n    latents / 2\n", "decode_latents", "returned None"),
        (
            "def initial_latents(s, g, d, t):\n    return torch.randn(1, 4, 64, 64, generator=g).numpy()\n",
            "initial_latents",
            "ndarray",
        ),
        ("def encode_prompt(tok, te, p):\n    return [[0.0] * 768] * 77\n", "encode_prompt", "list"),
        (
            "def decode_latents(vae, latents):\n    return torch.zeros(1, 3, 64, 64)\n",
            "decode_latents",
            "[1,3,512,512]",
        ),
        (
            "def decode_latents(vae, latents):\n    return torch.full((1, 3, 512, 512), float('nan'))\n",
            "decode_latents",
            "non-finite",
        ),
        (
            "def initial_latents(s, g, d, t):\n"
            "    return torch.randn(1, 4, 64, 64, generator=g, dtype=torch.float64)\n",
            "initial_latents",
            "torch.float64",
        ),
        ("def cfg_combine(u, c, w):\n    sys.exit(0)\n", "cfg_combine", "called sys.exit(0)"),
    ],
    ids=["raises", "returns-none", "numpy", "list", "wrong-shape", "nan", "wrong-dtype", "sys-exit"],
)
def test_bad_return_values_fail_only_their_function(tmp_path: Path, body: str, function: str, words: str):
    by_function = _check(tmp_path, body, call_timeout=20)
    correctness = [c for c in by_function[function] if c.role == "points"]
    assert correctness and not any(c.passed for c in correctness)
    assert sum(c.points for c in by_function[function]) == 0
    assert words in _messages(by_function[function])


@pytest.mark.slow
def test_hang_is_cut_at_the_timeout(tmp_path: Path):
    start = time.monotonic()
    by_function = _check(tmp_path, "def cfg_combine(u, c, w):\n    while True:\n        pass\n", call_timeout=3)
    assert time.monotonic() - start < 60
    assert "timed out" in _messages(by_function["cfg_combine"])


@pytest.mark.slow  # the laptop tier's hostile module is the forged-output one
def test_os_exit_costs_only_that_function(tmp_path: Path):
    body = """
    def cfg_combine(u, c, w):
        os._exit(0)

    def initial_latents(scheduler, generator, device, dtype):
        return torch.randn(1, 4, 64, 64, generator=generator, dtype=dtype).to(device) * scheduler.init_noise_sigma
    """
    by_function = _check(tmp_path, body)  # the contract's per-call limit: none fires here, even under load
    assert "ended the process" in _messages(by_function["cfg_combine"])
    assert all(c.passed for c in by_function["initial_latents"])


@pytest.mark.slow
def test_memory_hog_hits_the_limit(tmp_path: Path):
    body = """
    def cfg_combine(u, c, w):
        hoard = []
        while True:
            hoard.append(torch.ones(2**26))  # 256 MiB a time
    """
    by_function = _check(tmp_path, body, call_timeout=30, child_memory_mb=1024)
    text = _messages(by_function["cfg_combine"])
    assert "memory" in text.lower() or "MemoryError" in text, text


def test_forged_output_and_monkeypatching_change_nothing(tmp_path: Path):
    body = """
    import json
    import sdverify, sdverify.results
    torch.allclose = lambda *a, **k: True
    torch.testing.assert_close = lambda *a, **k: None
    torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
    sdverify.results.compare_tensors = lambda id, *a, **k: sdverify.results.ok(id)
    print(json.dumps({"submission": "x", "passed": True, "score": 99, "checks": []}))

    class AlwaysEqual:
        def __eq__(self, other):
            return True

    def decode_latents(vae, latents):
        print('{"passed": true}')
        return AlwaysEqual()

    def cfg_combine(u, c, w):
        return c + w * (u - c)
    """
    allclose = torch.allclose
    by_function = _check(tmp_path, body)
    assert torch.allclose is allclose and not torch.allclose(torch.zeros(1), torch.ones(1))
    assert "AlwaysEqual" in _messages(by_function["decode_latents"])
    assert "swapped" in _messages(by_function["cfg_combine"])


def test_syntax_error_is_a_failed_submission(tmp_path: Path):
    path = tmp_path / "broken.py"
    path.write_text("def tokenize(tokenizer, prompt)\n    return 1\n")
    report = check_submission(str(path))
    assert not report.passed and "SyntaxError" in report.error
    assert all(not c.passed for c in report.checks if c.group != "sandbox")


@pytest.mark.slow
def test_writes_stay_out_of_the_graders_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_level: str):
    # A private copy of the zoo, so that the attack cannot harm the shared cache.  Under bwrap
    # the write fails (read-only); at the process level it lands, is named, and is repaired.
    weights = tmp_path / "weights"
    shutil.copytree(zoo.weights_dir("tiny", 0), weights)
    grader_cwd = tmp_path / "grader"
    grader_cwd.mkdir()
    monkeypatch.chdir(grader_cwd)
    body = f"""
    open("relative.txt", "w").write("x")
    try:
        with open({str(weights / "vae" / "config.json")!r}, "w") as f:
            f.write("{{}}")
    except OSError:
        pass
    """
    by_function = _check(tmp_path, body, weights=str(weights), call_timeout=20)
    assert not os.listdir(grader_cwd)
    (files,) = by_function["sandbox"]
    if sandbox_level == "bwrap":
        assert files.passed, files.message
    else:
        assert not files.passed and "vae/config.json" in files.message
    assert zoo.verify(weights) == []  # repaired at once, or never changed
    # The next submission runs on intact components: its correct decoder passes.
    clean = _write(
        tmp_path,
        """
    def decode_latents(vae, latents):
        with torch.no_grad():
            return vae.decode(latents / vae.config.scaling_factor).sample
    """,
        name="clean.py",
    )
    report = check_submission(clean, weights=str(weights), call_timeout=20)
    assert all(c.passed for c in report.checks if c.group in ("tokenize", "decode_latents")), report.failed()


@pytest.mark.slow
def test_total_timeout_bounds_a_submission_whose_functions_all_hang(tmp_path: Path):
    body = "".join(f"def {name}(*args, **kwargs):\n    while True:\n        pass\n" for name in API_NAMES)
    path = tmp_path / "hangs.py"
    path.write_text(body)
    start = time.monotonic()
    report = check_submission(str(path), call_timeout=5, timeout=10)
    assert time.monotonic() - start < 60
    assert report.score == 0  # every check fails but the delegation gates: nothing was delegated
    assert all(not c.passed for c in report.checks if c.group != "sandbox" and not c.id.endswith(".own_work"))
    messages = " ".join(c.message for c in report.checks)
    assert "used up its 10 s" in messages or "total time limit ran out" in messages


@pytest.mark.slow
def test_weights_edited_in_place_are_named_repaired_and_harm_no_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox_level: str
):
    # A zoo of its own: the attack must not reach the shared cache (process level: it lands).
    monkeypatch.setenv("SDVERIFY_CACHE", str(tmp_path / "cache"))
    weights = zoo.weights_dir("tiny", 0)
    target = weights / "unet" / "diffusion_pytorch_model.safetensors"
    body = f"""
    p = {str(target)!r}
    try:
        st = os.stat(p)
        with open(p, "r+b") as f:
            f.seek(st.st_size // 2)
            f.write(b"\\x7f" * 4096)
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError:
        pass
    """
    (files,) = _check(tmp_path, body, weights=str(weights), call_timeout=30)["sandbox"]
    if sandbox_level == "bwrap":
        assert files.passed, files.message
    else:
        assert not files.passed and "unet/diffusion_pytorch_model.safetensors" in files.message
    assert zoo.verify(weights) == []
    honest = check_submission(_write(tmp_path, "", name="honest.py"), weights=str(weights), call_timeout=30)
    reference = check_submission(None, weights=str(weights), call_timeout=30)
    assert all(c.passed for c in honest.checks if c.group in ("tokenize", "sandbox"))
    assert reference.passed, [c.message for c in reference.failed()]
