"""Removal sets (rif_native.removal): sizes, the defining property of each strategy, determinism,
the test subset and search().

Distances for the cluster checks come from scipy.spatial.distance.cdist (an independent reference);
properties are checked exactly (ties are allowed: chosen distances <= every non-chosen distance).
"""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import rif_native as rn
from rif_native import metrics as M
from rif_native import removal as R
from conftest import make_problem


def _check_basic(sets, n, sizes, strategy):
    assert [s.size for s in sets] == list(sizes)
    for s in sets:
        assert isinstance(s, R.RemovalSet)
        assert s.strategy == strategy
        assert s.indices.dtype == np.int64
        assert len(s.indices) == s.size == len(s)
        assert np.unique(s.indices).size == s.size, "indices must be distinct"
        assert s.indices.min() >= 0 and s.indices.max() < n
        assert np.all(np.diff(s.indices) > 0), "indices are returned sorted"


# ----------------------------------------------------------------------------------------------
# sizes
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,count", [(1000, 10), (20000, 7), (9600, 25), (4321, 1)])
def test_removal_sizes_linear(n, count):
    sizes = R.removal_sizes(n, count)
    assert sizes.dtype == np.int64 and np.all(np.diff(sizes) > 0)
    assert sizes[0] == max(1, round(0.001 * n))
    if count > 1:
        assert sizes[-1] == round(0.05 * n)
        assert len(sizes) == count
        step = (0.05 - 0.001) * n / (count - 1)
        assert np.all(np.abs(np.diff(sizes) - step) <= 1.0), "linear spacing up to rounding"
    assert np.all(sizes >= max(1, np.floor(0.001 * n))) and np.all(sizes <= np.ceil(0.05 * n))


def test_removal_sizes_small_n_and_errors():
    sizes = R.removal_sizes(50, 10)  # 0.05 .. 2.5: rounds to 1..2, duplicates merged
    assert sizes.tolist() == [1, 2]
    assert R.removal_sizes(100, 3, lo=0.1, hi=0.2).tolist() == [10, 15, 20]
    for bad in (dict(n=0, count=3), dict(n=10, count=0)):
        with pytest.raises(ValueError, match=">= 1"):
            R.removal_sizes(**bad)
    with pytest.raises(ValueError, match="lo <= hi"):
        R.removal_sizes(100, 3, lo=0.2, hi=0.1)
    with pytest.raises(ValueError, match="int"):
        R.removal_sizes(100.5, 3)


# ----------------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------------
def test_random_sets(rng):
    n, sizes = 500, [1, 7, 25, 500]
    sets = R.random_sets(n, sizes, rng)
    _check_basic(sets, n, sizes, "random")
    assert sets[-1].indices.tolist() == list(range(n))


def test_feature_cluster_continuous(rng, seed):
    n, d = 400, 6
    X = rng.standard_normal((n, d))
    sizes = [1, 4, 20, 50]
    sets = R.feature_cluster_sets(X, sizes, rng)
    _check_basic(sets, n, sizes, "feature_cluster")
    for s in sets:
        dist = np.abs(X[:, s.feature] - X[s.anchor, s.feature])
        # continuous features: no ties, so the set is exactly the k nearest on that feature
        assert set(s.indices.tolist()) == set(np.argsort(dist)[: s.size].tolist()), seed
        assert s.anchor in s.indices


def test_feature_cluster_ties_and_constant_features(rng):
    n = 300
    X = np.column_stack([np.ones(n), rng.integers(0, 4, n).astype(float), np.zeros(n)])
    sets = R.feature_cluster_sets(X, [10, 60, 150, 299], rng)
    for s in sets:
        assert s.feature == 1, "constant features are never chosen"
        dist = np.abs(X[:, 1] - X[s.anchor, 1])
        rest = np.setdiff1d(np.arange(n), s.indices)
        assert dist[s.indices].max() <= dist[rest].min()


def test_l2_cluster(rng, seed):
    n, d = 300, 5
    # two scales of clusters, and a duplicated block of rows (ties)
    X = np.vstack([rng.standard_normal((n - 40, d)), np.repeat(rng.standard_normal((4, d)), 10, 0)])
    sizes = [1, 3, 15, 60, 300]
    sets = R.l2_cluster_sets(X, sizes, rng)
    _check_basic(sets, n, sizes, "l2_cluster")
    for s in sets:
        dist = cdist(X[s.anchor][None, :], X)[0]
        chosen = dist[s.indices]
        rest = np.setdiff1d(np.arange(n), s.indices)
        if rest.size:
            assert chosen.max() <= dist[rest].min() + 1e-12, seed
        assert dist[s.indices].min() == 0.0  # the anchor (or a copy of it) is in the set
    # the blockwise distances equal cdist, float32 input included
    a = int(rng.integers(n))
    ref = cdist(X[a][None, :], X)[0]
    assert np.allclose(R.l2_distances(X, a), ref, rtol=1e-12, atol=1e-12)
    X32 = X.astype(np.float32)
    ref32 = cdist(X32[a][None, :].astype(float), X32.astype(float))[0]
    assert np.allclose(R.l2_distances(X32, a), ref32, rtol=1e-12, atol=1e-12)


