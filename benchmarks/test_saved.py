"""Loading a saved Attribution (rif_native.saved; binary and multinomial) against building it:
the load reads X once (z = X theta, to check the data) instead of the Hessian pass, the
factorisation (or the multinomial inverse) and the leverage pass. Run:
``pytest benchmarks/test_saved.py`` and compare the rows of each group."""

import numpy as np
import pytest

import rif_native as rn
from rif_native import benchmark as rb

N, D = 20_000, 1_000


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    p = rb.make_problem(N, D, seed=2)
    path = tmp_path_factory.mktemp("saved") / "attribution.npz"
    rn.Attribution(p.X, p.y, p.theta, l2=p.l2).save(path, include_x=False)
    return p, path


@pytest.mark.parametrize("how", ["build", "load"])
def test_build_or_load(benchmark, saved, how):
    p, path = saved
    benchmark.group = f"Attribution of {N} x {D}: built, or loaded from its file"
    if how == "build":
        fn = lambda: rn.Attribution(p.X, p.y, p.theta, l2=p.l2)  # noqa: E731
    else:
        fn = lambda: rn.Attribution.load(path, p.X)  # noqa: E731
    A = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    assert A.n == N


MN, MD, MK = 20_000, 256, 5  # multinomial: q = (K - 1)(d + 1) = 1028


@pytest.fixture(scope="module")
def saved_multinomial(tmp_path_factory):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((MN, MD))
    y = rng.integers(0, MK, MN)
    theta = 0.05 * rng.standard_normal((MK, MD + 1))
    path = tmp_path_factory.mktemp("saved") / "multinomial.npz"
    kw = dict(l2=1.0, fit_intercept=True)
    rn.MultinomialAttribution(X, y, theta, **kw).save(path, include_x=False)
    return X, y, theta, kw, path


@pytest.mark.parametrize("how", ["build", "load"])
def test_multinomial_build_or_load(benchmark, saved_multinomial, how):
    X, y, theta, kw, path = saved_multinomial
    benchmark.group = (f"MultinomialAttribution of {MN} x {MD}, K = {MK}: built, or loaded "
                       "from its file")
    if how == "build":
        fn = lambda: rn.MultinomialAttribution(X, y, theta, **kw)  # noqa: E731
    else:
        fn = lambda: rn.Attribution.load(path, X)  # noqa: E731
    A = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    built = rn.MultinomialAttribution(X, y, theta, **kw)  # both rows answer alike
    assert np.abs(A.leverage - built.leverage).max() <= 1e-12
    assert np.abs(A.rescaled_influence([0, MN - 1]) - built.rescaled_influence([0, MN - 1])).max() \
        <= 1e-12 * np.abs(built.rescaled_influence([0, MN - 1])).max()
