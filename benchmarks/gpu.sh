#!/usr/bin/env bash
# One-shot GPU check, at most 4 minutes on one GPU, nothing downloaded:
#   1. the CUDA paths of the tests (tests/test_cuda.py: the same values on the GPU as on the CPU, for every
#      evaluation path: plain, BN fold, shortcut, several points per pass, tolerance, bf16);
#   2. benchmarks/bench_gpu.py: ResNet-56 on 50,000 synthetic CIFAR images at fp32, tf32 and bf16, with and without
#      channels_last, --compile and several points per pass, against the original-style loop and a matmul probe.
# Without a GPU it says so and exits 0.  Run from anywhere:  bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu.sh: no CUDA GPU here (torch.cuda.is_available() is False); nothing to run"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
rc=0
echo "+ tests on the GPU"
timeout 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py || rc=1
echo "+ benchmark"
timeout 150 "$PY" benchmarks/bench_gpu.py "$@" || rc=1
exit $rc
