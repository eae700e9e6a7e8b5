#!/usr/bin/env bash
# Device check of the CUDA backend, for a machine with an NVIDIA GPU (target: one H200, under
# 8 minutes including the build). Builds rif-native with RIF_CUDA=ON (cuBLAS / cuSOLVER from the
# toolkit or the nvidia-* wheels), runs the GPU tests against the CPU backend (float64 relative
# error <= 1e-10), then times the Table 2 shapes and n = 400000, d = 2048 (host X end to end,
# device X, a pinned copy of X, PyTorch's pipeline), printing a table last.
#
# Offline machines: put wheels of missing build needs in .whl/ beforehand; they are installed
# from there. On a machine with the registry, for a Python 3.12 target:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform any -d .whl cmeel-eigen==3.4.1 cmeel
# Logs and the table go to $OUT when it is set (else /tmp/rif-gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/rif-gpu-check}"
mkdir -p "$out"
export OUT="$out"
site=/tmp/rif-site
mkdir -p "$site"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" .whl/*.whl
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
start=$(date +%s)
RIF_CUDA=ON python3 -m pip install -q --no-build-isolation --no-deps --target "$site" \
  -Cbuild-dir=/tmp/rif-build . 2>&1 | tee "$out/build.log" | tail -20
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import rif_native as r; print(r.build_info()); print('cuda available:', r.cuda_available())"
# A failing test does not stop the timings: one run on the device should tell everything.
python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_reference.py 2>&1 \
  | tee "$out/tests.log" | tail -25 || echo "GPU TESTS FAILED (see above)"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_bench.py 2>&1 | tee "$out/bench.log"
