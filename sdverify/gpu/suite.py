"""The GPU suite's workload: components built on the device, recorded runs, stage checks, timings.

On CUDA the suite runs the full SD1.5 architecture (``sd15``, seeded random weights built
on the GPU, or real weights from a local folder) in float16; with ``--sdverify-device cpu``
the same functions run the ``tiny`` preset in float32, so CI exercises them.

Random-weight fp16 VAE: the seeded SD1.5 decoder is well inside float16's range
(largest activation about 8x the input latents' scale, ~10 for unit-variance latents,
measured in float32), so the decode stays in float16 as ``StableDiffusionPipeline`` does
for SD1.5; the stage checks assert finiteness, so a regression there shows up.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch

from sdverify import contract as C
from sdverify import reference, zoo
from sdverify.gpu.memory import Peak, measure_peak
from sdverify.gpu.timing import Timing, measure_interleaved
from sdverify.results import CheckResult, fail, ok
from sdverify.schedulers import Scheduler, make_scheduler
from sdverify.stage_recorder import Trace

if TYPE_CHECKING:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

PROMPT = "a photograph of an astronaut riding a horse"
CPU_STEPS = 10  # tiny on CPU: exercises the logic; 50-step equality is covered by test_reference.py


@dataclass(frozen=True)
class SuiteConfig:
    """Everything the suite's runs depend on; :func:`suite_config` derives it from the device."""

    device: torch.device
    preset: str
    dtype: torch.dtype
    steps: int  # denoising steps per generation (checked and timed)
    repeats: int  # timed rounds (medians over these)
    warmup: int  # untimed rounds first
    seed: int = 0
    weights: str | None = None  # real SD1.5 weights folder; used on CUDA only

    @property
    def on_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pipeline_atol(self) -> float:
        return C.ATOL_PIPELINE_CUDA_FP16 if self.on_cuda else C.ATOL_PIPELINE_CPU_FP32

    @property
    def batched_cfg_atol(self) -> float:
        return C.ATOL_BATCHED_CFG_FP16 if self.on_cuda else C.ATOL_BATCHED_CFG_FP32

    @property
    def compile_backend(self) -> str:
        """Inductor on CUDA (what users compile with); on CPU aot_eager traces the same graph
        without a C++ toolchain and minutes of codegen, so CI exercises the logic."""
        return "inductor" if self.on_cuda else "aot_eager"


def suite_config(device: torch.device, seed: int = 0, weights: str | None = None, **overrides) -> SuiteConfig:
    """sd15 in float16 with 50-step timings on CUDA; tiny in float32 with short timings on CPU."""
    cuda = device.type == "cuda"
    defaults = {
        "preset": "sd15" if cuda else "tiny",
        "dtype": torch.float16 if cuda else torch.float32,
        "steps": C.NUM_INFERENCE_STEPS if cuda else CPU_STEPS,
        "repeats": 5 if cuda else 3,
        "warmup": 2 if cuda else 1,
    }
    return SuiteConfig(device, seed=seed, weights=weights, **{**defaults, **overrides})


def build_on_device(preset: str, seed: int, device: torch.device | str, dtype: torch.dtype) -> zoo.Components:
    """Seeded random-weight components constructed directly on ``device``.

    With ``device`` as the default device, parameters are allocated and initialised
    there (on the GPU's RNG): SD1.5's 1.07 B parameters take well under a second on a
    GPU instead of ~11 s on a CPU plus a 4 GB copy.  The weights are reproducible per
    seed and device type, not equal to the CPU-built zoo's.
    """
    with torch.device(device):
        components = zoo.build_components(preset, seed)
    # The scheduler keeps its tables on the CPU, where diffusers builds them.
    components.scheduler = type(components.scheduler).from_config(components.scheduler.config)
    return components.to(device, dtype)


