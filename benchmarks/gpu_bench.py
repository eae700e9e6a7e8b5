"""GPU timings for the CUDA backend (run by benchmarks/gpu_check.sh on a machine with a GPU).

For the paper's Table 2 shapes and n = 400000, d = 2048 (float64), best of 3 after a warm-up:

* end to end from a NumPy array in host memory: ``Attribution(X, backend="cuda")`` plus RIF
  scores on one metric (X crosses the bus once), with the backend's stage timings;
* the same with X already in device memory (a CuPy or PyTorch array, read in place);
* one pinned-memory host-to-device copy of X, the yardstick of the end-to-end goal;
* PyTorch's straightforward pipeline on device X (Hessian by matmul, Cholesky, triangular
  solve, scores), whose leverages and scores must agree with ours.

Goals (issue 5): device X at 400000 x 2048 <= 90 ms; host X end to end <= 1.3 x one pinned copy;
every Table 2 shape end to end < 20 ms. Writes gpu_bench.json and gpu_bench.md into $OUT
(or the current folder) and prints the table last.
"""

import json
import os
import time

import numpy as np

import rif_native as rn
from rif_native import benchmark as rb

LARGE = (400000, 2048)


def _device_tools():
    """(name, to_device, synchronize, pinned_copy_seconds) from PyTorch or CuPy, or None."""
    try:
        import torch

        if torch.cuda.is_available():
            def pinned_copy(nbytes):
                host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
                dev = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
                return _best(lambda: dev.copy_(host, non_blocking=True), torch.cuda.synchronize)

            return ("torch", lambda a: torch.as_tensor(a, device="cuda"),
                    torch.cuda.synchronize, pinned_copy)
    except ImportError:
        pass
    try:
        import cupy as cp

        def pinned_copy(nbytes):
            host = cp.cuda.alloc_pinned_memory(nbytes)
            dev = cp.cuda.alloc(nbytes)
            return _best(lambda: dev.copy_from_host(host.ptr, nbytes),
                         cp.cuda.runtime.deviceSynchronize)

        return ("cupy", cp.asarray, cp.cuda.runtime.deviceSynchronize, pinned_copy)
    except ImportError:
        return None


def _best(fn, sync, rounds=3):
    """Best wall time of fn over `rounds` runs after one warm-up, synchronising around each."""
    fn()
    sync()
    best = np.inf
    for _ in range(rounds):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def torch_pipeline(X, y, theta, v, l2):
    """The straightforward PyTorch way, fp64 on device: leverages and RIF scores."""
    import torch

    y, theta, v = (torch.as_tensor(a, device=X.device) for a in (y, theta, v))
    z = X @ theta
    s = torch.sigmoid(z)
    r, a = s - y, s * (1 - s)
    H = (X * a[:, None]).T @ X + l2 * torch.eye(X.shape[1], dtype=X.dtype, device=X.device)
    L = torch.linalg.cholesky(H)
    Z = torch.linalg.solve_triangular(L, X.T, upper=False)
    h = a * (Z * Z).sum(0)
    u = torch.cholesky_solve(v[:, None], L)[:, 0]
    return h, r * (X @ u) / (1 - h)


