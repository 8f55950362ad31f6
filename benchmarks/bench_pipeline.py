"""Benchmark the reference pipeline against diffusers' StableDiffusionPipeline, in one process.

Prints end-to-end and per-component times for both, their peak memory (CUDA), the U-Net's batched-CFG step, FLOPs
counted with ``torch.utils.flop_counter`` (sdverify.flops), achieved TFLOP/s and their
fraction of the card's datasheet peak, so the distance to the physical limit is visible.
SDPA vs classic attention, channels_last and ``torch.compile`` are options, so their
effect is measured rather than assumed.

    python benchmarks/bench_pipeline.py                      # CUDA, sd15 float16, 50 steps
    python benchmarks/bench_pipeline.py --device cpu         # tiny preset: exercises the script
    python benchmarks/bench_pipeline.py --compile --channels-last --json bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from sdverify.flops import count_stage_flops
from sdverify.gpu import budgets, devices, suite
from sdverify.gpu.report import TimingReport, environment, format_reports
from sdverify.gpu.timing import Timing, component_clock, time_call
from sdverify.schedulers import make_scheduler

COMPONENTS = ("text_encoder", "unet", "vae_decoder")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu runs the tiny preset)")
    p.add_argument("--weights", help="local diffusers folder with real SD1.5 weights (CUDA only)")
    p.add_argument("--steps", type=int, help="denoising steps (default 50 on CUDA, 10 on CPU)")
    p.add_argument("--repeats", type=int, help="timed rounds; medians are reported")
    p.add_argument("--warmup", type=int, help="untimed rounds first (compile, autotuning, allocator)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--attention",
        choices=["sdpa", "classic"],
        default="sdpa",
        help="sdpa: torch scaled_dot_product_attention (diffusers' default); classic: explicit softmax(QK^T)V",
    )
    p.add_argument("--channels-last", action="store_true", help="U-Net and VAE in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net (warm-up rounds absorb compilation)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune")
    p.add_argument("--fp32-baseline", action="store_true", help="also time a float32 U-Net step (TF32 off)")
    p.add_argument("--json", type=Path, help="write all numbers here")
    return p.parse_args(argv)


def apply_options(c, args: argparse.Namespace) -> None:
    """Attention kernel, memory format and compilation, applied to the shared components."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processor = AttnProcessor2_0() if args.attention == "sdpa" else AttnProcessor()
    for model in (c.unet, c.vae):
        model.set_attn_processor(processor)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
    if args.compile:
        c.unet = torch.compile(c.unet, mode=args.compile_mode)


def per_component(c, config: suite.SuiteConfig, run, prefix: str) -> dict[str, Timing]:
    """Per-component medians over ``config.repeats`` runs of ``run`` (forward hooks).

    Shares are of ``<prefix>.hooked_end_to_end``, the same runs' wall time: the hooks'
    synchronisations slow a run down, so a share of the unhooked end-to-end time can
    exceed 100%.
    """
    modules = {"text_encoder": c.text_encoder, "unet": c.unet, "vae_decoder": c.vae.decoder}
    samples: dict[str, list[float]] = {name: [] for name in modules}
    totals: list[float] = []
    for _ in range(config.repeats):
        with component_clock(modules, config.device) as seconds:
            totals.append(time_call(run, config.device))
        for name, value in seconds.items():
            samples[name].append(value)
    total = f"{prefix}.hooked_end_to_end"
    timings = {total: Timing(total, totals)}
    for name, values in samples.items():
        timings[f"{prefix}.{name}"] = Timing(f"{prefix}.{name}", values, share_of=total)
    return timings


