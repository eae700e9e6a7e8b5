"""Multinomial attribution (rif_native.MultinomialAttribution): every sample's RIF score on one
metric, against the floor its flop count gives at the measured DGEMM rate, and against the
obvious NumPy implementation (the explicit inverse of the full Kp x Kp Hessian on the
sum-to-zero subspace, then per-sample K x K solves), checked equal before it is timed.

Run beside the binary Table 2 benchmark so that its ratios come from the same run:
``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_multinomial.py
benchmarks/test_table2.py -k "multinomial or CatDog"``.

Flops of rif-native's algorithm (n samples, p = d + 1, m = K - 1, q = m p): the Hessian's
m (m + 1) / 2 distinct p x p blocks as weighted rank updates, n p^2 each; the inverse of the
q x q reduced Hessian, q^3; the leverage pass, one triangular product per class pair, n p^2
each: ``m (m + 1) n p^2 + q^3`` in all.
"""

import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rif_native as rn
from rif_native._softmax import basis


@functools.lru_cache(maxsize=2)
def softmax_problem(n, d, K, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 3.0
    W = rng.standard_normal((K, d + 1))
    Z = np.hstack([X, np.ones((n, 1))]) @ W.T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    theta = 0.5 * W  # not the minimiser: the scores are defined at any theta
    direction = rng.standard_normal((K, d + 1))
    direction -= direction.mean(axis=0)  # a metric's gradient: rows sum to zero
    return X, y, theta, direction


def flops(n, d, K):
    p, m = d + 1, K - 1
    return m * (m + 1) * n * p * p + (m * p) ** 3


def ours(problem, l2=1.0):
    X, y, theta, direction = problem
    A = rn.MultinomialAttribution(X, y, theta, l2=l2, fit_intercept=True)
    return A.scores(direction)


def numpy_obvious(problem, l2=1.0, batch=256):
    """Explicit pseudo-inverse of the full Hessian, then each sample's K x K Woodbury system."""
    X, y, theta, direction = problem
    n, d = X.shape
    K, p = theta.shape
    Xt = np.hstack([X, np.ones((n, 1))])
    Z = Xt @ theta.T
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    A = P[:, :, None] * np.eye(K) - P[:, :, None] * P[:, None, :]
    H = np.zeros((K * p, K * p))
    for k in range(K):
        for l in range(K):
            H[k * p:(k + 1) * p, l * p:(l + 1) * p] = Xt.T @ (Xt * A[:, k, l, None])
    H += l2 * np.kron(np.eye(K), np.diag(np.r_[np.ones(d), 0.0]))
    B = np.kron(basis(K), np.eye(p))
    Hp = B @ np.linalg.inv(B.T @ H @ B) @ B.T
    R = P.copy()
    R[np.arange(n), y] -= 1.0
    v = Hp @ direction.reshape(-1)
    out = np.empty(n)
    for b in range(0, n, batch):
        x = Xt[b:b + batch]
        k = len(x)
        V = np.zeros((k, K, K * p))  # V_i = I_K kron x_i, one column per class
        for c in range(K):
            V[:, c, c * p:(c + 1) * p] = x
        HV = (V.reshape(k * K, K * p) @ Hp).reshape(k, K, K * p)  # H^+ V_i (Hp symmetric)
        S = V @ np.swapaxes(HV, 1, 2)
        c = np.linalg.solve(np.eye(K) - A[b:b + k] @ S, R[b:b + k, :, None])[..., 0]
        out[b:b + k] = np.einsum("ikq,q,ik->i", V, v, c)
    return out


IMPLS = {"rif-native": ours, "baseline-numpy-obvious": numpy_obvious}


@pytest.mark.parametrize("impl", list(IMPLS))
def test_against_numpy(benchmark, impl, gemm_peak):
    """n = 5,000, d = 256, K = 10 (goal: rif-native at least 5x faster, equal results)."""
    prob = softmax_problem(5000, 256, 10)
    benchmark.group = "multinomial n=5000 d=256 K=10"
    benchmark.extra_info["floor_s"] = flops(5000, 256, 10) / gemm_peak
    s = benchmark.pedantic(IMPLS[impl], args=(prob,), rounds=2, iterations=1, warmup_rounds=1)
    ref = ours(prob)
    np.testing.assert_allclose(s, ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_cifar_shape(benchmark, gemm_peak):
    """n = 50,000, d = 512, K = 10 (goal: within 3x of the floor)."""
    n, d, K = 50_000, 512, 10
    prob = softmax_problem(n, d, K)
    benchmark.group = "multinomial n=50000 d=512 K=10"
    floor = flops(n, d, K) / gemm_peak
    benchmark.extra_info["floor_s"] = floor
    benchmark.extra_info["gemm_gflops"] = gemm_peak / 1e9
    benchmark.pedantic(ours, args=(prob,), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["ratio_to_floor"] = benchmark.stats.stats.min / floor


def test_cifar_peak_memory(benchmark):
    """Peak memory of the same attribution beyond X, in a fresh process (VmHWM reset just
    before it): goal a few q x q doubles (q = (K - 1)(d + 1))."""
    n, d, K = 50_000, 512, 10
    code = textwrap.dedent(f"""
        import numpy as np, rif_native as rn
        from test_multinomial import softmax_problem, ours
        prob = softmax_problem({n}, {d}, {K})
        def status(field):
            for line in open("/proc/self/status"):
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        ours(prob)
        print(status("VmHWM") - before)
    """)
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc")
    here = os.path.dirname(__file__)
    out = benchmark.pedantic(
        lambda: subprocess.run([sys.executable, "-c", code], cwd=here, capture_output=True,
                               text=True, check=True).stdout, rounds=1, iterations=1)
    grown = int(out.strip().splitlines()[-1])
    q = (K - 1) * (d + 1)
    benchmark.group = "multinomial peak memory"
    benchmark.extra_info["peak_growth_bytes"] = grown
    benchmark.extra_info["q_by_q_doubles"] = grown / (8.0 * q * q)
    benchmark.extra_info["X_bytes"] = 8 * n * d


def _leverage_inputs(n, d, K):
    X, y, theta, _ = softmax_problem(n, d, K)
    A = rn.MultinomialAttribution(X, y, theta, l2=1.0, fit_intercept=True)
    return X, A._Hinv, K - 1, A._pb.c.centre


def quadforms_triangular(X, Hinv, m, centre):
    """rif-native's leverage pass: one triangular product per class pair (n p^2 flops each)."""
    from rif_native import _core

    return _core.softmax_quadforms(X, Hinv, m, True, centre, 0)


def quadforms_gemm(X, Hinv, m, centre, block=4096):
    """The alternative: products with whole block rows of H^{-1}, x_i^T (H^{-1})_{k,l>=k} for
    each k (about m (m + 1) n p^2 flops, twice the triangular products', but as GEMMs)."""
    n, d = X.shape
    p = d + 1
    k_idx, l_idx = np.triu_indices(m)
    out = np.empty((n, len(k_idx)))
    for b in range(0, n, block):
        Xt = np.hstack([X[b:b + block] - centre, np.ones((min(block, n - b), 1))])
        col = 0
        for k in range(m):
            W = Xt @ Hinv[k * p:(k + 1) * p, k * p:]  # (rows, (m - k) p)
            W = W.reshape(len(Xt), m - k, p)
            out[b:b + block, col:col + m - k] = np.einsum("ilp,ip->il", W, Xt)
            col += m - k
    return out


LEVERAGE = {"triangular (rif-native)": quadforms_triangular, "gemm blocks": quadforms_gemm}


@pytest.mark.parametrize("how", list(LEVERAGE))
def test_leverage_pass_choices(benchmark, how, gemm_peak):
    """The leverage pass alone at n = 20,000, d = 512, K = 10: triangular products of the
    pair factors (m (m + 1) / 2 n p^2 flops) against GEMMs with H^{-1}'s block rows
    (m (m + 1) n p^2), equal results checked first."""
    n, d, K = 20_000, 512, 10
    X, Hinv, m, centre = _leverage_inputs(n, d, K)
    ref = quadforms_triangular(X, Hinv, m, centre)
    got = LEVERAGE[how](X, Hinv, m, centre)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-10 * np.abs(ref).max())
    benchmark.group = "multinomial leverage pass n=20000 d=512 K=10"
    p = d + 1
    pairs = m * (m + 1) // 2
    benchmark.extra_info["flops"] = (pairs if how.startswith("tri") else 2 * pairs) * n * p * p
    benchmark.extra_info["floor_s"] = benchmark.extra_info["flops"] / gemm_peak
    benchmark.pedantic(LEVERAGE[how], args=(X, Hinv, m, centre), rounds=2, iterations=1,
                       warmup_rounds=0)