def load_suite_components(config: SuiteConfig) -> zoo.Components:
    if config.on_cuda and config.weights:
        return zoo.load_components(zoo.weights_dir(weights=config.weights), config.device, config.dtype)
    return build_on_device(config.preset, config.seed, config.device, config.dtype)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: torch.dtype
    finite: bool

    @classmethod
    def of(cls, tensor: torch.Tensor) -> TensorInfo:
        return cls(tuple(tensor.shape), tensor.dtype, bool(torch.isfinite(tensor).all()))


@dataclass
class RunRecord:
    """Shapes, dtypes and finiteness of every intermediate of one generation."""

    text_outputs: list[TensorInfo] = field(default_factory=list)
    unet_outputs: list[TensorInfo] = field(default_factory=list)
    steps: list[dict[str, TensorInfo]] = field(default_factory=list)


@contextmanager
def recording(components: zoo.Components, scheduler) -> Iterator[RunRecord]:
    """Record the text encoder's and U-Net's outputs and every ``scheduler.step`` call.

    Hooks observe without changing anything, so a recorded run computes what an
    unrecorded one does, for the reference and ``StableDiffusionPipeline`` alike.
    """
    record = RunRecord()
    hooks = [
        components.text_encoder.register_forward_hook(
            lambda m, i, out: record.text_outputs.append(TensorInfo.of(out[0]))
        ),
        components.unet.register_forward_hook(lambda m, i, out: record.unet_outputs.append(TensorInfo.of(out[0]))),
    ]
    original = scheduler.step

    @functools.wraps(original)  # keeps the signature the callers inspect for eta/generator
    def step(model_output, timestep, sample, *args, **kwargs):
        out = original(model_output, timestep, sample, *args, **kwargs)
        prev = out.prev_sample if hasattr(out, "prev_sample") else out[0]
        record.steps.append(
            {
                "noise_pred": TensorInfo.of(model_output),
                "latents": TensorInfo.of(sample),
                "prev_latents": TensorInfo.of(prev),
            }
        )
        return out

    scheduler.step = step
    try:
        yield record
    finally:
        del scheduler.step
        for hook in hooks:
            hook.remove()


def _expect(id: str, infos: list[TensorInfo], shape: tuple[int, ...], dtype: torch.dtype, what: str) -> CheckResult:
    """All ``infos`` have ``shape`` and ``dtype`` and are finite; names the first that is not."""
    clause = f"{what}: shape {list(shape)}, {str(dtype).replace('torch.', '')}, finite"
    if not infos:
        return fail(id, f"no {what} was produced", clause)
    for index, info in enumerate(infos):
        problems = []
        if info.shape != shape:
            problems.append(f"shape {list(info.shape)} (expected {list(shape)})")
        if info.dtype != dtype:
            problems.append(f"dtype {info.dtype} (expected {dtype})")
        if not info.finite:
            problems.append("non-finite values (inf/NaN: float16 overflow?)")
        if problems:
            return fail(id, f"{what} #{index} of {len(infos)} has " + ", ".join(problems), clause)
    return ok(id, clause, count=len(infos))


