"""The memory checks' estimates against what a call adds to the process's peak resident set.

Each case runs in a fresh process (Linux: the peak, VmHWM, is reset to the current resident set
through /proc/self/clear_refs just before the call). The call runs once at the same shape first,
so that the BLAS's own per-thread buffers, which live as long as the process, are in place; and
glibc's malloc is told to map every block of 64 KiB or more on its own
(MALLOC_MMAP_THRESHOLD_), so that what a call frees goes back to the system and what the second
call needs shows up in the peak again (with its default, a threshold that rises as blocks are
freed, the second call reuses the first one's heap and seems to need nothing).

The estimate must cover the measured growth, up to 4 MiB of Python objects and small
allocations, and must not ask for more than 3 times what the call takes, so that the check
does not refuse work that fits. (Row blocks were once counted at 16 MiB per thread and buffer,
2.3 times what a pass holds at p = 51; that hid a tall fit's uncounted per-sample arrays.)
"""

import json
import os
import platform
import subprocess
import sys

import pytest

SCRIPT = r"""
import gc, json, sys
import numpy as np
import rif_native as rn
from rif_native import _memory

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

needs = []
real = _memory.require
def spy(nbytes, *args, **kwargs):
    needs.append(float(nbytes))
    return real(nbytes, *args, **kwargs)
_memory.require = spy

kind, n, d, K, threads, size = sys.argv[1], *map(int, sys.argv[2:7])
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d)) / np.sqrt(d)
kw = dict(l2=1.0, fit_intercept=True, num_threads=threads)
if kind.startswith("binary"):
    y = (rng.random(n) < 0.5).astype(float)
    theta = 0.1 * rng.standard_normal(d + 1)
    if kind == "binary-mixed":  # float32 X, float32 products
        X, kw["precision"] = X.astype(np.float32), "mixed"
    elif kind == "binary-file":  # float32 X read from its file past the page cache
        import os, tempfile
        path = os.path.join(tempfile.mkdtemp(), "X.npy")
        np.save(path, X.astype(np.float32))
        X = rn.sources.Source([np.load(path, mmap_mode="r")], direct=True)
    elif kind == "binary-h5":  # float32 X in 8 HDF5 datasets, read in chunks by readers
        import os, tempfile, h5py
        rn.sources.READ_BYTES = 2**20  # (reads of 1 MiB: several chunks per shard)
        f = h5py.File(os.path.join(tempfile.mkdtemp(), "X.h5"), "w")
        X = [f.create_dataset(str(j), data=part.astype(np.float32), chunks=(1024, d))
             for j, part in enumerate(np.array_split(X, 8))]
    call = lambda: rn.Attribution(X, y, theta, backend="cpu", **kw)  # (the GPU's: no check)
else:
    y = rng.integers(0, K, n)
    theta = 0.1 * rng.standard_normal((K, d + 1))
    call = ((lambda: rn.MultinomialAttribution(X, y, theta, **kw)) if kind == "multinomial"
            else (lambda: rn.multinomial.fit(X, y, **kw)))
    if kind.startswith("retrain"):  # Newton steps with fresh Hessians from the first step
        from rif_native import _multinomial_retrain
        _multinomial_retrain._STALLS = 0
        if kind == "retrain-l2=0":  # (whose first call counts X's nonzeros: measured)
            kw["l2"] = 0.0
        att = rn.MultinomialAttribution(X, y, rn.multinomial.fit(X, y, **kw).theta, **kw)
        sets = [rng.choice(n, size, replace=False)]
        if kind == "retrain-two":  # and the largest set that takes Woodbury's panels
            sets.append(rng.choice(n, d + 1, replace=False))  # (k (K - 1) = q)
        call = lambda: att.retrain(sets)
if kind != "retrain-l2=0":
    call()
gc.collect()
needs.clear()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
out = call()
if kind.startswith("retrain"):
    assert out.refreshed.all() and out.converged.all(), out
print(json.dumps({"growth": status("VmHWM") - before, "estimate": max(needs)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux")
                    or not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's allocator keeps freed memory in quarantine")
@pytest.mark.parametrize("kind, n, d, K, threads, size", [
    ("binary", 4000, 300, 2, 2, 0),
    # tall and narrow (row blocks of 8192 rows per thread), and from p = 1024, where the
    # plan depends on the threads the call gets (n >= 32 p or not)
    ("binary", 200_000, 50, 2, 2, 0),
    ("binary", 3000, 1100, 2, 2, 0),
    ("binary", 40_000, 1100, 2, 2, 0),
    # The multinomial peaks: the Hessian pass (15 p x p pair blocks per thread at K = 6, then
    # the q x q H assembled from their sums) or the leverage pass (H, H^{-1} and 15 pair
    # factors). Before the estimates counted the passes, the attribution here took 84.7 MB
    # against 56.0 MB estimated (66.7 MB since the kernel reads H^{-1} in place), and the fit
    # 67.4 against 36.8 (54.4 MB since it drops the last pass before the next).
    ("multinomial", 4000, 300, 6, 2, 0),
    ("multinomial", 4000, 300, 6, 1, 0),
    ("multifit", 4000, 300, 6, 2, 0),
    ("multifit", 4000, 300, 6, 1, 0),
    # Tall and narrow: the row blocks dominate.
    ("multinomial", 200_000, 50, 3, 2, 0),
    ("multifit", 200_000, 50, 3, 2, 0),
    # Retraining one set with Newton steps, beyond the attribution: a small set through
    # Woodbury; a large one (k (K - 1) > q) through H less its curvature, inverted; tall and
    # narrow with a set of 60,000, whose rows are read in blocks. Before the refresh dropped
    # the last pass's H and inverse, the first took 86.4 MB.
    ("retrain", 4000, 300, 6, 2, 10),
    ("retrain", 4000, 300, 6, 1, 1500),
    ("retrain", 200_000, 50, 3, 2, 60_000),
    # A set above k (K - 1) = q (a fresh inverse) checked with one just below it, whose
    # Woodbury panels take more: 127.1 MB against 75.4 MB when only the largest set was
    # counted.
    ("retrain-two", 4000, 300, 6, 2, 400),
    # l2 = 0 (the default): the first retraining counts X's nonzeros per feature, once in
    # blocks of 65,536 rows (119.3 MB at 100,000 x 200, K = 3, against 31.2 MB estimated).
    ("retrain-l2=0", 100_000, 200, 3, 2, 50),
    # float32 products (a float32 copy of each block); float32 X read past the page cache
    # (the reader's chunk buffers, which were not counted)
    ("binary-mixed", 20_000, 500, 2, 2, 0),
    ("binary-file", 200_000, 50, 2, 2, 0),
    # shards read in chunks: the readers of the last few shards hold theirs (a reader per shard
    # held its chunks, uncounted, before)
    ("binary-h5", 400_000, 50, 2, 2, 0),
])
def test_estimate_covers_what_the_call_takes(kind, n, d, K, threads, size):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    env.pop("RIF_BACKEND", None)
    args = [kind, str(n), str(d), str(K), str(threads), str(size)]
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    growth, estimate = got["growth"], got["estimate"]
    assert growth <= estimate + 4 * 2**20, (growth, estimate)
    assert estimate <= 3 * growth, (growth, estimate)
