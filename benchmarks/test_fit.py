"""fit at the CatDog shape (9600 x 2048, l2 = 1, an intercept) against scikit-learn's
LogisticRegression in one run (its C = 1 / l2 on the same summed loss).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_fit.py

Group "fit CatDog, tight": ``newton-cholesky`` at ``tol=1e-10`` against rif-native (double and
mixed precision) asked to stop at the gradient norm newton-cholesky reached. Group "fit CatDog, at lbfgs's norm": ``lbfgs`` with its
defaults against rif-native asked to stop at the gradient norm lbfgs reached. Every row's
extra_info holds the gradient norm of F at its result, computed here in float64 NumPy, and the
rif-native rows count their Hessians and L-BFGS steps. "rif-native newton" is
``solver="newton"``, the Newton steps alone (the fit before the L-BFGS steps existed).
"""

import functools

import numpy as np
import pytest

import rif_native as rn
from rif_native import benchmark as rb

L2 = 1.0


@functools.lru_cache(maxsize=1)
def data():
    n, d = rb.SHAPES["CatDog"]
    X = rb.make_problem(n, d).X
    rng = np.random.default_rng(1)
    w = rng.standard_normal(d) * 3
    y = (rng.random(n) < 1 / (1 + np.exp(-X @ w))).astype(np.float64)
    return X, y


def grad_norm(coef, intercept):
    """||grad F|| at (coef, intercept), F = sum of logistic losses + L2/2 ||coef||^2."""
    X, y = data()
    s = 1 / (1 + np.exp(-(X @ coef + intercept)))
    r = s - y
    return float(np.linalg.norm(np.r_[X.T @ r + L2 * coef, r.sum()]))


@functools.lru_cache(maxsize=1)
def lbfgs_norm():
    return sklearn_fit("lbfgs", None)[1]


@functools.lru_cache(maxsize=1)
def newton_cholesky_norm():
    return sklearn_fit("newton-cholesky", 1e-10)[1]


def sklearn_fit(solver, tol):
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    kw = {} if tol is None else {"tol": tol}
    m = LogisticRegression(C=1 / L2, solver=solver, max_iter=10_000, **kw).fit(X, y)
    return m, grad_norm(m.coef_.ravel(), float(m.intercept_[0]))


def ours(tol, precision="double", solver="auto"):
    X, y = data()
    res = rn.fit(X, y, l2=L2, fit_intercept=True, tol=tol, precision=precision, num_threads=2,
                 solver=solver)
    return res, grad_norm(res.theta[:-1], res.theta[-1])


def scale():
    X, y = data()
    return grad_norm(np.zeros(X.shape[1]), 0.0)  # ||grad F(0)||, fit's tolerance unit


def race(benchmark, impl, solver, tol, target):
    """Time scikit-learn's `solver` (impl == solver) or rif-native asked to stop at the
    gradient norm `target()` that solver reached."""
    pytest.importorskip("sklearn")
    data()
    if impl == solver:
        _, norm = benchmark.pedantic(sklearn_fit, args=(solver, tol), rounds=2, iterations=1)
    else:
        goal = target()
        precision = "mixed" if impl.endswith("mixed") else "double"
        solver = "newton" if impl.endswith("newton") else "auto"
        res, norm = benchmark.pedantic(ours, args=(goal / scale(), precision, solver),
                                       rounds=3, iterations=1)
        assert norm <= goal * 1.01
        benchmark.extra_info.update(hessians=res.hessians, n_iter=res.n_iter,
                                    lbfgs_steps=res.lbfgs_steps, target=goal)
    benchmark.extra_info["grad_norm"] = norm


@pytest.mark.parametrize("impl", ["rif-native", "rif-native mixed", "rif-native newton",
                                  "newton-cholesky"])
def test_fit_tight(benchmark, impl):
    benchmark.group = "fit CatDog, tight"
    race(benchmark, impl, "newton-cholesky", 1e-10, newton_cholesky_norm)


@pytest.mark.parametrize("impl", ["lbfgs", "rif-native", "rif-native mixed",
                                  "rif-native newton"])
def test_fit_at_lbfgs_norm(benchmark, impl):
    benchmark.group = "fit CatDog, at lbfgs's norm"
    race(benchmark, impl, "lbfgs", None, lbfgs_norm)
