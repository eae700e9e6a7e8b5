"""Sparse X (bag of words): the passes that read only the nonzeros, side by side with the same
X dense in memory (the kernel's dense passes, at the matrix-product rate) and with a SciPy
pipeline built on sparse products. Timed: Attribution, the leverages and every sample's RIF
score on one metric (Table 2's unit of work), and the Newton fit.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_sparse.py`` and
compare the rows of each group."""

import functools

import numpy as np
import pytest

import rif_native as rn
from rif_native import datasets

sp = pytest.importorskip("scipy.sparse")

L2 = 1.0


@functools.lru_cache(maxsize=3)
def problem(name):
    """(sparse X, y, theta, v): the SMS Spam bag of words (1500 words, or the whole
    vocabulary), or a synthetic text-like X of 100,000 x 2,000 at 0.5% nonzeros."""
    if name.startswith("sms"):
        D = datasets.load_sms_spam(max_features=1500 if name == "sms" else None)
        X, y = sp.csr_matrix(D.X), D.y
    else:
        rng = np.random.default_rng(3)
        X = sp.random(100_000, 2_000, density=0.005, format="csr", random_state=4)
        X.data = np.log1p(np.ceil(5 * X.data))
        y = (rng.random(X.shape[0]) < 0.3).astype(float)
    theta = rn.fit(X, y, l2=L2, fit_intercept=True).theta
    v = np.random.default_rng(0).standard_normal(X.shape[1] + 1)
    return X, y, theta, v


def _ours(X, y, theta, v):
    A = rn.Attribution(X, y, theta, l2=L2, fit_intercept=True, progress=False)
    return A.leverage, A.scores(v, method="rif")


def _scipy_sparse(X, y, theta, v):
    """H from sparse products, its Cholesky factor, H^{-1} once, leverages from the sparse
    product X~ H^{-1} (nnz x p) and the scores from one solve."""
    from scipy.linalg import cho_factor, cho_solve

    n, d = X.shape
    Xt = sp.hstack([X, sp.csr_matrix(np.ones((n, 1)))], format="csr")
    s = 1.0 / (1.0 + np.exp(-(Xt @ theta)))
    r, a = s - y, s * (1.0 - s)
    H = (Xt.T @ sp.diags(a) @ Xt).toarray()
    H[np.arange(d), np.arange(d)] += L2
    F = cho_factor(H, lower=True, check_finite=False)
    Hinv = cho_solve(F, np.eye(d + 1), check_finite=False)
    h = a * np.asarray(Xt.multiply(Xt @ Hinv).sum(axis=1)).ravel()
    return h, r * (Xt @ cho_solve(F, v, check_finite=False)) / (1.0 - h)


def _check(got, want):
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-8 * max(1.0, np.abs(w).max())


CASES = ["sms", "sms_vocabulary", "synthetic"]
ROWS = ["sparse", "dense_array", "scipy_sparse"]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("case", CASES)
def test_sparse_attribution(benchmark, case, row):
    X, y, theta, v = problem(case)
    benchmark.group = f"sparse attribution: {case} {X.shape[0]} x {X.shape[1]}, " \
                      f"{X.nnz / (X.shape[0] * X.shape[1]):.2%} nonzeros"
    args = (X.toarray() if row == "dense_array" else X, y, theta, v)
    fn = _scipy_sparse if row == "scipy_sparse" else _ours
    rounds = 1 if case == "synthetic" and row == "dense_array" else 3
    got = benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=1)
    _check(got, _ours(*problem(case)))


@pytest.mark.parametrize("row", ["sparse", "dense_array"])
@pytest.mark.parametrize("case", ["sms", "sms_vocabulary"])
def test_sparse_fit(benchmark, case, row):
    X, y, _, _ = problem(case)
    benchmark.group = f"sparse fit: {case} {X.shape[0]} x {X.shape[1]}"
    Xa = X.toarray() if row == "dense_array" else X
    res = benchmark.pedantic(rn.fit, args=(Xa, y), kwargs=dict(l2=L2, fit_intercept=True),
                             rounds=3, iterations=1, warmup_rounds=1)
    assert res.converged


@pytest.mark.parametrize("passes", ["sparse", "dense"])
@pytest.mark.parametrize("density", [0.05, 0.1, 0.2])
@pytest.mark.parametrize("d", [1000, 4000])
def test_sparse_crossover(benchmark, monkeypatch, d, density, passes):
    """Where the sparse passes stop paying: the same sparse X read by each kernel (the switch
    rif_native.sources.SPARSE_DENSITY forced), n = 20,000 or 12,000."""
    from rif_native import sources

    n = 20_000 if d == 1000 else 12_000
    X = sp.random(n, d, density=density, format="csr", random_state=1)
    rng = np.random.default_rng(2)
    y = (rng.random(n) < 0.4).astype(float)
    theta = 0.01 * rng.standard_normal(d + 1)
    monkeypatch.setattr(sources, "SPARSE_DENSITY", 1.0 if passes == "sparse" else 0.0)
    benchmark.group = f"sparse crossover: {n} x {d} at {density:.0%} nonzeros"
    benchmark.pedantic(_ours, args=(X, y, theta, np.ones(d + 1)), rounds=2, iterations=1,
                       warmup_rounds=0)