def flop_rows(timings: dict[str, Timing], flops, peak_tflops: float | None) -> list[dict]:
    """Achieved TFLOP/s and fraction of peak for every timing whose work is known."""
    work = {
        "end_to_end": flops.total,
        "text_encoder": flops.clip,
        "clip": flops.clip,
        "unet": flops.denoise,
        "denoise": flops.denoise,
        "vae_decoder": flops.vae_decode,
        "vae": flops.vae_decode,
    }
    work_unet = {
        "unet.cfg_batched": 2 * flops.unet_pass,
        "unet.cfg_two_calls": 2 * flops.unet_pass,
        "unet.cfg_batched_fp32": 2 * flops.unet_pass,
    }
    rows = []
    for name, timing in timings.items():
        amount = work_unet.get(name, work.get(name.split(".", 1)[-1]))
        if amount is None:
            continue
        tflops = amount / timing.median / 1e12
        rows.append(
            {
                "stage": name,
                "median_ms": 1000 * timing.median,
                "tflop": amount / 1e12,
                "tflop_per_s": tflops,
                "fraction_of_peak": tflops / peak_tflops if peak_tflops else None,
            }
        )
    return rows


def format_flop_rows(rows: list[dict]) -> str:
    table = [("stage", "median ms", "TFLOP", "TFLOP/s", "of peak")]
    for r in rows:
        peak = f"{100 * r['fraction_of_peak']:.1f}%" if r["fraction_of_peak"] is not None else "n/a"
        table.append((r["stage"], f"{r['median_ms']:.2f}", f"{r['tflop']:.3g}", f"{r['tflop_per_s']:.3g}", peak))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compile and args.fp32_baseline:
        raise SystemExit("--fp32-baseline copies the U-Net, which --compile has wrapped: use them in separate runs")
    device = devices.resolve_device(args.device)
    reason = devices.cuda_skip_reason(device)
    if reason:
        print(f"cannot benchmark on {device}: {reason}", file=sys.stderr)
        return 2
    overrides = {
        k: v for k, v in {"steps": args.steps, "repeats": args.repeats, "warmup": args.warmup}.items() if v is not None
    }
    config = suite.suite_config(device, args.seed, args.weights, **overrides)
    c = suite.load_suite_components(config)
    apply_options(c, args)
    steps = config.steps

    timings = suite.time_generations(c, config)
    timings.update(suite.time_unet(c, config, with_fp32=args.fp32_baseline))
    scheduler = make_scheduler("pndm", dict(c.scheduler.config))
    pipe = suite.make_pipeline(c, make_scheduler("pndm", dict(c.scheduler.config)))
    timings.update(
        per_component(c, config, lambda: suite.reference_image(c, scheduler, steps, config.seed), "reference")
    )
    timings.update(per_component(c, config, lambda: suite.pipeline_image(pipe, steps, config.seed), "pipeline"))
    timings = {name: timings[name] for name in sorted(timings)}

    report = TimingReport(environment(device, config.preset, config.dtype))
    for timing in timings.values():
        report.add(timing)
    if config.on_cuda:
        peaks, _ = suite.generation_peaks(c, config)
        for peak in peaks.values():
            report.add_peak(peak)
    scheduler.set_timesteps(steps)  # PNDM runs one more U-Net call than steps (51 for 50)
    flops = count_stage_flops(config.preset, steps=len(scheduler.timesteps), cfg=True)
    spec = budgets.lookup(report.environment["gpu"]) if config.on_cuda else None
    peak = (spec.peak_tflops_fp16 if config.dtype == torch.float16 else spec.peak_tflops_fp32) if spec else None
    rows = flop_rows(timings, flops, peak)

    print(format_reports([report]))
    print()
    print(format_flop_rows(rows))
    options = f"attention={args.attention} channels_last={args.channels_last} compile={args.compile}"
    print(f"\noptions: {options}; steps={steps}, repeats={config.repeats}, warmup={config.warmup}")
    for name in ("reference", "pipeline"):
        t = timings[f"{name}.end_to_end"]
        print(f"{name:9s} end to end: {t.median:.3f} s ({steps / t.median:.2f} it/s)")
    if peak:
        floor = flops.total / (peak * 1e12)
        print(
            f"physical limit at {peak:g} TFLOP/s ({spec.key} datasheet, dense): {floor:.3f} s per image "
            f"({flops.total / 1e12:.1f} TFLOP; U-Net {2 * flops.unet_pass / 1e12:.2f} TFLOP per CFG step)"
        )
    else:
        print(f"no datasheet peak for {report.environment['gpu']}: fractions of peak are n/a")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {"options": vars(args), "report": report.to_dict(), "flops": rows, "peak_tflops": peak}
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
