"""precision="mixed": the Hessian and leverage passes in float32 products with float64 sums.

References are float64 NumPy on the same float32 values. The tolerances are what float32 can
resolve: its rounding (6e-8) grows with sqrt(p) and with H's conditioning, which these
well-conditioned problems (cond(H) below 50) keep small; the bounds leave a factor of about 100
over what was measured, so no processor's rounding decides them. Fits are compared by what the
gradient tolerance certifies, whatever precision the steps used.
"""

import pickle

import numpy as np
import pytest

import rif_native as rn


def problem(n=3000, d=120, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(np.float64)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    return X, y, theta


def reference(X, y, theta, l2, intercept=True):
    """Leverages, H^{-1} and H of the logistic model in float64 NumPy."""
    Z = np.c_[X.astype(np.float64), np.ones(len(y))] if intercept else X.astype(np.float64)
    s = 1 / (1 + np.exp(-Z @ theta))
    a = s * (1 - s)
    P = np.eye(Z.shape[1])
    if intercept:
        P[-1, -1] = 0
    H = Z.T @ (Z * a[:, None]) + l2 * P
    Hinv = np.linalg.inv(H)
    h = a * np.einsum("ij,jk,ik->i", Z, Hinv, Z)
    return Z, s - y, h, Hinv, H


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_matches_float64_reference(dtype):
    X, y, theta = problem(seed=1, dtype=dtype)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, precision="mixed")
    assert A.precision == "mixed" and "precision='mixed'" in repr(A)
    Z, r, h, Hinv, H = reference(X, y, theta, 1.0)
    assert np.linalg.cond(H) < 50
    np.testing.assert_allclose(A.leverage, h, rtol=0, atol=1e-6)
    idx = np.argsort(h)[-20:]
    rif = (Z[idx] * (r[idx] / (1 - h[idx]))[:, None]) @ Hinv  # theta_{-i} - theta_hat
    got = A.rescaled_influence(idx)
    err = np.linalg.norm(got - rif, axis=1) / np.linalg.norm(rif, axis=1)
    assert err.max() < 1e-4
    v = np.random.default_rng(2).standard_normal(Z.shape[1])
    s = r / (1 - h) * (Z @ (Hinv @ v))
    np.testing.assert_allclose(A.scores(v), s, rtol=0, atol=1e-4 * np.abs(s).max())


def test_mixed_differs_from_float64_by_float32_rounding():
    """The mixed answers differ from the float64 path (they are float32 products) by about
    float32's rounding: not bitwise equal, and far inside the bound above."""
    X, y, theta = problem(seed=3)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    M = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1,
                       precision="mixed")
    assert A.precision == "double"
    diff = np.abs(M.leverage - A.leverage).max()
    assert 0 < diff < 1e-6


def test_mixed_reads_a_source_as_in_memory(tmp_path):
    X, y, theta = problem(n=2500, d=64, seed=4)
    path = tmp_path / "x.npy"
    np.save(path, X)
    kw = dict(l2=1.0, fit_intercept=True, num_threads=1, precision="mixed", progress=False)
    M = rn.Attribution(X, y, theta, **kw)
    S = rn.Attribution(str(path), y, theta, **kw)
    assert S.precision == "mixed"
    # The source is centred on its first block, the array on all of X: the same model in other
    # coordinates, so the float32 roundings differ; both are within float32 resolution.
    np.testing.assert_allclose(S.leverage, M.leverage, rtol=0, atol=1e-6)


def test_paths_that_compute_in_float64_say_so_and_do():
    """The dual path and sparse X compute in float64 whatever was asked: the same numbers as
    precision="double", bit for bit, in every later pass too (the dual path's lazy H)."""
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 300))
    y = (rng.random(100) < 0.5).astype(float)
    theta = rng.standard_normal(300) * 0.05
    kw = dict(l2=1.0, solver="dual", num_threads=1)
    D, D64 = rn.Attribution(X, y, theta, precision="mixed", **kw), rn.Attribution(X, y, theta, **kw)
    assert D.solver == "dual" and D.precision == "double"
    np.testing.assert_array_equal(D.hessian(), D64.hessian())
    np.testing.assert_array_equal(D.leverage, D64.leverage)
    # sparse X with n < 2p/3: the sparse Hessian, then the dense leverage pass
    Xs = sp.random(150, 300, density=0.05, format="csr", random_state=0)
    ys = (rng.random(150) < 0.5).astype(float)
    kw = dict(l2=1.0, solver="primal", num_threads=1)
    S = rn.Attribution(Xs, ys, np.zeros(300), precision="mixed", **kw)
    S64 = rn.Attribution(Xs, ys, np.zeros(300), **kw)
    assert S.precision == "double"
    np.testing.assert_array_equal(S.leverage, S64.leverage)