def check_run(
    record: RunRecord, token_ids: torch.Tensor, image: torch.Tensor, dtype: torch.dtype, num_steps: int
) -> list[CheckResult]:
    """Every stage of a CFG generation against the contract's shapes, in ``dtype``, finite."""
    steps = record.steps
    count = (
        ok("stages.step_count", "one scheduler step per timestep", steps=len(steps))
        if len(steps) == num_steps
        else fail(
            "stages.step_count", f"{len(steps)} scheduler steps for {num_steps} timesteps", "one step per timestep"
        )
    )
    unet_shape = (2 * C.LATENT_SHAPE[0], *C.LATENT_SHAPE[1:])  # batched CFG: [uncond, cond]
    return [
        _expect("stages.token_ids", [TensorInfo.of(token_ids)], C.TOKEN_IDS_SHAPE, C.TOKEN_DTYPE, "token ids"),
        _expect("stages.embeddings", record.text_outputs, C.EMBEDDINGS_SHAPE, dtype, 'text embeddings (prompt and "")'),
        ok("stages.embedding_count", 'prompt and "" encoded')
        if len(record.text_outputs) == 2
        else fail(
            "stages.embedding_count", f"{len(record.text_outputs)} text encoder calls, expected 2", 'prompt and ""'
        ),
        count,
        _expect("stages.latents", [s["latents"] for s in steps], C.LATENT_SHAPE, dtype, "latents entering each step"),
        _expect(
            "stages.prev_latents", [s["prev_latents"] for s in steps], C.LATENT_SHAPE, dtype, "latents after each step"
        ),
        _expect(
            "stages.noise_pred", [s["noise_pred"] for s in steps], C.LATENT_SHAPE, dtype, "guided U-Net output per step"
        ),
        _expect("stages.unet_output", record.unet_outputs, unet_shape, dtype, "raw batched U-Net output per step"),
        _expect("stages.image", [TensorInfo.of(image)], C.IMAGE_SHAPE, dtype, "decoded image"),
    ]


def generator(seed: int) -> torch.Generator:
    """A CPU generator: the same latents on every device (diffusers' randn_tensor convention)."""
    return torch.Generator("cpu").manual_seed(seed)


def reference_image(
    c: zoo.Components, scheduler, steps: int, seed: int, trace: Trace | None = None, prompt: str = PROMPT
) -> torch.Tensor:
    """Raw reference image in [-1, 1]."""
    return reference.generate(
        c.tokenizer, c.text_encoder, c.unet, c.vae, scheduler, prompt, steps, C.GUIDANCE_SCALE, generator(seed), trace
    )


