"""Regression diagnostics (Attribution.diagnostics) beside statsmodels'
GLMResults.get_influence().summary_frame(), on the same unpenalised logistic fit (each timed
from the fitted parameters: rif-native's Attribution + diagnostics against statsmodels'
get_influence + summary_frame). Columns checked equal before timing. n = 1,000,000, d = 100 for
rif-native alone (``-k million``)."""

import numpy as np
import pytest

import rif_native as rn

sm = pytest.importorskip("statsmodels.api")

SHAPES = [(20_000, 50), (20_000, 200), (100_000, 50), (100_000, 200)]


def _problem(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    beta = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(np.float64)
    Xc = np.column_stack([X, np.ones(n)])
    res = sm.GLM(y, Xc, family=sm.families.Binomial()).fit(method="newton", tol=1e-12)
    return X, y, Xc, res


def ours(X, y, theta):
    return rn.Attribution(X, y, theta, fit_intercept=True).diagnostics()


def statsmodels_frame(res):
    return res.get_influence().summary_frame()


@pytest.mark.parametrize("impl", ["rif-native", "statsmodels"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"n{n}-d{d}" for n, d in SHAPES])
def test_summary_frame(benchmark, shape, impl):
    n, d = shape
    X, y, Xc, res = _problem(n, d)
    theta = np.asarray(res.params)
    benchmark.group = f"diagnostics n={n} d={d}"
    if impl == "rif-native":
        ref = statsmodels_frame(res)
        got = ours(X, y, theta)
        for col in ("cooks_d", "hat_diag", "standard_resid", "dffits_internal"):
            np.testing.assert_allclose(got[col], ref[col], rtol=0,
                                       atol=1e-9 * np.abs(ref[col]).max())
        benchmark.pedantic(ours, args=(X, y, theta), rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark.pedantic(statsmodels_frame, args=(res,), rounds=2, iterations=1)


def test_million(benchmark):
    """n = 1,000,000, d = 100: rif-native alone (theta from rif_native.fit)."""
    rng = np.random.default_rng(1)
    n, d = 1_000_000, 100
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.standard_normal(d))))).astype(np.float64)
    theta = rn.fit(X, y, fit_intercept=True).theta
    benchmark.group = "diagnostics n=1000000 d=100"
    benchmark.pedantic(ours, args=(X, y, theta), rounds=2, iterations=1)
