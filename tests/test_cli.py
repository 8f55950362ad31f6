"""``sdverify zoo install`` and ``sdverify trace`` in-process."""

from __future__ import annotations

from PIL import Image

from sdverify import zoo
from sdverify.cli import main


def test_zoo_install_prints_the_exports(tmp_path, capsys):
    assert main(["zoo", "install", "--preset", "tiny", "--cache", str(tmp_path), "--alias", "my-course/sd"]) == 0
    out = capsys.readouterr().out
    assert f"export HF_HUB_CACHE={tmp_path}" in out
    assert "export HF_HUB_OFFLINE=1" in out
    assert "my-course/sd, openai/clip-vit-large-patch14, runwayml/stable-diffusion-v1-5" in out
    assert (tmp_path / zoo.REPO_FOLDER / "refs" / "main").is_file()
    assert (tmp_path / "models--my-course--sd" / "refs" / "fp16").is_file()


def test_trace_prints_every_stage_and_writes_a_png(tmp_path, capsys):
    out_png = tmp_path / "img.png"
    assert main(["trace", "a red bicycle", "--steps", "3", "--scheduler", "euler", "--out", str(out_png)]) == 0
    table = capsys.readouterr().out
    for needle in ("clip", "denoise", "vae", "[1, 77]", "[1, 77, 768]", "[1, 4, 64, 64]", "[1, 3, 512, 512]", "total"):
        assert needle in table
    with Image.open(out_png) as image:
        assert image.size == (512, 512) and image.mode == "RGB"


def test_trace_rejects_nonpositive_steps(capsys):
    assert main(["trace", "x", "--steps", "0"]) == 2
    assert "--steps must be >= 1, got 0" in capsys.readouterr().err


def test_missing_weights_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["trace", "x", "--steps", "1", "--weights", str(tmp_path / "nope")]) == 2
    assert "lacks diffusers subfolders" in capsys.readouterr().err