@pytest.mark.parametrize("bad", ["single", "float32", None, 32])
def test_precision_is_checked(bad):
    X, y, theta = problem(n=200, d=5, seed=6)
    with pytest.raises(ValueError, match="precision must be 'double' or 'mixed'"):
        rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, precision=bad)
    with pytest.raises(ValueError, match="precision must be 'double' or 'mixed'"):
        rn.fit(X, y, l2=1.0, precision=bad)


def test_pickle_keeps_precision():
    X, y, theta = problem(n=500, d=20, seed=7)
    M = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, precision="mixed",
                       num_threads=1)
    back = pickle.loads(pickle.dumps(M))
    assert back.precision == "mixed"
    np.testing.assert_array_equal(back.leverage, M.leverage)


def near_duplicates(n, copies, seed):
    """X whose first `copies` columns are one column plus 1e-7 noise: H has copies - 1
    eigenvalues near l2 under a random rounding perturbation of float32 size (~1e-4 of H's
    scale), so the float32 H is indefinite unless all copies - 1 perturbed eigenvalues happen
    to stay positive (with 40 copies, never in practice)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, copies + 4))
    X[:, 1:copies] = X[:, :1] + 1e-7 * rng.standard_normal((n, copies - 1))
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, -1] - X[:, 0]))).astype(float)
    return X, y


def test_hessian_float32_cannot_hold_falls_back_to_float64():
    """A feature of size 1e20: its squares overflow float32 (3.4e38), never float64. The
    float32 H is not finite, so the object builds H in float64 instead and says so."""
    rng = np.random.default_rng(8)
    n = 3000
    X = rng.standard_normal((n, 6))
    X[:, 2] *= 1e20
    y = (rng.random(n) < 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    theta = rn.fit(X, y, l2=1e-3).theta
    A = rn.Attribution(X, y, theta, l2=1e-3, num_threads=1)
    M = rn.Attribution(X, y, theta, l2=1e-3, num_threads=1, precision="mixed")
    assert M.precision == "double"
    # the same float64 H by another pass (rows scaled before the copy, not after)
    np.testing.assert_allclose(M.leverage, A.leverage, rtol=1e-12, atol=1e-15)
    f = rn.fit(X, y, l2=1e-3, precision="mixed")
    assert f.converged
    np.testing.assert_allclose(f.theta, theta, rtol=1e-8)


def test_nearly_singular_hessian_is_resolved():
    """Near-duplicate columns (cond(H) ~ 1e9): whether the float32 H factors depends on the
    rounding; either way the object must not fail, and a mixed H that does factor is within
    float32 resolution of the float64 one, amplified by cond(H)."""
    X, y = near_duplicates(3000, 40, seed=8)
    theta = rn.fit(X, y, l2=1e-6).theta
    A = rn.Attribution(X, y, theta, l2=1e-6, num_threads=1)
    M = rn.Attribution(X, y, theta, l2=1e-6, num_threads=1, precision="mixed")
    if M.precision == "double":
        np.testing.assert_allclose(M.leverage, A.leverage, rtol=0, atol=1e-6)
    else:
        assert np.all(np.isfinite(M.leverage))


def _distance_bound(X, y, theta, l2, gtol, intercept=True):
    """||theta - theta*|| <= ||g|| / lambda_min(H) near the minimiser (both fits' gradients
    below gtol: their distance at most twice that, to first order)."""
    *_, H = reference(X, y, theta, l2, intercept)
    return 2 * gtol / np.linalg.eigvalsh(H)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_mixed_reaches_the_same_minimiser(dtype):
    X, y, _ = problem(n=4000, d=150, seed=9, dtype=dtype)
    d = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=1e-10)
    m = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=1e-10, precision="mixed")
    assert d.converged and m.converged
    g0 = np.linalg.norm(np.c_[X.astype(np.float64), np.ones(len(y))].T @ (0.5 - y))
    bound = _distance_bound(X, y, d.theta, 1.0, 1e-10 * max(1.0, g0))
    assert np.linalg.norm(m.theta - d.theta) <= bound
    assert m.n_iter <= d.n_iter + 2


def test_fit_mixed_falls_back_where_float32_cannot_resolve_h():
    """The float32 Hessians of near-duplicate columns are indefinite or give useless steps; the
    fit switches to float64 and meets the same tolerance at the same minimiser."""
    X, y = near_duplicates(3000, 40, seed=10)
    d = rn.fit(X, y, l2=1e-6, tol=1e-10)
    m = rn.fit(X, y, l2=1e-6, tol=1e-10, precision="mixed")
    assert d.converged and m.converged
    np.testing.assert_allclose(m.loss, d.loss, rtol=1e-12)
    g0 = np.linalg.norm(X.T @ (0.5 - y))
    bound = _distance_bound(X, y, d.theta, 1e-6, 1e-10 * max(1.0, g0), False)
    assert np.linalg.norm(m.theta - d.theta) <= bound


def test_mixed_refused_where_it_does_not_run():
    X, y, theta = problem(n=300, d=4, seed=11)
    with pytest.raises(ValueError, match="binary GLM families"):
        rn.fit(X, (np.arange(300) % 3), family="multinomial", precision="mixed")
    with pytest.raises(ValueError, match="binary GLM families"):
        rn.Attribution(X, (np.arange(300) % 3), np.zeros((3, 4)), family="multinomial",
                       precision="mixed")


def test_cli_attribute_mixed(tmp_path, capsys):
    """rif attribute --precision mixed on the built-in data: the same top samples as double,
    scores within what float32 products resolve here (cond(H) of the default model is modest)."""
    from rif_native import cli

    outs = {}
    for precision in ("double", "mixed"):
        out = tmp_path / precision
        assert cli.main(["attribute", "--quiet", "--precision", precision, "--out",
                         str(out)]) == 0
        outs[precision] = np.genfromtxt(out / "scores.csv", delimiter=",", names=True)
    d, m = outs["double"], outs["mixed"]
    scale = np.abs(d["score_rif"]).max()
    np.testing.assert_allclose(m["score_rif"], d["score_rif"], rtol=0, atol=1e-4 * scale)


def test_save_and_load_keep_precision(tmp_path):
    X, y, theta = problem(n=800, d=30, seed=12)
    M = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1,
                       precision="mixed")
    M.save(tmp_path / "m.npz")
    B = rn.Attribution.load(tmp_path / "m.npz", num_threads=1)
    assert B.precision == "mixed"
    np.testing.assert_array_equal(B.leverage, M.leverage)
    again = pickle.loads(pickle.dumps(B))
    assert again.precision == "mixed"
    np.testing.assert_array_equal(again.leverage, M.leverage)


def test_one_call_functions_take_precision():
    X, y, theta = problem(n=1500, d=40, seed=13)
    kw = dict(l2=1.0, fit_intercept=True, num_threads=1)
    h = rn.leverage(X, y, theta, precision="mixed", **kw)
    np.testing.assert_allclose(h, rn.leverage(X, y, theta, **kw), rtol=0, atol=1e-6)
    assert not np.array_equal(h, rn.leverage(X, y, theta, **kw))


def test_dask_engine_refuses_mixed():
    da = pytest.importorskip("dask.array")
    X, y, theta = problem(n=400, d=5, seed=14)
    Xd = da.from_array(X.astype(np.float64), chunks=(200, 5))
    A = rn.Attribution(Xd, y, theta, l2=1.0, fit_intercept=True, precision="double")
    np.testing.assert_allclose(
        np.asarray(A.leverage),
        rn.Attribution(X.astype(np.float64), y, theta, l2=1.0, fit_intercept=True).leverage,
        rtol=1e-10)
    with pytest.raises(ValueError, match="Dask engine computes in float64"):
        rn.Attribution(Xd, y, theta, l2=1.0, fit_intercept=True, precision="mixed")