def make_pipeline(c: zoo.Components, scheduler: Scheduler) -> StableDiffusionPipeline:
    pipe = zoo.pipeline(c, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_image(pipe, steps: int, seed: int, prompt: str = PROMPT) -> torch.Tensor:
    """StableDiffusionPipeline's image in [0, 1] (its own postprocessing)."""
    return pipe(
        prompt, num_inference_steps=steps, guidance_scale=C.GUIDANCE_SCALE, generator=generator(seed), output_type="pt"
    ).images


def to_unit_range(raw: torch.Tensor) -> torch.Tensor:
    """The reference's raw [-1, 1] image mapped as the pipeline's postprocessing maps it."""
    return (raw / 2 + 0.5).clamp(0, 1)


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for a run-twice comparison; previous settings restored after.

    cuDNN picks fixed algorithms (no autotuning) and torch uses deterministic kernels where
    it has them.  cuBLAS GEMMs on one stream are bitwise reproducible by design (cuBLAS
    docs, "Results reproducibility"; torch gives each stream its own workspace), so torch's
    warning that ``CUBLAS_WORKSPACE_CONFIG`` is unset is silenced rather than obeyed: that
    setting is process-wide and slows every fp16 GEMM after it (docs/gpu.md).
    """
    saved = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
    )
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*CUBLAS_WORKSPACE_CONFIG.*")
            yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2])


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """True float32 (no TF32 tensor cores) for a float32 baseline."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def unet_inputs(config: SuiteConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batched-CFG U-Net input: latents [2,4,64,64], a timestep, embeddings [2,77,768]."""
    g = generator(config.seed)
    latents = torch.randn((2, *C.LATENT_SHAPE[1:]), generator=g).to(config.device, config.dtype)
    embeddings = torch.randn((2, *C.EMBEDDINGS_SHAPE[1:]), generator=g).to(config.device, config.dtype)
    return latents, torch.tensor(C.NUM_TRAIN_TIMESTEPS // 2, device=config.device), embeddings


def unet_two_calls(unet, latents: torch.Tensor, t: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """The unbatched CFG alternative: uncond and cond through the U-Net separately."""
    halves = [unet(x, t, encoder_hidden_states=e).sample for x, e in zip(latents.chunk(2), embeddings.chunk(2))]
    return torch.cat(halves)


def time_unet(c: zoo.Components, config: SuiteConfig, with_fp32: bool) -> dict[str, Timing]:
    """One batched CFG U-Net call vs two separate calls (and vs float32 when asked), interleaved."""
    latents, t, embeddings = unet_inputs(config)
    fns = {
        "unet.cfg_batched": lambda: c.unet(latents, t, encoder_hidden_states=embeddings),
        "unet.cfg_two_calls": lambda: unet_two_calls(c.unet, latents, t, embeddings),
    }
    unet32 = copy.deepcopy(c.unet).float() if with_fp32 else None
    if unet32 is not None:
        latents32, embeddings32 = latents.float(), embeddings.float()
        fns["unet.cfg_batched_fp32"] = lambda: unet32(latents32, t, encoder_hidden_states=embeddings32)
    with torch.inference_mode(), tf32_disabled():
        return measure_interleaved(fns, device=config.device, repeats=config.repeats, warmup=config.warmup)


def time_generations(c: zoo.Components, config: SuiteConfig) -> dict[str, Timing]:
    """Reference and StableDiffusionPipeline end to end, interleaved, plus the reference's stages."""
    steps = config.steps
    traces: list[Trace] = []
    ref_scheduler = make_scheduler("pndm", dict(c.scheduler.config))
    pipe = make_pipeline(c, make_scheduler("pndm", dict(c.scheduler.config)))

    def run_reference() -> None:
        trace = Trace(device=config.device)
        traces.append(trace)
        reference_image(c, ref_scheduler, steps, config.seed, trace)

    timings = measure_interleaved(
        {
            "reference.end_to_end": run_reference,
            "pipeline.end_to_end": lambda: pipeline_image(pipe, steps, config.seed),
        },
        device=config.device,
        repeats=config.repeats,
        warmup=config.warmup,
    )
    timed = traces[config.warmup :]
    for stage in ("clip", "denoise", "vae"):
        timings[f"reference.{stage}"] = Timing(
            f"reference.{stage}",
            [trace.seconds()[stage] for trace in timed],
            iterations=steps if stage == "denoise" else 1,
            share_of="reference.end_to_end",
        )
    return timings


def generation_peaks(c: zoo.Components, config: SuiteConfig) -> tuple[dict[str, Peak], dict[str, torch.Tensor]]:
    """Image ([0, 1]) of one PNDM generation by the reference and by the pipeline, and on
    CUDA the peak memory of each (the CPU has no allocator counter: no peaks there).

    Each runs once unmeasured first, so lazy allocations (cuBLAS workspaces, cuDNN plans)
    count in both peaks alike rather than in whichever ran first.
    """
    pipe = make_pipeline(c, make_scheduler("pndm", dict(c.scheduler.config)))
    scheduler = make_scheduler("pndm", dict(c.scheduler.config))
    runs = {
        "reference": lambda: to_unit_range(reference_image(c, scheduler, config.steps, config.seed)),
        "pipeline": lambda: pipeline_image(pipe, config.steps, config.seed),
    }
    images: dict[str, torch.Tensor] = {}
    peaks: dict[str, Peak] = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()

            def keep(name: str = name, run=run) -> None:
                images[name] = run()

            if config.on_cuda:
                peaks[name] = measure_peak(f"{name}.generation", keep, config.device)
            else:
                keep()
    return peaks, images


def compiled_unet_image(c: zoo.Components, config: SuiteConfig, mode: str | None = None) -> torch.Tensor:
    """The reference's PNDM image ([-1, 1]) with ``torch.compile`` applied to the U-Net."""
    unet = torch.compile(c.unet, mode=mode, backend=config.compile_backend)
    compiled = dataclasses.replace(c, unet=cast("UNet2DConditionModel", unet))  # the wrapper forwards the module's API
    scheduler = make_scheduler("pndm", dict(c.scheduler.config))
    return reference_image(compiled, scheduler, config.steps, config.seed)
