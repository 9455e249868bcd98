#!/usr/bin/env bash
# SKNet-50 on a CUDA GPU, from a plain checkout: no install, no network, torch ≥ 2.11 with CUDA (and
# Triton, which CUDA builds of torch ship); timm and pytest are used when present.
#   1. the CUDA parity tests of the fused SK tail (tests/kernels) and of the CUDA training step;
#   2. benchmarks/gpu.py: SKNet-50 vs ResNeXt-50 and timm side by side (training and inference, bf16
#      and fp32, eager and compiled, memory), the ratio table, benchmarks/results/<date>-<gpu>.json.
# Usage: benchmarks/gpu.sh [gpu.py options, e.g. --quick or --no-compile]
set -euo pipefail
START=$SECONDS
BUDGET=${GPU_SH_SECONDS:-530}  # all of it, parity included: the run must end within 9 minutes
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET SKNET_FORCE_TRITON
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu.sh: $PY cannot import torch (set PYTHON=/path/to/python)" >&2
    exit 2
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: no CUDA GPU visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    exit 2
fi
echo "== parity (CUDA) =="
# A failure is reported (and is the exit status) but the benchmarks still run: both are worth reading.
PARITY=0
if "$PY" -c "import pytest" 2>/dev/null; then
    # The interpreter (CPU) variants are CI's; here the CUDA ones.
    "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -k "not interpreter" \
        tests/kernels/test_sk_tail_triton.py tests/train/test_device.py || PARITY=$?
else
    for case in float64 float32 bfloat16 compiled inductor extras sweep; do
        NVIDIA_TF32_OVERRIDE=0 "$PY" -m tests.kernels.sk_tail_parity cuda "$case" || PARITY=1
    done
fi
echo "== speed and memory =="
LEFT=$((BUDGET - (SECONDS - START)))
if [ "$LEFT" -lt 90 ]; then
    echo "gpu.sh: only ${LEFT} s of the ${BUDGET} s budget left after the parity tests; no benchmarks" >&2
    exit 1
fi
# gpu.py stops its configurations when its budget is spent and still prints the table; timeout is a backstop.
timeout "$LEFT" "$PY" benchmarks/gpu.py --budget $((LEFT - 25)) "$@"
if [ "$PARITY" -ne 0 ]; then
    echo "gpu.sh: the CUDA parity tests FAILED (see above)" >&2
    exit 1
fi
