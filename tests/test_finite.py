"""Losses without a finite minimiser: fit and retrain must say so where it is decided exactly
(a ConvergenceWarning and converged False) instead of returning a point on the way to infinity
as converged; fit decides quasi-separation by a linear programme where SciPy is there and
otherwise hints at it (a warning, converged left alone); and both stay silent where a
minimiser exists.

Each "no minimiser" case is confirmed independently of the package: the float64 loss written
here keeps falling along a known direction beyond the returned theta.
"""

import numpy as np
import pytest

import rif_native as rn


def loss(X, y, theta, family, fit_intercept, l2=0.0, live=None):
    """F(theta) over the samples `live`, in float64 NumPy (the penalty leaves the intercept)."""
    d = X.shape[1]
    z = X @ theta[:d] + (theta[d] if fit_intercept else 0.0)
    live = np.ones(len(y), dtype=bool) if live is None else live
    if family == "logistic":
        per = np.logaddexp(0.0, z) - y * z
    else:
        per = np.exp(z) - y * z
    return per[live].sum() + 0.5 * l2 * theta[:d] @ theta[:d]


def quasi_separated(rng, n=300):
    """x in {-1, 0, 1}: y = 1 where x = 1, 0 where x = -1, random where x = 0."""
    x = rng.choice([-1.0, 0.0, 1.0], n)
    y = np.where(x > 0, 1.0, np.where(x < 0, 0.0, (rng.random(n) < 0.5).astype(float)))
    return np.column_stack([x, rng.standard_normal(n)]), y


def without_scipy(monkeypatch):
    """The linear programme unavailable, as without SciPy: quasi-separation is only hinted."""
    import sys

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)


def test_fit_decides_quasi_separated_logistic_data(rng):
    """The linear programme decides it: converged False, the samples named are among those the
    direction of x's coefficient separates (x = +-1)."""
    X, y = quasi_separated(rng)
    with pytest.warns(rn.ConvergenceWarning, match="quasi-completely separated") as caught:
        res = rn.fit(X, y, fit_intercept=True)
    assert len(caught) == 1 and "Add l2 > 0" in str(caught[0].message)
    assert not res.converged
    from rif_native import _separation

    apart = _separation.separated_samples(X, y, "logistic", True, np.ones(len(y), dtype=bool))
    assert len(apart) > 0 and np.all(X[apart, 0] != 0)
    # decided at looser tolerances too, once the fit has saturated the separated samples (a
    # reviewer's case at 1e-6, left unchecked while the suspicion waited for _finite.TIGHT)
    with pytest.warns(rn.ConvergenceWarning, match="quasi-completely separated"):
        assert not rn.fit(X, y, fit_intercept=True, tol=1e-6).converged
    # the loss still falls along x's coefficient, however far: no finite minimiser
    e = np.array([1.0, 0.0, 0.0])
    f = [loss(X, y, res.theta + t * e, "logistic", True) for t in (0.0, 5.0, 20.0)]
    assert f[0] > f[1] > f[2]


@pytest.mark.parametrize("why", ["no scipy", "too large"])
def test_fit_hints_at_quasi_separation_without_the_programme(rng, monkeypatch, why):
    from rif_native import _separation

    if why == "no scipy":
        without_scipy(monkeypatch)
    else:
        monkeypatch.setattr(_separation, "MAX_ENTRIES", 100)
    X, y = quasi_separated(rng)
    with pytest.warns(rn.ConvergenceWarning, match="quasi-separated") as caught:
        res = rn.fit(X, y, fit_intercept=True)
    assert len(caught) == 1
    assert res.converged  # a hint: the tolerance was met
    with pytest.warns(rn.ConvergenceWarning, match="quasi-separated"):
        rn.fit(X, y, fit_intercept=True, tol=1e-8)
    rn.fit(X, y, fit_intercept=True, tol=1e-6)  # looser than _finite.TIGHT: no hint


