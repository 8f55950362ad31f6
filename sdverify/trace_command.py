"""Run the reference pipeline on the zoo and lay its trace out as a table (``sdverify trace``)."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from sdverify import reference, zoo
from sdverify.schedulers import make_scheduler
from sdverify.stage_recorder import Trace


def run_trace(
    prompt: str,
    *,
    preset: str = "tiny",
    weights: str | None = None,
    steps: int,
    guidance: float,
    scheduler: str = "pndm",
    seed: int = 0,
    device: str = "cpu",
    out: str | Path = "sdverify_trace.png",
) -> tuple[Trace, Path]:
    """Generate one image with a progress bar over the steps; return the trace and the PNG path."""
    folder = zoo.weights_dir(preset, 0, weights)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    c = zoo.load_components(folder, device=device, dtype=dtype)
    sched = make_scheduler(scheduler, dict(c.scheduler.config))
    bar = tqdm(total=None, desc="denoising", unit="step", leave=False)

    def on_step(index: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    trace = Trace(device=device, on_step=on_step)
    generator = torch.Generator("cpu").manual_seed(seed)
    image = reference.generate(
        c.tokenizer, c.text_encoder, c.unet, c.vae, sched, prompt, steps, guidance, generator, trace
    )
    bar.close()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reference.to_pil(image).save(out)
    return trace, out


def format_trace(trace: Trace) -> str:
    """Stage | tensor | shape | dtype | seconds | share — one row per recorded tensor."""
    total = trace.total_seconds or 1.0
    rows = [("stage", "tensor", "shape", "dtype", "time (s)", "share")]
    for stage in trace.stages:
        first = True
        for name, (shape, dtype) in stage.tensors.items():
            timing = (f"{stage.seconds:.3f}", f"{100 * stage.seconds / total:.1f}%") if first else ("", "")
            rows.append((stage.name if first else "", name, str(list(shape)), dtype, *timing))
            first = False
    rows.append(("total", "", "", "", f"{trace.total_seconds:.3f}", "100.0%"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
