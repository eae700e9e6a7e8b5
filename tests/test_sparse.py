"""SciPy sparse X (bag-of-words, one-hot): read as a source, its row blocks made dense one at a
time. Every answer against the same X dense, to rounding (the passes add the same products in
blocks of another size)."""

from __future__ import annotations

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import rif_native as rn  # noqa: E402


def _close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(1.0, float(np.abs(want).max()))
    assert np.abs(got - want).max() <= 1e-12 * scale, what


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sparse_equals_dense(rng, fmt, dtype):
    n, d = 600, 80
    X = sp.random(n, d, density=0.05, format=fmt, dtype=dtype, random_state=int(rng.integers(1e6)))
    Xd = X.toarray()
    y = (rng.random(n) < 0.4).astype(float)
    kw = dict(l2=0.5, fit_intercept=True, num_threads=1)
    fit_s, fit_d = rn.fit(X, y, **kw), rn.fit(Xd, y, **kw)
    _close(fit_s.theta, fit_d.theta, "fit")
    assert fit_s.passes is not None and fit_s.passes >= fit_s.n_iter
    A = rn.Attribution(X, y, fit_d.theta, **kw)
    B = rn.Attribution(Xd, y, fit_d.theta, **kw)
    _close(A.leverage, B.leverage, "leverage")
    _close(A.rescaled_influence([0, 7, 599]), B.rescaled_influence([0, 7, 599]), "RIF rows")
    v = rng.standard_normal(d + 1)
    _close(A.scores(v), B.scores(v), "scores")
    sets = [[1, 2, 3], list(range(10, 40))]
    _close(A.group_effect(sets, method="ns"), B.group_effect(sets, method="ns"), "NS")
    _close(A.retrain(sets).theta, B.retrain(sets).theta, "retrain")


def test_sparse_multinomial_and_integer_values(rng):
    n, d = 300, 20
    X = sp.random(n, d, density=0.2, format="csr", random_state=3)
    X.data = np.round(X.data * 5)  # counts, as a bag of words holds them
    Xi = X.astype(np.int64)
    y = rng.integers(0, 3, n)
    kw = dict(l2=1.0, fit_intercept=True, family="multinomial", num_threads=1)
    fit_s, fit_d = rn.fit(Xi, y, **kw), rn.fit(X.toarray(), y, **kw)
    _close(fit_s.theta, fit_d.theta, "multinomial fit")
    A = rn.Attribution(Xi, y, fit_d.theta, **kw)
    B = rn.Attribution(X.toarray(), y, fit_d.theta, **kw)
    _close(A.leverage, B.leverage, "multinomial leverage")


def test_sparse_x_is_not_made_dense_whole(rng):
    """A sparse X whose dense form would take 8 GB: the source holds the nonzeros and reads
    rows densely block by block (the first block only, here)."""
    nnz = 100_000
    X = sp.coo_matrix((rng.standard_normal(nnz), (rng.integers(0, 200_000, nnz),
                                                   rng.integers(0, 5_000, nnz))),
                      shape=(200_000, 5_000)).tocsr()
    S = rn.sources.open_source(X)
    assert S.shape == (200_000, 5_000) and "sparse matrix" in repr(S._parts[0])
    block = np.empty((10, 5_000))
    S.read_into(1_000, block)
    np.testing.assert_array_equal(block, X[1_000:1_010].toarray())
