"""The dual path for fewer samples than parameters (rif/dual.hpp): H inverted through the n x n
matrix G = Y Y^T + l2 I, the unpenalised intercept through its Schur complement. Every answer
against the primal path (H's own Cholesky factor) on the same data, and against an
independent float64 NumPy reference for the leverages."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn

from conftest import assert_close, sigmoid

# Both paths are backward stable; with l2 >= 0.5 on unit-scale X, cond(H) < 1e4 here, so
# 1e-9 relative leaves a margin of 1e3 over rounding.
TOL = 1e-9


def _problem(rng, n, d, family="logistic", offset=0.5):
    X = rng.standard_normal((n, d)) / np.sqrt(d) + offset  # uncentred: the intercept matters
    if family == "logistic":
        y = (rng.random(n) < 0.4).astype(float)
    elif family == "poisson":
        y = rng.poisson(1.0, n).astype(float)
    else:
        y = rng.standard_normal(n)
    return X, y


def _pair(X, y, theta, **kw):
    P = rn.Attribution(X, y, theta, solver="primal", num_threads=1, **kw)
    D = rn.Attribution(X, y, theta, solver="dual", num_threads=1, **kw)
    assert P.solver == "primal" and D.solver == "dual"
    return P, D


@pytest.mark.parametrize("family", ["logistic", "squared", "poisson"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_equals_primal(rng, seed, family, fit_intercept):
    n, d = 120, 300
    X, y = _problem(rng, n, d, family)
    w = rng.uniform(0.5, 2.0, n)
    w[[4, 9]] = 0.0
    kw = dict(l2=0.8, family=family, fit_intercept=fit_intercept, sample_weight=w)
    theta = 0.2 * rng.standard_normal(d + fit_intercept)
    P, D = _pair(X, y, theta, **kw)
    assert D.leverage[4] == 0 and D.leverage[9] == 0
    assert_close(D.leverage, P.leverage, TOL, "leverage", seed)
    assert_close(1 - D.leverage, 1 - P.leverage, TOL, "1 - leverage", seed)
    V = rng.standard_normal((d + fit_intercept, 3))
    for method in ("if", "rif"):
        assert_close(D.scores(V, method=method), P.scores(V, method=method), TOL,
                     f"{method} scores", seed, per="whole")
    assert_close(D.rescaled_influence([0, 7, n - 1]), P.rescaled_influence([0, 7, n - 1]), TOL,
                 "RIF rows", seed)
    assert_close(D.influence([3]), P.influence([3]), TOL, "IF rows", seed)
    assert_close(D.solve(V), P.solve(V), TOL, "solve", seed, per="whole")
    sets = [[1, 2, 3], list(range(10, 100))]  # a Woodbury set and a large one (primal built)
    for method in ("if", "rif", "ns"):
        assert_close(D.group_effect(sets, method=method), P.group_effect(sets, method=method),
                     TOL, f"{method} group effects", seed)
    assert_close(D.retrain(sets).theta, P.retrain(sets).theta, TOL, "retraining", seed)
    assert_close(D.hessian(), P.hessian(), 1e-12, "hessian", seed, per="whole")


def test_leverage_against_numpy(rng, seed):
    """h_i = a_i x~_i^T H^{-1} x~_i from NumPy's own solve, including tiny leverages (a large
    l2), whose relative accuracy the dual keeps."""
    n, d = 60, 200
    X, y = _problem(rng, n, d)
    for l2 in (0.5, 1e4):
        theta = 0.3 * rng.standard_normal(d + 1)
        D = rn.Attribution(X, y, theta, l2=l2, fit_intercept=True, solver="dual")
        Xt = np.hstack([X, np.ones((n, 1))])
        p = sigmoid(Xt @ theta)
        a = p * (1 - p)
        H = Xt.T @ (a[:, None] * Xt) + l2 * np.diag(np.r_[np.ones(d), 0.0])
        h = a * np.einsum("ij,ji->i", Xt, np.linalg.solve(H, Xt.T))
        assert_close(D.leverage, h, 1e-10, f"leverage l2={l2}", seed)


def test_auto_picks_by_cost(rng):
    X, y = _problem(rng, 100, 400)
    A = rn.Attribution(X, y, np.zeros(401), l2=1.0, fit_intercept=True)
    assert A.solver == "dual" and "solver='dual'" in repr(A)
    X, y = _problem(rng, 1000, 50)
    assert rn.Attribution(X, y, np.zeros(51), l2=1.0, fit_intercept=True).solver == "primal"
    X, y = _problem(rng, 100, 400)  # no penalty: H is singular for n < p, only primal can say
    with pytest.raises(ValueError, match="needs a ridge penalty"):
        rn.Attribution(X, y, np.zeros(400), solver="dual")
    with pytest.raises(ValueError, match="solver must be"):
        rn.Attribution(X, y, np.zeros(400), l2=1.0, solver="fast")


def test_dual_object_saves_and_pickles(rng, tmp_path):
    import pickle

    X, y = _problem(rng, 80, 200)
    theta = 0.1 * rng.standard_normal(201)
    D = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    assert D.solver == "dual"
    B = pickle.loads(pickle.dumps(D))
    assert B.solver == "dual"
    np.testing.assert_array_equal(B.leverage, D.leverage)
    D.save(tmp_path / "d.npz")  # builds H and its factor for the file
    C = rn.Attribution.load(tmp_path / "d.npz", num_threads=1)
    assert_close(C.leverage, D.leverage, TOL, "loaded leverage")


def test_intercept_without_curvature_is_refused(rng):
    X, y = _problem(rng, 50, 120)
    with pytest.raises(rn.NotPositiveDefiniteError):
        rn.Attribution(X, y, np.zeros(121), l2=1.0, fit_intercept=True, solver="dual",
                       sample_weight=np.zeros(50))