def kernel_table(p, Xd, sync) -> str:
    """Device X at the large shape with each choice of Hessian and leverage kernel
    (RIF_CUDA_HESSIAN, RIF_CUDA_LEVERAGE): which is fastest depends on the GPU. A choice that
    fails is reported in its row; the others still run."""
    out = ["| Hessian kernel | leverage kernel | device X (ms) | Hessian pass (ms) | "
           "leverage pass (ms) |", "| --- | --- | ---: | ---: | ---: |"]
    try:
        for hk in ("syrk", "gemm", "panels"):
            for lk in ("gemm", "trmm", "trsm", "panels"):
                os.environ["RIF_CUDA_HESSIAN"], os.environ["RIF_CUDA_LEVERAGE"] = hk, lk
                try:
                    t = _best(lambda: rn.Attribution(Xd, p.y, p.theta, l2=p.l2,
                                                     backend="cuda").scores(p.v), sync)
                    st = rn.Attribution(Xd, p.y, p.theta, l2=p.l2, backend="cuda").timings
                    out.append(f"| {hk} | {lk} | {1e3 * t:.1f} | {1e3 * st['hessian']:.1f} | "
                               f"{1e3 * st['leverage']:.1f} |")
                except Exception as exc:  # noqa: BLE001 - report it, go on with the others
                    out.append(f"| {hk} | {lk} | error: {' '.join(str(exc).split())[:150]} | | |")
                print(out[-1], flush=True)
    finally:
        os.environ.pop("RIF_CUDA_HESSIAN", None)
        os.environ.pop("RIF_CUDA_LEVERAGE", None)
    return "\n".join(out)


