"""The passes that read only the nonzeros of a sparse X (rif/sparse.hpp): the Hessian, the
leverages, the gradient and the products with X, with the centring of an intercept expanded
rather than applied to the rows. Compared with the dense passes over the same X, and on an X
whose dense form would not fit in memory with an independent float64 reference built from
SciPy's sparse products."""

from __future__ import annotations

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import rif_native as rn  # noqa: E402
from rif_native import sources  # noqa: E402

from conftest import assert_close, sigmoid  # noqa: E402

# Both paths add the same products in another order; H is well conditioned here (cond < 1e4),
# so 1e-10 relative leaves a margin of 1e3 over what rounding can move.
TOL = 1e-10


def _counts(rng, n, d, density, dtype=np.float64):
    """A bag-of-words-like X: counts 1..5 (uncentred: the mean of a column is far from 0),
    with some rows empty."""
    X = sp.random(n, d, density=density, format="csr", dtype=np.float64,
                  random_state=int(rng.integers(2**31)))
    X.data = np.ceil(X.data * 5)
    X = X.tolil()
    X[:3] = 0  # samples without any feature
    return X.tocsr().astype(dtype)


def _labels(rng, family, n):
    if family == "logistic":
        return (rng.random(n) < 0.4).astype(float)
    if family == "poisson":
        return rng.poisson(1.5, n).astype(float)
    return rng.standard_normal(n)


def _force(monkeypatch, sparse: bool):
    monkeypatch.setattr(sources, "SPARSE_DENSITY", 1.0 if sparse else 0.0)


def test_the_density_decides_the_passes(rng):
    assert sources.open_source(_counts(rng, 200, 50, 0.02)).sparse_passes
    assert not sources.open_source(_counts(rng, 200, 50, 0.5)).sparse_passes
    assert sources.open_source(np.ones((5, 2))).csr is None


@pytest.mark.parametrize("family", ["logistic", "squared", "poisson"])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_passes_equal_dense_passes(rng, seed, monkeypatch, family, fit_intercept, dtype):
    n, d = 700, 60
    X = _counts(rng, n, d, 0.05, dtype)
    y = _labels(rng, family, n)
    w = rng.uniform(0.5, 2.0, n)
    w[[5, 17]] = 0.0  # no curvature: leverage exactly 0 on both paths
    kw = dict(l2=0.7, family=family, fit_intercept=fit_intercept, sample_weight=w, num_threads=2)
    _force(monkeypatch, True)
    assert sources.open_source(X).sparse_passes
    fit_s = rn.fit(X, y, **kw)
    Xd = X.toarray()
    fit_d = rn.fit(Xd, y, **kw)
    assert fit_s.converged and fit_d.converged
    assert_close(fit_s.theta, fit_d.theta, TOL, "fit", seed, per="whole")
    A = rn.Attribution(X, y, fit_d.theta, **kw)
    B = rn.Attribution(Xd, y, fit_d.theta, **kw)
    assert A.leverage[5] == 0 and A.leverage[17] == 0
    assert_close(A.leverage, B.leverage, TOL, "leverage", seed)
    assert_close(A.residuals, B.residuals, TOL, "residuals", seed)
    assert abs(A.gradient_norm - B.gradient_norm) <= 1e-8 * max(1.0, np.abs(Xd).sum())
    V = rng.standard_normal((d + fit_intercept, 3))
    for method in ("if", "rif"):
        assert_close(A.scores(V, method=method), B.scores(V, method=method), TOL,
                     f"{method} scores", seed, per="whole")
    rows = [0, 4, 99, n - 1]
    assert_close(A.rescaled_influence(rows), B.rescaled_influence(rows), TOL, "RIF rows", seed)
    sets = [[1, 2, 3], list(range(10, 60)), list(range(100, 400))]
    assert_close(A.group_effect(sets, method="ns"), B.group_effect(sets, method="ns"), TOL,
                 "Newton steps", seed)
    assert_close(A.retrain(sets).theta, B.retrain(sets).theta, TOL, "retraining", seed)


def test_sparse_and_dense_passes_agree_on_one_sparse_x(rng, seed, monkeypatch):
    """The two kernels on the same sparse source (the switch, not the input, differs)."""
    X = _counts(rng, 900, 120, 0.03)
    y = _labels(rng, "logistic", 900)
    theta = 0.05 * rng.standard_normal(121)
    got = {}
    for sparse in (True, False):
        _force(monkeypatch, sparse)
        A = rn.Attribution(X, y, theta, l2=0.3, fit_intercept=True, num_threads=1)
        got[sparse] = (A.leverage, A.scores(np.ones(121)))
    assert_close(got[True][0], got[False][0], TOL, "leverage", seed)
    assert_close(got[True][1], got[False][1], TOL, "scores", seed, per="whole")


def test_fewer_samples_than_parameters(rng, seed, monkeypatch):
    """n < 2p/3: H from the nonzeros, the leverages by the dense pass (H^{-1} would cost more)."""
    _force(monkeypatch, True)
    X = _counts(rng, 150, 400, 0.02)
    y = _labels(rng, "logistic", 150)
    theta = 0.1 * rng.standard_normal(401)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1,
                       solver="primal")
    B = rn.Attribution(X.toarray(), y, theta, l2=1.0, fit_intercept=True, num_threads=1,
                       solver="primal")
    assert_close(A.leverage, B.leverage, TOL, "leverage", seed)