def test_fit_decides_a_poisson_feature_only_on_zero_counts(rng):
    n = 300
    x = np.zeros(n)
    x[:20] = 1.0
    y = rng.poisson(2.0, n).astype(float)
    y[:20] = 0.0
    X = np.column_stack([x, rng.standard_normal(n)])
    with pytest.warns(rn.ConvergenceWarning, match="quasi-completely separated"):
        res = rn.fit(X, y, family="poisson", fit_intercept=True)
    assert not res.converged
    from rif_native import _separation

    apart = _separation.separated_samples(X, y, "poisson", True, np.ones(n, dtype=bool))
    np.testing.assert_array_equal(apart, np.arange(20))  # x = 1 on exactly these, all y = 0
    e = np.array([-1.0, 0.0, 0.0])
    f = [loss(X, y, res.theta + t * e, "poisson", True) for t in (0.0, 5.0, 20.0)]
    assert f[0] > f[1] > f[2]
    without_poisson_zeros = y.copy()
    without_poisson_zeros[0] = 1.0  # one count on the feature: a finite minimiser
    assert len(_separation.separated_samples(X, without_poisson_zeros, "poisson", True,
                                             np.ones(n, dtype=bool))) == 0


def strong_overlap(rng, n=3000):
    """A strong feature (samples far past |z| = 10) with classes that overlap near 0."""
    x = 3.0 * rng.standard_normal(n)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-6.0 * x))).astype(float)
    return np.column_stack([x, rng.standard_normal(n)]), y


def test_fit_stays_silent_where_saturated_samples_overlap(rng):
    """The Newton check runs (saturated samples), but a finite minimiser exists: no warning
    (filterwarnings=error)."""
    X, y = strong_overlap(rng)
    res = rn.fit(X, y, fit_intercept=True)
    assert res.converged
    assert np.abs(X @ res.theta[:2] + res.theta[2]).max() > 15.0  # the check did run
    # a finite minimiser: moving away from theta either way raises the loss
    f0 = loss(X, y, res.theta, "logistic", True)
    for e in np.eye(3):
        assert loss(X, y, res.theta + 0.1 * e, "logistic", True) > f0
        assert loss(X, y, res.theta - 0.1 * e, "logistic", True) > f0


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_fit_says_an_intercept_over_one_kind_of_label_has_no_value(rng, family):
    """With l2 > 0 only the unpenalised intercept can run off: all labels 0 (or all 1)."""
    X = rng.standard_normal((100, 3))
    for y in ([np.zeros(100), np.ones(100)] if family == "logistic" else [np.zeros(100)]):
        with pytest.warns(rn.ConvergenceWarning, match="intercept has no finite value"):
            res = rn.fit(X, y, l2=1.0, family=family, fit_intercept=True)
        assert not res.converged
        step = -1.0 if y[0] == 0 else 1.0
        f = [loss(X, y, res.theta + np.r_[0, 0, 0, t * step], family, True, l2=1.0)
             for t in (0.0, 5.0, 20.0)]
        assert f[0] > f[1] > f[2]
    # without the intercept every parameter is penalised: a finite minimiser, no warning
    assert rn.fit(X, np.zeros(100), l2=1.0, family=family).converged


def test_retrain_says_which_sets_leave_one_class_for_the_intercept(rng):
    X = rng.standard_normal((100, 3))
    y = (rng.random(100) < 0.15).astype(float)
    y[:3] = 1.0
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    positives = np.flatnonzero(y == 1)
    with pytest.warns(rn.ConvergenceWarning, match=r"without set\(s\) 1 the samples' labels "
                      "are all one class") as caught:
        R = A.retrain([positives[:2], positives, [5, 6]])
    assert len(caught) == 1
    assert R.converged.tolist() == [True, False, True]
    live = np.ones(100, dtype=bool)
    live[positives] = False
    f = [loss(X, y, R.theta[1] + np.r_[0, 0, 0, -t], "logistic", True, 1.0, live)
         for t in (0.0, 5.0, 20.0)]
    assert f[0] > f[1] > f[2]


def test_fit_stays_silent_short_of_a_far_minimiser(rng):
    """A loose tolerance stops short of a finite minimiser whose saturated samples sit far out:
    the next Newton step moves only them, by more than 0.1, as separation would (a reviewer's
    case); below _finite.TIGHT no hint is given, and at the default tolerance none is due."""
    X, y = strong_overlap(np.random.default_rng(4))
    rn.fit(X, y, fit_intercept=True, tol=1e-4)  # filterwarnings=error: any warning fails
    assert rn.fit(X, y, fit_intercept=True).converged


