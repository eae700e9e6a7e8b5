"""Peak memory of one attribution (leverages + scores) at the CatDog shape, beyond X itself.

Run: python benchmarks/peak_memory.py [float64|float32]. Linux only: the process's peak resident
set (VmHWM) is reset to its current size just before Attribution(...) + scores(...) (by writing
5 to /proc/self/clear_refs), so the peak's growth is exactly what the attribution added.
Goal (issue 4): at most 3 d x d doubles plus one block, no n x d temporaries.
"""

import gc
import sys

import numpy as np

import rif_native as rn


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main(dtype_name: str = "float64", n: int = 9600, d: int = 2048) -> None:
    dtype = np.dtype(dtype_name)
    rng = np.random.default_rng(0)
    X = np.empty((n, d), dtype=dtype)
    for i in range(0, n, 256):
        X[i:i + 256] = rng.standard_normal((min(256, n - i), d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(float)
    theta, v = 0.1 * rng.standard_normal(d), rng.standard_normal(d)
    rn.Attribution(X[:64], y[:64], theta, l2=1.0)  # load the libraries first
    gc.collect()
    before = _status_bytes("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current resident set
    A = rn.Attribution(X, y, theta, l2=1.0)
    A.scores(v)
    growth = _status_bytes("VmHWM") - before
    dd = d * d * 8
    print(f"{dtype.name}: n={n} d={d}: peak growth {growth / 2**20:.0f} MiB = {growth / dd:.2f} "
          f"d x d doubles (X is {X.nbytes / 2**20:.0f} MiB and is not copied)")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["float64"]))