def _reference_leverage(X, y, theta, l2, rows):
    """h_i = a_i x~_i^T H^{-1} x~_i (x~ = (x, 1)), H from SciPy's sparse products in float64."""
    n, d = X.shape
    Xt = sp.hstack([X, sp.csr_matrix(np.ones((n, 1)))], format="csr")
    z = Xt @ theta
    p = sigmoid(z)
    a = p * (1 - p)
    H = (Xt.T @ sp.diags(a) @ Xt).toarray()
    H[np.arange(d), np.arange(d)] += l2
    Xr = Xt[rows].toarray()
    return a[rows] * np.einsum("ij,ji->i", Xr, np.linalg.solve(H, Xr.T)), p - y


def test_x_too_large_to_make_dense(rng, seed):
    """n = 3,000,000, d = 1000 with 3 nonzeros a row: dense it would take 24 GB (this
    machine and CI have 24 GiB); the sparse source holds 110 MB and the passes read it as it
    is. Leverages and residuals against the float64 SciPy reference."""
    n, d, k = 3_000_000, 1000, 3
    cols = rng.integers(0, d, n * k)
    X = sp.csr_matrix((rng.uniform(0.5, 3.0, n * k), cols, np.arange(0, n * k + 1, k)),
                      shape=(n, d))
    X.sum_duplicates()
    y = (rng.random(n) < 0.3).astype(float)
    theta = 0.1 * rng.standard_normal(d + 1)
    assert sources.open_source(X).sparse_passes
    A = rn.Attribution(X, y, theta, l2=2.0, fit_intercept=True, progress=False)
    rows = rng.choice(n, 200, replace=False)
    h, r = _reference_leverage(X, y, theta, 2.0, rows)
    assert_close(A.leverage[rows], h, TOL, "leverage", seed)
    assert_close(A.residuals[rows], r[rows], 1e-14, "residuals", seed)


def test_text_pipeline_from_estimator_reads_words_sparsely():
    """CountVectorizer + LogisticRegression on 1500 real SMS messages: the vectoriser's sparse
    counts go to the passes as they are (names from its vocabulary), and every answer equals
    the last step attributed on the same counts made dense."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from rif_native import datasets

    D = datasets.load_sms_spam()
    texts, y = list(D.texts[:1500]), D.y[:1500]
    pipe = make_pipeline(CountVectorizer(min_df=3),
                         LogisticRegression(C=0.5, tol=1e-12, max_iter=10000))
    pipe.fit(texts, y)
    A = rn.Attribution.from_estimator(pipe, texts, y, num_threads=1)
    counts = pipe[0].transform(texts)
    assert sources.open_source(counts).sparse_passes  # about 0.6% of the counts are nonzero
    B = rn.Attribution.from_estimator(pipe[-1], counts.toarray(), y, num_threads=1)
    assert A.param_names[:-1] == list(pipe[0].get_feature_names_out())
    assert_close(A.leverage, B.leverage, TOL, "leverage")
    assert_close(A.rescaled_influence([0, 1, 2]), B.rescaled_influence([0, 1, 2]), TOL, "RIF")
    v = np.ones(A.n_params)
    assert_close(A.scores(v), B.scores(v), TOL, "scores", per="whole")


def test_attribution_of_sparse_x_pickles(rng):
    import pickle

    X = _counts(rng, 400, 30, 0.05)
    y = _labels(rng, "logistic", 400)
    A = rn.Attribution(X, y, 0.1 * rng.standard_normal(31), l2=1.0, fit_intercept=True,
                       num_threads=1)
    B = pickle.loads(pickle.dumps(A))
    assert sources.open_source(B._data[0]).sparse_passes
    np.testing.assert_array_equal(B.leverage, A.leverage)
    np.testing.assert_array_equal(B.scores(np.ones(31)), A.scores(np.ones(31)))


def test_a_column_far_from_zero_is_read_densely(rng, seed):
    """A column near 1e4 with spread 1: the expanded centring would cancel to 1e-7, so the
    source reads it with the dense passes, which centre each row (as accurate as an array)."""
    n, d = 2000, 100
    X = _counts(rng, n, d, 0.04).tolil()
    X[:, 0] = (1e4 + rng.standard_normal(n))[:, None]
    X = X.tocsr()
    assert not sources.open_source(X).sparse_passes
    y = _labels(rng, "logistic", n)
    theta = 1e-3 * rng.standard_normal(d + 1)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    B = rn.Attribution(X.toarray(), y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    assert_close(A.leverage, B.leverage, TOL, "leverage", seed)


def test_broken_and_integer_sparse_input(rng):
    X = sp.random(50, 10, density=0.2, format="csr", random_state=1)
    X.indices[3] = 10  # scipy does not check
    with pytest.raises(ValueError, match=r"column indices outside \[0, 10\)"):
        rn.Attribution(X, np.zeros(50), np.zeros(10), l2=1.0)
    counts = (rng.random((60, 8)) < 0.1) * rng.integers(1, 5, (60, 8))  # int64 counts
    y = (rng.random(60) < 0.5).astype(float)
    S = sources.as_sparse(counts)
    np.testing.assert_allclose(rn.fit(S, y, l2=1.0).theta,
                               rn.fit(counts.astype(float), y, l2=1.0).theta, rtol=1e-10)