def test_l2_distances_span_blocks(rng):
    X = rng.standard_normal((R._BLOCK * 2 + 17, 3))
    ref = cdist(X[5][None, :], X)[0]
    assert np.allclose(R.l2_distances(X, 5), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sign", [+1, -1])
def test_top_influence_sets(rng, seed, sign):
    n = 400
    scores = rng.standard_normal(n)
    scores[:30] = 0.5  # ties
    sizes = [1, 5, 40, 150, 300]
    sets = R.top_influence_sets(scores, sizes, rng, sign=sign, name="top_if_x")
    _check_basic(sets, n, sizes, "top_if_x")
    key = sign * scores
    for s in sets:
        pool = min(2 * s.size, n)
        threshold = np.sort(key)[::-1][pool - 1]  # the pool-th largest value of sign * score
        assert np.all(key[s.indices] >= threshold), seed
        top_pool = np.argsort(-key, kind="stable")[:pool]
        assert np.isin(s.indices, top_pool).all()
    default = R.top_influence_sets(scores, [3], 0, sign=sign)
    assert default[0].strategy == ("top_if_pos" if sign > 0 else "top_if_neg")


def test_top_influence_keeps_a_random_half(rng):
    scores = np.arange(100.0)
    draws = {tuple(R.top_influence_sets(scores, [10], seed)[0].indices) for seed in range(20)}
    assert len(draws) > 1, "the kept half is random"
    assert all(set(d) <= set(range(80, 100)) for d in draws)


# ----------------------------------------------------------------------------------------------
# make_sets: everything, determinism
# ----------------------------------------------------------------------------------------------
def _scores(rng, n):
    return {"test_loss": rng.standard_normal(n), "test_prediction": rng.standard_normal(n)}


def test_make_sets_all_strategies(rng):
    n = 2000
    X = rng.standard_normal((n, 4))
    sizes = R.removal_sizes(n, 5)
    scores = _scores(rng, n)
    sets = R.make_sets(X, sizes, rng, scores=scores)
    assert [s.strategy for s in sets] == [st for st in R.STRATEGIES for _ in sizes]
    for st in R.STRATEGIES:
        _check_basic([s for s in sets if s.strategy == st], n, sizes.tolist(), st)
    for s in sets:
        if s.strategy.startswith("top_if_"):
            key, sign = s.strategy[7:-4], (1 if s.strategy.endswith("pos") else -1)
            v = sign * scores[key]
            assert np.all(v[s.indices] >= np.sort(v)[::-1][2 * s.size - 1])
    # without scores the default is the three geometric strategies
    assert {s.strategy for s in R.make_sets(X, sizes, 0)} == {"random", "feature_cluster",
                                                              "l2_cluster"}


def test_make_sets_deterministic(rng):
    n = 600
    X = rng.standard_normal((n, 3))
    scores = _scores(rng, n)
    sizes = [2, 10, 30]

    def key(sets):
        return [(s.strategy, s.size, tuple(s.indices)) for s in sets]

    a = R.make_sets(X, sizes, 123, scores=scores)
    b = R.make_sets(X, sizes, np.random.default_rng(123), scores=scores)
    c = R.make_sets(X, sizes, 124, scores=scores)
    assert key(a) == key(b)
    assert key(a) != key(c)
    # a strategy's sets do not depend on which other strategies are requested
    only = R.make_sets(X, sizes, 123, strategies=["l2_cluster"])
    assert key(only) == [k for k in key(a) if k[0] == "l2_cluster"]
    # and the per-strategy functions are deterministic given the generator state
    assert key(R.l2_cluster_sets(X, sizes, 5)) == key(R.l2_cluster_sets(X, sizes, 5))
    assert key(R.random_sets(n, sizes, 5)) == key(R.random_sets(n, sizes, 5))


def test_make_sets_errors(rng):
    X = rng.standard_normal((100, 3))
    with pytest.raises(ValueError, match=r"needs scores\['test_loss'\]"):
        R.make_sets(X, [5], 0, strategies=["top_if_test_loss_pos"])
    with pytest.raises(ValueError, match="unknown strategy 'nearest'"):
        R.make_sets(X, [5], 0, strategies=["nearest"])
    with pytest.raises(ValueError, match="more than once"):
        R.make_sets(X, [5], 0, strategies=["random", "random"])
    with pytest.raises(ValueError, match=r"one entry per training sample \(100\)"):
        R.make_sets(X, [5], 0, scores={"test_loss": np.zeros(99)})
    with pytest.raises(ValueError, match="NaN"):
        R.top_influence_sets(np.array([1.0, np.nan, 2.0]), [1], 0)
    with pytest.raises(ValueError, match=r"set size 101 is impossible.*n = 100"):
        R.make_sets(X, [5, 101], 0)
    with pytest.raises(ValueError, match="set size 0"):
        R.random_sets(100, [0], 0)
    with pytest.raises(ValueError, match="sign"):
        R.top_influence_sets(np.zeros(10), [1], 0, sign=0)
    with pytest.raises(ValueError, match="X must be 2-D"):
        R.l2_cluster_sets(np.zeros(10), [1], 0)
    with pytest.raises(ValueError, match="integers"):
        R.random_sets(10, [1.5], 0)


# ----------------------------------------------------------------------------------------------
# test subset and search
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 9, 40, 100])
def test_test_subset(rng, seed, size):
    losses = rng.exponential(size=100)
    idx = R.test_subset(losses, size, rng)
    assert idx.dtype == np.int64 and idx.size == size and np.unique(idx).size == size
    assert np.all((idx >= 0) & (idx < 100))
    top = np.argsort(-losses)[: size // 2]
    assert set(top.tolist()) <= set(idx.tolist()), seed
    assert np.array_equal(R.test_subset(losses, size, 7), R.test_subset(losses, size, 7))


def test_test_subset_mixes_in_random_points():
    losses = np.arange(1000.0)
    idx = R.test_subset(losses, 100, 0)
    assert set(range(950, 1000)) <= set(idx.tolist())
    assert (idx < 950).sum() == 50 and idx.min() < 900, "the other half is drawn from the rest"
    with pytest.raises(ValueError, match=r"size must lie in \[1, 1000\]"):
        R.test_subset(losses, 1001, 0)
    with pytest.raises(ValueError, match="NaN"):
        R.test_subset(np.array([1.0, np.nan]), 1, 0)


@pytest.mark.parametrize("method", ["rif", "if"])
@pytest.mark.parametrize("sign", [+1, -1])
def test_search_equals_argsort(rng, seed, method, sign):
    prob = make_problem(rng, "logistic", n=80, d=6, fitted=True)
    A = rn.Attribution(prob.X, prob.y, prob.theta, **prob.kw)
    metric = M.TestLoss(prob.X[:10], prob.y[:10])
    g = metric.gradient(prob.theta)
    scores = A.scores(g, method=method)
    k = 12
    got = R.search(A, g, k, method=method, sign=sign)
    assert np.array_equal(got, np.argsort(-sign * scores, kind="stable")[:k]), seed
    assert np.array_equal(R.search(A, metric, k, method=method, sign=sign), got)
    assert got.dtype == np.int64
    # from scores computed once (run_search's way)
    assert np.array_equal(R.top_by_score(scores, k, sign=sign), got)


def test_search_errors(rng):
    prob = make_problem(rng, "logistic", n=30, d=3, fitted=True)
    A = rn.Attribution(prob.X, prob.y, prob.theta, **prob.kw)
    g = np.ones(3)
    with pytest.raises(ValueError, match=r"k must lie in \[1, n\] with n = 30"):
        R.search(A, g, 31)
    with pytest.raises(ValueError, match="k must lie"):
        R.search(A, g, 0)
    with pytest.raises(ValueError, match="method"):
        R.search(A, g, 3, method="ns")
    with pytest.raises(ValueError, match="sign"):
        R.search(A, g, 3, sign=2)
    with pytest.raises(ValueError, match=r"k must lie in \[1, n\] with n = 30"):
        R.top_by_score(np.zeros(30), 31)
    with pytest.raises(ValueError, match="one score per sample"):
        R.top_by_score(np.zeros((30, 2)), 3)
    with pytest.raises(ValueError, match="sign"):
        R.top_by_score(np.zeros(30), 3, sign=0)
    # NaN scores rank last
    assert np.array_equal(R.top_by_score(np.array([np.nan, 1.0, 2.0]), 3), [2, 1, 0])
