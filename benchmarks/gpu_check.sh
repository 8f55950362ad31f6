#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (H200: about 5 minutes; timeouts cap it at 7 min):
# the gpu suite (correctness, timing, memory, torch.compile) with its timing report, then the
# benchmark (reference vs StableDiffusionPipeline, per stage, TFLOP/s, fraction of peak, peaks).
# Results land in $OUT (the device tool's output folder) or ./gpu-check-out.
# Wheels in .whl/ (diffusers, sdverify built from this checkout, ...) are installed first,
# with no index: the GPU machines reach no registry.
# Extra: BENCH_COMPILE=1 adds a torch.compile benchmark (1-3 more minutes).
set -uo pipefail
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $py -m pip install -q --no-index --no-deps --no-compile --force-reinstall .whl/*.whl || exit 1
fi
export SDVERIFY_CACHE="${SDVERIFY_CACHE:-/tmp/sdverify-cache}"  # the tiny zoo for the checker test
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.csv"
$py -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__)" | tee -a "$out/nvidia-smi.csv"

status=0
timeout 270 $py -m pytest tests/test_gpu_pipeline.py tests/test_gpu_timing.py tests/test_gpu_memory.py \
    -m gpu -q -s -p no:randomly -rsfE --durations=8 --sdverify-timing-json "$out/gpu-timings.json" \
    2>&1 | tee "$out/pytest-gpu.txt"
status=$(( status | PIPESTATUS[0] ))
timeout 120 $py benchmarks/bench_pipeline.py --fp32-baseline --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
status=$(( status | PIPESTATUS[0] ))
if [[ "${BENCH_COMPILE:-0}" == 1 ]]; then
    timeout 240 $py benchmarks/bench_pipeline.py --compile --repeats 3 --json "$out/bench-compile.json" \
        2>&1 | tee "$out/bench-compile.txt"
    status=$(( status | PIPESTATUS[0] ))
fi
exit "$status"
