"""Newton steps for many removal sets at the CatDog shape (200 random sets of 10 samples, and
20 of 1% = 96), from one attribution: rif-native (the Woodbury solves of all small sets batched
into multi-column triangular solves) against the same Woodbury algebra in SciPy set by set
(two triangular solves with the factor per set, as a per-set implementation does), both from
the same factor; the results are checked equal first."""

import numpy as np
import pytest
import scipy.linalg as sla

import rif_native as rn
from rif_native import benchmark as rb

N, D = rb.SHAPES["CatDog"]
CASES = {"200 sets of 10": (200, 10), "20 sets of 96": (20, 96)}


@pytest.fixture(scope="module")
def setup():
    p = rb.make_problem(N, D, seed=3)
    fitted = rn.fit(p.X, p.y, l2=p.l2, fit_intercept=True)
    A = rn.Attribution(p.X, p.y, fitted.theta, l2=p.l2, fit_intercept=True)
    L = np.linalg.cholesky(A.hessian())
    return p, A, L


def _sets(case):
    m, k = CASES[case]
    rng = np.random.default_rng(1)
    return [rng.choice(N, k, replace=False) for _ in range(m)]


def scipy_newton_steps(X, r, a, L, sets):
    """H_{-T}^{-1} sum_T r_i x_i per set by Woodbury on H = L L^T, one set at a time."""
    out = []
    for T in sets:
        XT = np.hstack([X[T], np.ones((len(T), 1))])           # intercept last
        B = sla.solve_triangular(L, XT.T * np.sqrt(a[T]), lower=True)
        M = sla.cho_factor(np.eye(len(T)) - B.T @ B, lower=True)
        b = sla.solve_triangular(L, XT.T @ r[T], lower=True)
        b += B @ sla.cho_solve(M, B.T @ b)
        out.append(sla.solve_triangular(L, b, lower=True, trans="T"))
    return np.array(out)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", ["rif-native", "scipy-per-set"])
def test_newton_steps(benchmark, setup, case, impl):
    p, A, L = setup
    sets = _sets(case)
    benchmark.group = f"Newton steps CatDog, {case}"
    ours = A.group_effect(sets, method="ns")
    if impl == "rif-native":
        run = lambda: A.group_effect(sets, method="ns")  # noqa: E731
    else:
        args = (p.X, A.residuals, A.curvature, L, sets)
        ref = scipy_newton_steps(*args)
        err = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
        assert err.max() <= 1e-9, f"the baseline disagrees: {err.max():.2e}"
        run = lambda: scipy_newton_steps(*args)  # noqa: E731
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
