"""GPU timings for the CUDA backend (run by benchmarks/gpu_check.sh on a machine with a GPU).

End to end from a NumPy array in host memory: Attribution(backend="cuda") + scores on one
metric, best of 3, with the backend's stage timings, at the paper's Table 2 shapes and at
n = 400000, d = 2048; the pinned host-to-device copy rate of X is measured for reference.
"""

import time

import numpy as np

import rif_native as rn
from rif_native import benchmark as rb


def copy_seconds(nbytes: int) -> float:
    """One pinned host-to-device copy of nbytes through CuPy, if present (else NaN)."""
    try:
        import cupy as cp
    except ImportError:
        return float("nan")
    host = cp.cuda.alloc_pinned_memory(nbytes)
    dev = cp.cuda.alloc(nbytes)
    best = np.inf
    for _ in range(3):
        cp.cuda.runtime.deviceSynchronize()
        t0 = time.perf_counter()
        dev.copy_from_host(host.ptr, nbytes)
        cp.cuda.runtime.deviceSynchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    print(f"device: {rn._core.cuda_device()}; build: {rn.build_info()}")
    shapes = {**{k: v for k, v in rb.SHAPES.items() if k != "AutoTruck"}, "large": (400000, 2048)}
    rows = []
    for name, (n, d) in shapes.items():
        p = rb.make_problem(n, d)
        fn = lambda: rn.Attribution(p.X, p.y, p.theta, l2=p.l2, backend="cuda").scores(p.v)  # noqa: E731
        fn()
        best, stages = np.inf, None
        for _ in range(3):
            t0 = time.perf_counter()
            A = rn.Attribution(p.X, p.y, p.theta, l2=p.l2, backend="cuda")
            A.scores(p.v)
            t = time.perf_counter() - t0
            if t < best:
                best, stages = t, A.timings
        rows.append((name, n, d, best, stages, copy_seconds(p.X.nbytes)))
    print()
    print("| dataset | n | d | end to end (ms) | Hessian (ms) | Cholesky (ms) | leverage (ms) | "
          "pinned copy of X (ms) | end to end / copy |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, n, d, best, st, cp_s in rows:
        print(f"| {name} | {n} | {d} | {1e3 * best:.1f} | {1e3 * st['hessian']:.1f} | "
              f"{1e3 * st['cholesky']:.1f} | {1e3 * st['leverage']:.1f} | {1e3 * cp_s:.1f} | "
              f"{best / cp_s:.2f} |")


if __name__ == "__main__":
    main()
