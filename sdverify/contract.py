"""The SD1.5 text-to-image contract: every number the pipeline promises, in one place.

Tests, checks, the CLI and the graders read these names; nothing else spells the
numbers out.  Sources are given per block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    TOKEN_DTYPE: torch.dtype  # int64: what CLIP's embedding lookup takes
else:

    def __getattr__(name: str) -> object:
        # The one torch-typed fact is made on first use, so that reading the numbers (the
        # command line's defaults, --help) does not import torch.
        if name == "TOKEN_DTYPE":
            import torch

            return torch.int64
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- Names every layer shares (the CLI, the plugin, the checker, the delegation policy) ---
# The reference API a submission implements (any subset: partial credit), one check group each.
API_NAMES = (
    "tokenize",
    "encode_prompt",
    "initial_latents",
    "cfg_combine",
    "denoise_step",
    "decode_latents",
    "to_pil",
    "generate",
)
# The checker's group beside the API functions: checks of the whole run (the grader's files).
SANDBOX_GROUP = "sandbox"
PRESET_NAMES = ("tiny", "sd15")  # model presets (sdverify.presets builds each)
# Isolation of student code (sdverify.isolation): auto picks bwrap where it runs, else process.
SANDBOX_CHOICES = ("auto", "bwrap", "process")


# --- Tensor interface (SD1.5 model cards and configs on the hub) -----------------
MAX_TOKENS = 77  # CLIP ViT-L/14 text context length (tokenizer model_max_length)
EMBED_DIM = 768  # CLIP ViT-L/14 text hidden size == U-Net cross_attention_dim
IMAGE_SIZE = 512  # SD1.5 native resolution
LATENT_CHANNELS = 4  # AutoencoderKL latent_channels
VAE_DOWNSCALE = 8  # 2 ** (len(vae.block_out_channels) - 1)
LATENT_SIZE = IMAGE_SIZE // VAE_DOWNSCALE  # 64

TOKEN_IDS_SHAPE = (1, MAX_TOKENS)
EMBEDDINGS_SHAPE = (1, MAX_TOKENS, EMBED_DIM)
LATENT_SHAPE = (1, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
IMAGE_SHAPE = (1, 3, IMAGE_SIZE, IMAGE_SIZE)

# 512*512*3 / (64*64*4): pixels per latent value.
LATENT_COMPRESSION = (IMAGE_SHAPE[1] * IMAGE_SIZE**2) // (LATENT_CHANNELS * LATENT_SIZE**2)  # 48

VAE_SCALING_FACTOR = 0.18215  # vae/config.json "scaling_factor" in SD1.5

# --- CLIP tokenizer (openai/clip-vit-large-patch14, as shipped in SD1.5 tokenizer/) ---
VOCAB_SIZE = 49408
BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
PAD_ID = EOS_ID  # SD1.5 pads with <|endoftext|>

# --- Parameter counts of the SD1.5 checkpoint (counted on the meta device) ---------
PARAMS_TEXT_ENCODER = 123_060_480
PARAMS_VAE = 83_653_863
PARAMS_UNET = 859_520_964
PARAMS_TOTAL = PARAMS_TEXT_ENCODER + PARAMS_VAE + PARAMS_UNET  # 1,066,235,307

# --- Generation defaults (StableDiffusionPipeline.__call__) -------------------------
NUM_INFERENCE_STEPS = 50
GUIDANCE_SCALE = 7.5
NUM_TRAIN_TIMESTEPS = 1000

# The lesson's claim: the denoising loop dominates.  FLOPs counted on the meta device
# for 50 CFG steps at 512x512 give ~96.9%; we assert the weaker teaching claim.
MIN_DENOISE_FLOP_SHARE = 0.90
MIN_DENOISE_TIME_SHARE = 0.90  # the same claim for wall time (GPU suite)

# --- Tolerances -------------------------------------------------------------------
# Reference vs diffusers' StableDiffusionPipeline on CPU float32 (tiny preset): the two
# run the same ops in the same order; 0.0 is measured for every scheduler, the bound
# leaves room for BLAS differences across machines.
ATOL_PIPELINE_CPU_FP32 = 1e-5
# Batched CFG (one U-Net call on a batch of 2) vs two calls: different GEMM shapes
# may change the summation order, float32 rounding only.
ATOL_BATCHED_CFG_FP32 = 1e-4
# The same on CUDA in float16: a handful of fp16 ulps at |x| ~ 1.
ATOL_BATCHED_CFG_FP16 = 1e-2
# Reference vs pipeline on CUDA float16 after 50 steps and the VAE (image in [0, 1]).
ATOL_PIPELINE_CUDA_FP16 = 2e-2

# --- GPU suite timing claims (sdverify.gpu.claims; ratios of interleaved medians) -------
# float16 tensor cores vs plain float32 with TF32 off: datasheet peaks differ 8x (T4) to
# 15x (H100); SD1.5 at batch 2 is partly launch-bound, so the lesson claims only 1.5x.
MIN_FP16_SPEEDUP = 1.5
# The reference launches the same kernels as StableDiffusionPipeline; 10% absorbs
# Python-side differences and timing noise in the same process.
MAX_REFERENCE_OVER_PIPELINE_TIME = 1.10
# One batched CFG U-Net call (batch 2) must be strictly faster than two batch-1 calls.
MAX_BATCHED_OVER_TWO_CALLS_TIME = 1.0
# --- GPU suite memory claims (sdverify.gpu.memory; torch.cuda.max_memory_allocated) ----
# Ceiling for one float16 generation at 512x512, batch 1 with CFG, SDPA attention (no
# slicing): the resident weights plus the largest live set of activations.
#   weights: the loaded components' parameters x 2 bytes (SD1.5: PARAMS_TOTAL x 2 = 2.13 GB);
#   activations: the VAE decoder's last up-blocks run at full resolution, and their
#   largest feature map is 256 channels x 512 x 512 x 2 bytes = 128 MiB (the upsampled
#   input of the last up-block).  A resnet block there holds its input, the group-norm
#   and SiLU outputs, the conv output and the shortcut at once (~5 maps); 8 maps leave
#   room for the upsampler's interpolate + conv.  The U-Net at batch 2 on 64x64 latents
#   peaks far lower (largest map 2 x 320 x 64 x 64 x 2 bytes = 5 MiB; SDPA never holds
#   the 4096 x 4096 attention matrix), and so does CLIP.
#   slack: cuDNN convolution workspaces and the caching allocator's block rounding.
# For SD1.5 this gives 2.13 GB + 1.0 GiB + 0.5 GiB = 3.74 GB: diffusers' own SD1.x fp16
# test asserts < 3.75 GB with attention slicing (tests/pipelines/stable_diffusion).
MEMORY_VAE_FEATURE_MAP_CHANNELS = 256
MEMORY_LIVE_FEATURE_MAPS = 8
MEMORY_SLACK_BYTES = 512 * 2**20
# The reference allocates what StableDiffusionPipeline allocates (same modules, same
# batch); 5% absorbs the pipeline-side tensors each keeps alive (peaks measured alike).
MAX_REFERENCE_OVER_PIPELINE_MEMORY = 1.05

# CFG algebra (sdverify.properties.cfg): eps_uncond + w*(eps_cond - eps_uncond) rounds
# three times (difference, product, sum), at most ~1.5 eps * (1 + 2|w|) * max|operand|;
# two correct formulations (lerp, (1-w)*u + w*c, a float64 upcast) differ by at most
# twice that.  The tolerance is this many machine epsilons of the dtype, times the
# operands' magnitude and the property's amplification factor.
CFG_TOLERANCE_EPS = 4.0
# CLIP causality (sdverify.properties.embeddings): embeddings on a shared id prefix are
# bit-identical on CPU float32 (0.0 measured on the tiny encoder); kernels that tile
# the masked attention differently (CUDA, fp16) may round differently, a few eps at most.
CAUSALITY_TOLERANCE_EPS = 8.0

# --- Student checker (sdverify.checker) -----------------------------------------------
# Differential checks compare a submission with the reference on shared inputs (same
# components, timesteps and generator seeds).  Correct rewrites (batched vs two U-Net
# calls, lerp, (1-w)*u + w*c, float64 upcast, 1/0.18215 multiplied) differ only by float32
# rounding.  Largest differences measured over examples/submissions/correct_* (tiny, CPU):
# embeddings 0, latents 0, decode 9.3e-6, denoise 1.1e-5 (|x|~1) and 5.4e-5 (Euler,
# |x|~14), generate 1.4e-5, to_pil 1 level.  The bounds leave ~10x for other BLAS builds
# and stay orders of magnitude below what any catalogued mistake produces (>1e-2).
CHECK_ATOL_TOKENS = 0  # token ids are integers: equal or wrong
CHECK_ATOL_EMBEDDINGS = 1e-4  # CLIP last_hidden_state, |x| ~ 1 (layer norm)
CHECK_ATOL_LATENTS = 1e-5  # initial latents: the same randn draw times init_noise_sigma
CHECK_RTOL_LATENTS = 1e-5  # ... relative part for sigma-based schedulers (|x| up to ~50)
CHECK_ATOL_CFG = 1e-5  # cfg_combine on |eps| ~ 1, w <= 7.5: a few float32 ulps
CHECK_RTOL_CFG = 1e-5
CHECK_ATOL_DENOISE = 1e-4  # latents after 2 CFG steps (eps differences scaled by w)
CHECK_RTOL_DENOISE = 1e-4
CHECK_ATOL_DECODE = 1e-4  # raw VAE image, |x| ~ 1
CHECK_ATOL_GENERATE = 2e-4  # raw image after 3 steps + VAE: per-step rounding accumulates
CHECK_PIL_LEVELS = 1  # 8-bit image: rounding vs truncation of x*255 differ by one level
# Points of `sdverify check`: only correctness against the reference earns points, per function
# and per probe case (a prompt, a scheduler, a guidance scale: sdverify.checker.cases), so a
# function right for PNDM but wrong for Euler keeps the PNDM share.  Contract and property checks
# are gates and diagnostics (sdverify.grading.points), never points of their own.  The weights
# follow the lesson's emphasis (the denoising loop and the whole generation weigh most) and sum
# to 100 over the cases: 4, 3, 2, 5, 4, 1, 1 and 4 of them, of which 3, 1 and 1 are drawn per
# run (a submission special-cased to the documented values loses those).
CHECK_POINTS_PER_CASE = {
    "tokenize": 2,  # 4 prompts: short, empty, > 77 tokens, unicode
    "encode_prompt": 3,  # 3 prompts
    "initial_latents": 4,  # PNDM (sigma 1) and Euler (sigma ~14.6)
    "cfg_combine": 2,  # w = 7.5 and w = 3, and 3 drawn scales (sdverify.checker.cases)
    "denoise_step": 6,  # PNDM, DDPM (stochastic), Euler (sigma-based), and DDPM with a drawn scale and seed
    "decode_latents": 9,  # one latent
    "to_pil": 8,  # one image with values beyond [-1, 1]
    "generate": 6,  # PNDM, DDPM, Euler, each with its own prompt and scale; PNDM with a drawn prompt, scale, seed
}
# Sandbox limits: per probe (one call of a student function, a whole generate() included);
# the startup limit covers the first forkserver start (imports torch/diffusers) and
# loading the components; the memory limit is what a submission may add on CPU.
CHECK_TIMEOUT_S = 60.0
CHECK_STARTUP_TIMEOUT_S = 180.0
CHECK_MEMORY_LIMIT_MB = 4096
# A grading kernel's address space beyond the interpreter it starts as: the lesson loads
# the components itself (SD1.5 in float32: 4.3 GB of weights, plus torch's own mappings
# and activations), so the bound is wider than the checker's; tiny runs in ~1.5 GB.
GRADE_KERNEL_MEMORY_MB = 12288
# What the grader reads back from a child.  The largest honest probe result is a few images
# (an image [1,3,512,512], float64 at most: 6 MiB), so 16 MiB refuses a flood
# before it is read; only the last CHECK_LOG_TAIL_BYTES of a child's output are kept.
CHECK_MAX_RESULT_BYTES = 16 * 2**20
CHECK_LOG_TAIL_BYTES = 4000
# What every sandboxed process (a notebook kernel, a checker child) gets besides memory, at both
# levels: its /tmp and /dev/shm under bwrap are tmpfs of these sizes (RAM the address-space
# limit does not count), as is its working folder (a kernel's disk quota, a checker child's
# scratch; at the process level only RLIMIT_FSIZE bounds a file there); a folder hidden from it
# is an empty tmpfs of 1 MiB.  The probes themselves write nothing.
SANDBOX_TMP_BYTES = 256 << 20
SANDBOX_SHM_BYTES = 64 << 20
SANDBOX_WORK_BYTES = 256 << 20
SANDBOX_COVER_BYTES = 1 << 20
# RLIMIT_FSIZE: no file it writes may pass its working folder's quota.
SANDBOX_FILE_BYTES = SANDBOX_WORK_BYTES
# RLIMIT_NPROC: processes and threads of the sandbox's uid, where it runs as SANDBOX_UID (root
# ignores the limit; your own user's count would include your whole session).  A grading kernel
# holds 14 threads (measured: ipykernel, torch at one thread), and the count is per uid on the
# host (a root grader's sandboxes) or per sandbox (bwrap's user namespace), so 1024 fits ~70
# parallel kernels while a fork bomb stops there.
SANDBOX_PROCESSES = 1024
# The uid inside bwrap's user namespace (a grader that is not root): nobody.
SANDBOX_UID = 65534
# Where the grader is root, each run of student code (a kernel, a checker child, a jail) leases
# its own uid from this range (a lock file per uid, so parallel workers never share one) and
# every process of that uid is killed when the run ends.  Numeric ids, no account needed: a uid
# or gid that has one is skipped (never swept).  systemd leaves 60578-61183 unallocated (between
# systemd-homed's and DynamicUser's ranges), and a container's 65536-id user namespace maps it.
SANDBOX_UID_FIRST = 60600
SANDBOX_UIDS = 512
# RLIMIT_CPU: CPU seconds of one kernel or checker child (all its threads): generous, a
# backstop under the wall-clock limits for what they do not see (a child busy after its reply).
SANDBOX_CPU_S = 3600

# --- Notebook grading (sdverify.notebooks) ----------------------------------------------
# The grader recomputes references from the notebook's own upstream values, float32 on CPU,
# one thread in both the kernel and the grader: the same ops in the same order, so 0.0 is
# measured on the tiny preset; the bound leaves room for BLAS builds that tile differently.
GRADE_ATOL_FP32 = 1e-4
# Exercise 4's image (and final latents) vs the grader's replay of 50 DDPM steps + VAE.
# Correct rewrites (one batched U-Net call, torch.lerp, (1-w)*u + w*c) differ from the
# two-call replay by <= 5e-6 in the image and <= 9e-5 in the latents (measured, tiny);
# the sample mistakes move the image by 0.5 (CFG swapped) to 3.6 (no scaling factor).
GRADE_ATOL_REPLAY = 1e-3
# A post-processed 8-bit image (uint8, PIL) vs the replay's: one level of rounding or truncation.
GRADE_ATOL_PIXEL = 1 / 255
# Standard-normal test of a latent / of DDPM's step noise: sample mean and std within this
# many standard errors (1/sqrt(n), 1/sqrt(2n)); a false alarm at 6 sigma has p ~ 2e-9.
GRADE_NORMAL_SIGMAS = 6.0
# Default limits of `sdverify grade`: a tiny-preset lesson cell takes seconds; real-size
# weights on CPU need the instructor's --cell-timeout / --timeout.
GRADE_CELL_TIMEOUT_S = 300.0
GRADE_NOTEBOOK_TIMEOUT_S = 900.0
# What the grader keeps of a notebook's outputs (sdverify.notebooks.output_caps): a lesson cell
# prints a few lines and shows one 512x512 PNG (~0.4 MiB base64); the caps leave ample room
# for progress bars and plots while a cell printing gigabytes cannot exhaust the grader's
# memory, and the executed copy stored next to the reports stays small enough to open.
GRADE_CELL_TEXT_BYTES = 1 << 20  # text (streams, text/* results, tracebacks) kept per cell
GRADE_CELL_IMAGE_BYTES = 4 << 20  # images (base64) kept per cell; later ones are dropped
GRADE_NOTEBOOK_BYTES = 20 << 20  # executed.ipynb on disk; the largest cells' outputs go first
# One message from a kernel: larger ones are refused by ZeroMQ before they are buffered (the
# connection drops and that cell times out), so a 600 MB print cannot fill the grader's memory.
GRADE_KERNEL_MESSAGE_BYTES = 64 << 20
# What one exercise's extraction may hand back (an image is 3 MiB, the rest far less).
GRADE_SNAPSHOT_BYTES = 64 << 20
GRADE_SNAPSHOT_MANIFEST_BYTES = 1 << 20
# A kernel's sockets and extraction folders: under bwrap a tmpfs of this size that only the
# sandbox mounts (the grader reaches it through the kernel's mount namespace), so a notebook
# writes there no more than one extraction needs, and nothing to the host's disk.
SANDBOX_SHARED_BYTES = GRADE_SNAPSHOT_BYTES + GRADE_SNAPSHOT_MANIFEST_BYTES + (1 << 20)
