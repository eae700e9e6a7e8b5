"""fit's cheaper steps: Hessians from a sample of rows far from the optimum (n >= 512 p), and
chord steps that reuse the last factor near it. Only the steps change: every fit here must
land where a plain float64 Newton iteration written in NumPy lands, within what the gradient
tolerance certifies (||theta - theta*|| <= ||g|| / lambda_min(H), for both)."""

import numpy as np
import pytest

import rif_native as rn


def design(X, intercept):
    return np.c_[X, np.ones(len(X))] if intercept else np.asarray(X, dtype=np.float64)


def newton_reference(X, y, l2, intercept=False, tol=1e-12):
    """Plain Newton on the penalised logistic loss, float64 NumPy, every step exact."""
    Z = design(X, intercept)
    P = np.eye(Z.shape[1])
    if intercept:
        P[-1, -1] = 0
    theta = np.zeros(Z.shape[1])
    for _ in range(100):
        s = 1 / (1 + np.exp(-Z @ theta))
        g = Z.T @ (s - y) + l2 * P @ theta
        H = Z.T @ (Z * (s * (1 - s))[:, None]) + l2 * P
        if np.linalg.norm(g) <= tol * max(1.0, np.linalg.norm(Z.T @ (0.5 - y))):
            break
        theta = theta - np.linalg.solve(H, g)
    return theta, H


def assert_same_minimiser(res, X, y, l2, intercept=False, tol=1e-10):
    ref, H = newton_reference(X, y, l2, intercept)
    Z = design(X, intercept)
    gtol = tol * max(1.0, np.linalg.norm(Z.T @ (0.5 - y)))
    bound = 2 * gtol / np.linalg.eigvalsh(H)[0]
    assert res.converged
    assert np.linalg.norm(res.theta - ref) <= bound


def planted(n, d, seed, scale=2.0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d) * scale / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(float)
    return X, y


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("precision", ["double", "mixed"])
def test_sampled_hessians_reach_the_minimiser(intercept, precision):
    X, y = planted(40000, 30, seed=1)  # n >= 512 p: the first steps sample rows
    res = rn.fit(X, y, l2=1.0, fit_intercept=intercept, precision=precision)
    assert res.sampled_hessians >= 1
    assert_same_minimiser(res, X, y, 1.0, intercept)


def test_small_n_builds_every_hessian_from_all_rows():
    X, y = planted(5000, 30, seed=2)  # n < 512 p
    res = rn.fit(X, y, l2=1.0)
    assert res.sampled_hessians == 0 and res.hessians >= 1
    assert_same_minimiser(res, X, y, 1.0)


def test_a_sampled_hessian_that_is_singular_falls_back_to_every_row():
    """Feature 9 is nonzero only on rows the sample skips (the sample is the rows i with
    i % k == 0, k = n // (256 p) = 7 here), and l2 = 0: the sampled Hessian has a zero column,
    which no rounding can hide. The fit builds it from every row instead."""
    n, d = 20000, 10
    X, y = planted(n, d, seed=3)
    stride = n // (256 * d)
    assert stride == 7
    rare = np.array([i for i in range(1, 400) if i % stride][:60])
    X[:, 9] = 0.0
    X[rare, 9] = np.random.default_rng(4).standard_normal(rare.size)
    res = rn.fit(X, y, l2=0.0)
    assert res.sampled_hessians == 1 and res.hessians >= 1
    assert_same_minimiser(res, X, y, 0.0)


def test_chord_steps_near_the_optimum():
    """Started close to the optimum (gradient 1e-4 of its scale), the fit builds one Hessian
    and converges on chord steps with its factor (each cuts the gradient norm by far more than
    tenfold here)."""
    X, y = planted(3000, 200, seed=5)
    ref, H = newton_reference(X, y, 1.0)
    g0 = np.linalg.norm(X.T @ (0.5 - y))
    step = np.random.default_rng(6).standard_normal(ref.size)
    theta0 = ref + step * (1e-4 * g0 / np.linalg.norm(H @ step))
    res = rn.fit(X, y, l2=1.0, theta0=theta0)
    assert res.hessians == 1 and res.sampled_hessians == 0
    assert res.n_iter >= 2
    assert_same_minimiser(res, X, y, 1.0)


def test_source_fit_counts_its_passes(tmp_path):
    X, y = planted(30000, 25, seed=7)
    path = tmp_path / "x.npy"
    np.save(path, X.astype(np.float32))
    X32 = np.load(path)
    mem = rn.fit(X32, y, l2=1.0, num_threads=1)
    src = rn.fit(str(path), y, l2=1.0, num_threads=1, progress=False)
    assert src.sampled_hessians >= 1 and mem.sampled_hessians >= 1
    assert_same_minimiser(mem, X32.astype(np.float64), y, 1.0)
    # one pass per visited point: the start and each step (no step here is shortened)
    assert src.passes == src.n_iter + 1
    assert_same_minimiser(src, X32.astype(np.float64), y, 1.0)


def test_no_sampling_when_the_sample_holds_no_weight():
    """Every sampled row (i % 2 == 0 here) has weight 0: a Hessian from them would be l2 I.
    fit counts the sample's weighted rows and builds every Hessian from all rows."""
    n = 2048
    X, y = planted(n, 4, seed=8)
    w = (np.arange(n) % 2 != 0).astype(float)
    assert n // (256 * 4) == 2
    for l2 in (1e-10, 1e-6):
        res = rn.fit(X, y, l2=l2, sample_weight=w)
        assert res.sampled_hessians == 0
        assert_same_minimiser(res, X[w > 0], y[w > 0], l2)


def test_mixed_and_sampled_fallbacks_chain():
    """n >= 512 p with near-duplicate columns: the first Hessian is sampled and float32; if
    it does not factor, fit drops the sample, then float32, and still converges to the
    minimiser of the float64 fit."""
    rng = np.random.default_rng(8)
    n, copies = 23000, 40
    X = rng.standard_normal((n, copies + 4))
    X[:, 1:copies] = X[:, :1] + 1e-7 * rng.standard_normal((n, copies - 1))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, -1] - X[:, 0]))).astype(float)
    d = rn.fit(X, y, l2=1e-6, tol=1e-10)
    m = rn.fit(X, y, l2=1e-6, tol=1e-10, precision="mixed")
    assert d.converged and m.converged
    np.testing.assert_allclose(m.loss, d.loss, rtol=1e-12)
