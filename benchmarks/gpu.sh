#!/usr/bin/env bash
# Accelerator benchmark (issue 11): bf16 training of ResNet-50, ViT-B/16 and CLIP-RN50 (InfoNCE) at
# global batch 256 with images/s per device and MFU, ResNet-50 fed by the real input pipeline, and
# the evaluator's images/s. JSON lines on stdout; see benchmarks/gpu_bench.py for the fields.
#
#   bash benchmarks/gpu.sh            # one GPU (sized for < 5 minutes on an H200)
#   bash benchmarks/gpu.sh --smoke    # tiny sizes on the CPU, in seconds (tests/test_benchmarks.py)
#
# PYTHON picks the interpreter (default: python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ " $* " == *" --smoke "* ]]; then
  export JAX_PLATFORMS=cpu
fi
exec "${PYTHON:-python}" -m benchmarks.gpu_bench "$@"