def test_the_programme_clears_a_false_suspicion(monkeypatch):
    """The reviewer's case with the suspicion raised at tol 1e-4 too (TIGHT raised): the Newton
    check alone hints at separation, the linear programme finds none and the fit is silent."""
    from rif_native import _finite

    X, y = strong_overlap(np.random.default_rng(4))
    monkeypatch.setattr(_finite, "TIGHT", 1.0)
    assert rn.fit(X, y, fit_intercept=True, tol=1e-4).converged  # no warning (error)
    without_scipy(monkeypatch)
    with pytest.warns(rn.ConvergenceWarning, match="quasi-separated"):
        assert rn.fit(X, y, fit_intercept=True, tol=1e-4).converged


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_label_counts_agree_with_the_labels_left(rng, family):
    """LabelCounts.one_kind_without(T) (O(|T|)) against one_kind over the samples left."""
    from rif_native import _finite

    n = 40
    y = (rng.random(n) < 0.2).astype(float) * (1.0 if family == "logistic" else 3.0)
    live = rng.random(n) < 0.9
    counts = _finite.LabelCounts(y, live, family)
    kinds = []
    for _ in range(300):
        T = np.unique(rng.choice(n, rng.integers(0, n + 1), replace=False))
        left = live.copy()
        left[T] = False
        want = _finite.one_kind(y, left, family)
        assert counts.one_kind_without(T) == want
        kinds.append(want)
    assert any(kinds) and not all(kinds)  # both verdicts exercised


def test_the_dask_engine_says_so_for_an_intercept_over_one_class(rng):
    """The Dask engine's fit and retraining check the labels as the in-process ones do."""
    da = pytest.importorskip("dask.array")
    X = rng.standard_normal((120, 3))
    y = (rng.random(120) < 0.2).astype(float)
    y[:2] = 1.0
    dx = da.from_array(X, chunks=(40, 3))
    with pytest.warns(rn.ConvergenceWarning, match="labels are all one class"):
        assert not rn.fit(dx, np.zeros(120), l2=1.0, fit_intercept=True).converged
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(dx, y, theta, l2=1.0, fit_intercept=True)
    assert type(A).__name__ == "DaskAttribution"
    with pytest.warns(rn.ConvergenceWarning, match=r"without set\(s\) 0 the samples' labels"):
        R = A.retrain([np.flatnonzero(y == 1), [5, 6]])
    assert R.converged.tolist() == [False, True]


def test_the_advice_follows_the_reason(rng):
    """One kind of label at l2 = 0: the intercept's advice, not "Add l2 > 0" (which cannot
    help an unpenalised intercept)."""
    X = rng.standard_normal((50, 2))
    with pytest.warns(rn.ConvergenceWarning, match="Keep samples of both kinds") as caught:
        rn.fit(X, np.ones(50), fit_intercept=True)
    assert "Add l2" not in str(caught[0].message)


def test_the_dask_engine_refuses_what_the_in_process_one_does(rng):
    da = pytest.importorskip("dask.array")
    X = rng.standard_normal((60, 2))
    y = (X[:, 0] > 0).astype(float)
    dx = da.from_array(X, chunks=(20, 2))
    with pytest.raises(ValueError, match="sample_weight is 0 for every sample"):
        rn.fit(dx, y, fit_intercept=True, l2=1.0, sample_weight=np.zeros(60))
    with pytest.raises(TypeError, match="fit_intercept must be True or False"):
        rn.Attribution(dx, y, np.zeros(3), l2=1.0, fit_intercept="False")


def test_the_dask_fit_refuses_zero_weights_before_reading_x():
    """The refusal comes before any pass over X (the column means' pass came first): X's chunks
    here cannot be read at all."""
    da = pytest.importorskip("dask.array")
    from dask import delayed

    def unreadable():
        raise RuntimeError("X was read")

    dx = da.from_delayed(delayed(unreadable)(), shape=(60, 2), dtype=np.float64)
    y = np.r_[np.zeros(30), np.ones(30)]
    with pytest.raises(ValueError, match="sample_weight is 0 for every sample"):
        rn.fit(dx, y, fit_intercept=True, l2=1.0, sample_weight=np.zeros(60))


