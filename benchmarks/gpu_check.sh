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
else
  echo "no .whl/ wheels (device sessions: carry .whl, made by benchmarks/gpu_wheels.sh):" \
       "Eigen must then come from the system"
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import sys, numpy; print('python', sys.version.split()[0], 'numpy', numpy.__version__)"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || true
python3 -c "import cupy; print('cupy', cupy.__version__)" || true
start=$(date +%s)
rm -rf "$site"/rif_native "$site"/rif_native-*.dist-info  # a rerun must test the new build
RIF_CUDA=ON python3 -m pip install -q --upgrade --no-build-isolation --no-deps --target "$site" \
  -Cbuild-dir=/tmp/rif-build . 2>&1 | tee "$out/build.log" | tail -20
echo "build: $(( $(date +%s) - start )) s"
python3 -c "import rif_native as r; print(r.build_info()); print('cuda available:', r.cuda_available())"
# A failing test does not stop the timings: one run on the device should tell everything.
# Time limits: a hang must not eat the device time of the timings that follow.
timeout -k 10 240 python3 -m pytest -q -p no:cacheprovider -rs -o faulthandler_timeout=90 \
  tests/test_cuda.py tests/test_reference.py tests/test_edge_cases.py 2>&1 | tee "$out/tests.log" | tail -25 \
  || echo "GPU TESTS FAILED OR TIMED OUT (see above)"
PYTHONUNBUFFERED=1 timeout -k 10 300 python3 benchmarks/gpu_bench.py 2>&1 | tee "$out/bench.log"
