#!/usr/bin/env bash
# Fetches, on a machine that reaches the package registry, the wheels that benchmarks/gpu_check.sh
# needs on an offline GPU machine whose Python (3.12 by default) lacks them: Eigen's headers
# (cmeel-eigen, with cmeel) and OpenBLAS (scipy-openblas32). They land in .whl/, which git
# ignores; a device run must carry that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
mkdir -p .whl
grep -qs '^/.whl/' .git/info/exclude || { mkdir -p .git/info; echo '/.whl/' >> .git/info/exclude; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp --platform any --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  cmeel-eigen==3.4.1 cmeel scipy-openblas32
ls -l .whl
