#!/usr/bin/env bash
# One-shot GPU check for a lent CUDA machine (H100: about 5 minutes; timeouts cap it at 7m50s):
# the gpu suite with its timing report, then the benchmark (SDPA, then channels_last).
# Results land in $OUT (the device tool's output folder) or ./gpu-check-out.
# Extra: BENCH_COMPILE=1 adds a torch.compile benchmark (1-3 more minutes).
set -uo pipefail
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
export SDVERIFY_CACHE="${SDVERIFY_CACHE:-/tmp/sdverify-cache}"  # the tiny zoo for the checker test
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.csv"
python -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)"

status=0
timeout 270 python -m pytest -m gpu -q -p no:randomly -rs --sdverify-timing-json "$out/gpu-timings.json" \
    2>&1 | tee "$out/pytest-gpu.txt"
status=$(( status | PIPESTATUS[0] ))
timeout 120 python benchmarks/bench_pipeline.py --fp32-baseline --json "$out/bench-sdpa.json" \
    2>&1 | tee "$out/bench-sdpa.txt"
status=$(( status | PIPESTATUS[0] ))
timeout 80 python benchmarks/bench_pipeline.py --channels-last --repeats 3 --json "$out/bench-channels-last.json" \
    2>&1 | tee "$out/bench-channels-last.txt"
status=$(( status | PIPESTATUS[0] ))
if [[ "${BENCH_COMPILE:-0}" == 1 ]]; then
    timeout 240 python benchmarks/bench_pipeline.py --compile --repeats 3 --json "$out/bench-compile.json" \
        2>&1 | tee "$out/bench-compile.txt"
    status=$(( status | PIPESTATUS[0] ))
fi
exit "$status"