def test_retrain_decides_quasi_separation_left_by_a_set(rng):
    """Removing the only negatives on a 0/1 feature leaves its samples quasi-separated (l2 = 0):
    that refit has no finite minimiser (converged False, a warning; it was reported converged
    with the feature's coefficient at 23 and rising). Other sets refit as before."""
    n = 300
    x = (rng.random(n) < 0.1).astype(float)
    x[:3] = 1.0
    y = (rng.random(n) < 0.5).astype(float)
    y[x == 1] = 1.0
    y[:2] = 0.0  # the feature's only negatives
    X = np.column_stack([x, rng.standard_normal(n)])
    A = rn.Attribution(X, y, rn.fit(X, y, fit_intercept=True).theta, fit_intercept=True)
    with pytest.warns(rn.ConvergenceWarning, match=r"without set\(s\) 0 feature 0 alone "
                      "separates sample") as caught:
        R = A.retrain([[0, 1], [5, 6], [0]])
    assert len(caught) == 1
    assert R.converged.tolist() == [False, True, True]
    live = np.ones(n, dtype=bool)
    live[:2] = False
    e = np.array([1.0, 0.0, 0.0])
    f = [loss(X, y, R.theta[0] + t * e, "logistic", True, live=live) for t in (0.0, 5.0, 20.0)]
    assert f[0] > f[1] > f[2]


def test_retrain_stays_silent_where_saturated_samples_overlap(rng, monkeypatch):
    """Overlapping data with saturated samples (a finite minimiser without each set): no
    warning, whether the single-feature check runs for the sets whose refit moved a saturated
    sample by 1 (here at most the largest set) or, forced, for every set: no feature
    separates."""
    from rif_native import _separation

    calls = []
    real = _separation.FeatureSigns.separating_without
    monkeypatch.setattr(_separation.FeatureSigns, "separating_without",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    X, y = strong_overlap(np.random.default_rng(4), n=1000)
    A = rn.Attribution(X, y, rn.fit(X, y, fit_intercept=True).theta, fit_intercept=True)
    sets = [[0, 1, 2], [10], list(range(20, 60))]
    assert A.retrain(sets).converged.all() and len(calls) <= 1  # filterwarnings=error
    calls.clear()
    monkeypatch.setattr(np, "abs", lambda v: np.full(np.shape(v), np.inf))  # all moved
    assert A.retrain(sets).converged.all() and len(calls) == 3


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_feature_signs_against_brute_force(rng, family):
    """_separation.FeatureSigns.separating_without(T) (counted once, then O(|T| d)) against the
    definition over the samples left, column by column, on random sparse 0 / +-1 data, and
    against counting afresh; the programme agrees wherever a feature separates."""
    from rif_native import _separation

    found = 0
    for _ in range(60):
        n, d = int(rng.integers(3, 12)), int(rng.integers(1, 4))
        X = rng.choice([-1.0, 0.0, 0.0, 1.0], (n, d))
        y = ((rng.random(n) < 0.5).astype(float) if family == "logistic"
             else rng.choice([0.0, 0.0, 2.0], n))
        everyone = rng.random(n) < 0.9
        T = np.unique(rng.choice(n, int(rng.integers(0, 3)), replace=False))
        live = everyone.copy()
        live[T] = False
        got = _separation.FeatureSigns(X, y, family, everyone).separating_without(T)
        s = (np.where(y == 1, 1.0, -1.0) if family == "logistic"
             else np.where(y == 0, -1.0, 0.0))
        want = []
        for j in range(d):
            m = s[live] * X[live, j]
            two = (s[live] == 0) & (X[live, j] != 0)
            if not two.any() and ((m >= 0).all() and (m > 0).any()
                                  or (m <= 0).all() and (m < 0).any()):
                want.append(j)
        again = _separation.FeatureSigns(X, y, family, live).separating_without(
            np.empty(0, dtype=np.int64))  # counted afresh
        assert (got is None) == (again is None)
        if not want:
            assert got is None
            continue
        assert again[0] == got[0]
        found += 1
        j, apart = got
        assert j == want[0]
        np.testing.assert_array_equal(apart, np.flatnonzero(live & (X[:, j] != 0)))
        assert len(_separation.separated_samples(X, y, family, False, live)) > 0
    assert found > 5