def main() -> None:
    print(f"device: {rn._core.cuda_device()}; build: {rn.build_info()}", flush=True)
    tools = _device_tools()
    shapes = {**{k: v for k, v in rb.SHAPES.items() if k != "AutoTruck"}, "large": LARGE}
    rows, large_problem = [], None
    for name, (n, d) in shapes.items():
        p = rb.make_problem(n, d)
        kw = dict(l2=p.l2, backend="cuda")
        sync = tools[2] if tools else (lambda: None)
        host_s = _best(lambda: rn.Attribution(p.X, p.y, p.theta, **kw).scores(p.v), sync)
        A = rn.Attribution(p.X, p.y, p.theta, **kw)
        ref_h, ref_s = A.leverage, A.scores(p.v)
        row = dict(dataset=name, n=n, d=d, host_ms=1e3 * host_s,
                   stages_ms={k: 1e3 * t for k, t in A.timings.items()})
        if name == "CatDog":  # exact retraining without 1%, its passes on the device
            T = np.random.default_rng(0).choice(n, n // 100, replace=False)
            row["retrain_ms"] = 1e3 * _best(lambda: A.retrain(T), sync)
            cpu = rn.Attribution(p.X, p.y, p.theta, l2=p.l2, backend="cpu")
            row["retrain_cpu_ms"] = 1e3 * _best(lambda: cpu.retrain(T), sync)
            ref = cpu.retrain(T).theta
            row["retrain_rel"] = float(np.linalg.norm(A.retrain(T).theta - ref)
                                       / np.linalg.norm(ref))
            # Newton steps of 200 sets of 10: the batched Woodbury solves on the device
            sets = [np.random.default_rng(s).choice(n, 10, replace=False) for s in range(200)]
            row["ns_ms"] = 1e3 * _best(lambda: A.group_effect(sets, "ns"), sync)
            row["ns_cpu_ms"] = 1e3 * _best(lambda: cpu.group_effect(sets, "ns"), sync)
            ref = cpu.group_effect(sets, "ns")
            row["ns_rel"] = float(np.linalg.norm(A.group_effect(sets, "ns") - ref)
                                  / np.linalg.norm(ref))
        if tools:
            lib, to_device, sync, pinned_copy = tools
            Xd = to_device(p.X)
            sync()
            row["device_ms"] = 1e3 * _best(
                lambda: rn.Attribution(Xd, p.y, p.theta, **kw).scores(p.v), sync)
            Ad = rn.Attribution(Xd, p.y, p.theta, **kw)
            row["device_vs_host_leverage"] = float(
                np.linalg.norm(Ad.leverage - ref_h) / np.linalg.norm(ref_h))
            if name != "large":  # the full n x p RIF matrix, computed on the device
                row["rif_matrix_ms"] = 1e3 * _best(Ad.rescaled_influence, sync)
            row["copy_ms"] = 1e3 * pinned_copy(p.X.nbytes)
            if lib == "torch":
                row["torch_ms"] = 1e3 * _best(
                    lambda: torch_pipeline(Xd, p.y, p.theta, p.v, p.l2), sync)
                th, ts = (t.cpu().numpy() for t in torch_pipeline(Xd, p.y, p.theta, p.v, p.l2))
                row["torch_leverage_rel"] = float(np.linalg.norm(th - ref_h) / np.linalg.norm(ref_h))
                row["torch_scores_rel"] = float(np.linalg.norm(ts - ref_s) / np.linalg.norm(ref_s))
            if name == "large":
                large_problem = (p, Xd)  # reused by the kernel table
            del Xd, Ad
        rows.append(row)
        print(json.dumps(row), flush=True)

    def f(row, key, fmt="{:.1f}"):
        return fmt.format(row[key]) if key in row else "n/a"

    lines = [
        "| dataset | n | d | host X end to end (ms) | Hessian pass (ms) | Cholesky (ms) | "
        "leverage pass (ms) | device X (ms) | pinned copy of X (ms) | end to end / copy | "
        "PyTorch pipeline (ms) | PyTorch / ours (device X) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        st = r["stages_ms"]
        ratio = f"{r['host_ms'] / r['copy_ms']:.2f}" if "copy_ms" in r else "n/a"
        speed = (f"{r['torch_ms'] / r['device_ms']:.2f}" if "torch_ms" in r else "n/a")
        lines.append(
            f"| {r['dataset']} | {r['n']} | {r['d']} | {r['host_ms']:.1f} | {st['hessian']:.1f} | "
            f"{st['cholesky']:.1f} | {st['leverage']:.1f} | {f(r, 'device_ms')} | "
            f"{f(r, 'copy_ms')} | {ratio} | {f(r, 'torch_ms')} | {speed} |")
    large = rows[-1]
    goals = [
        f"goal device X at {LARGE[0]} x {LARGE[1]} <= 90 ms: {f(large, 'device_ms')} ms",
        f"goal host X end to end <= 1.3 x pinned copy: "
        f"{large['host_ms'] / large['copy_ms']:.2f} x" if "copy_ms" in large else "copy: n/a",
        "goal every Table 2 shape end to end < 20 ms: "
        + ", ".join(f"{r['dataset']} {r['host_ms']:.1f}" for r in rows[:-1]),
        "retrain CatDog without 1% (ms): GPU passes "
        + ", ".join(f"{f(r, 'retrain_ms')} vs CPU {f(r, 'retrain_cpu_ms')} (relative "
                    f"difference {r.get('retrain_rel', float('nan')):.1e})"
                    for r in rows if r["dataset"] == "CatDog"),
        "Newton steps CatDog, 200 sets of 10 (ms): GPU "
        + ", ".join(f"{f(r, 'ns_ms')} vs CPU {f(r, 'ns_cpu_ms')} (relative difference "
                    f"{r.get('ns_rel', float('nan')):.1e})"
                    for r in rows if r["dataset"] == "CatDog"),
        "full RIF matrix from device X (ms, copied to host memory): "
        + ", ".join(f"{r['dataset']} {f(r, 'rif_matrix_ms')}" for r in rows[:-1]),
        "agreement (relative): device vs host X leverage "
        + ", ".join(f"{r.get('device_vs_host_leverage', float('nan')):.1e}" for r in rows)
        + "; PyTorch vs ours leverage "
        + ", ".join(f"{r.get('torch_leverage_rel', float('nan')):.1e}" for r in rows),
    ]
    out = os.environ.get("OUT", ".")
    with open(os.path.join(out, "gpu_bench.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    text = "\n".join(lines + [""] + goals)
    with open(os.path.join(out, "gpu_bench.md"), "w") as fh:
        fh.write(text + "\n")
    print()
    print(text, flush=True)
    if large_problem is not None:  # last: a failure here loses nothing above
        print()
        table = kernel_table(*large_problem, tools[2])
        with open(os.path.join(out, "gpu_bench.md"), "a") as fh:
            fh.write("\n" + table + "\n")
        print()
        print(table)


if __name__ == "__main__":
    main()
