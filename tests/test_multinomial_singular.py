"""Multinomial refits and Newton steps of sets whose removal leaves nothing to fit.

With l2 = 0 the features are unpenalised: removing every sample on which a feature is nonzero,
or leaving fewer samples than parameters per class, makes H_{-T} singular and the refit has no
unique minimiser. That is decided by counting (not by a pivot's size, which depends on the
processor's rounding): the refit is not attempted (``singular``, ``converged`` False, a
warning) and the Newton step is inf. Also: refitting the empty set from a theta that is not the
minimiser goes to the minimiser.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rif_native as rn
from test_multinomial import make_data, newton_fit_mn


def _sparse_feature_data(seed):
    """l2 = 0 data whose feature 0 is nonzero on six samples only, two of each class with
    opposite signs (so that feature alone separates nothing: the fit is finite)."""
    rng = np.random.default_rng(seed)
    X, y, _, _ = make_data(rng, 120, 5, 3, fit_intercept=True, weighted=False, signal=1.0)
    X[:, 0] = 0.0
    carriers = np.concatenate([np.flatnonzero(y == k)[:2] for k in range(3)])
    X[carriers, 0] = [0.7, -0.5, 0.4, -0.8, 0.6, -0.3]
    theta, gn, g0 = newton_fit_mn(X, y, 3, l2=0.0, fit_intercept=True)
    assert gn <= 1e-10 * max(1.0, g0)
    return X, y, theta, carriers


def test_removing_every_carrier_of_a_feature_is_singular():
    X, y, theta, carriers = _sparse_feature_data(7)
    A = rn.MultinomialAttribution(X, y, theta, l2=0.0, fit_intercept=True)
    other = np.setdiff1d(np.arange(len(y)), carriers)[:3]
    sets = [carriers, other[:1], other]  # (K-1)|T| <= 12 = q: the Woodbury path
    with pytest.warns(rn.SingularRemovalWarning, match=r"set\(s\) 0 "):
        res = A.retrain(sets)
    assert res.singular.tolist() == [True, False, False]
    assert res.converged.tolist() == [False, True, True]
    np.testing.assert_array_equal(res.theta[0], theta)  # not attempted: theta_hat kept
    with pytest.warns(rn.SingularRemovalWarning):
        ns = A.group_effect(sets, method="ns")
    assert np.all(np.isinf(ns[0])) and np.all(np.isfinite(ns[1:]))
    # the other sets are refitted exactly (against an independent Newton refit)
    for j in (1, 2):
        ref, gn, g0 = newton_fit_mn(X, y, 3, l2=0.0, fit_intercept=True, theta0=theta,
                                    drop=sets[j])
        scale = np.linalg.norm(ref - theta)
        assert np.linalg.norm(res.theta[j] - ref) <= 1e-6 * scale


def test_leaving_fewer_samples_than_parameters_is_singular():
    X, y, theta, _ = _sparse_feature_data(8)
    A = rn.MultinomialAttribution(X, y, theta, l2=0.0, fit_intercept=True)
    keep = np.concatenate([np.flatnonzero(y == k)[2:4] for k in range(2)] + [[int(np.flatnonzero(y == 2)[2])]])
    T = np.setdiff1d(np.arange(len(y)), keep)  # 5 samples of every class left, p = 6
    with pytest.warns(rn.SingularRemovalWarning):
        res = A.retrain(T)  # (K-1)|T| > q: the fresh-factor path
    assert res.singular and not res.converged
    with pytest.warns(rn.SingularRemovalWarning):
        assert np.all(np.isinf(A.group_effect(T, method="ns")))


def test_penalised_features_are_never_structurally_singular():
    X, y, _, carriers = _sparse_feature_data(9)
    theta, gn, g0 = newton_fit_mn(X, y, 3, l2=0.5, fit_intercept=True)
    A = rn.MultinomialAttribution(X, y, theta, l2=0.5, fit_intercept=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = A.retrain(carriers)
    assert res.converged and not res.singular
    ref, _, _ = newton_fit_mn(X, y, 3, l2=0.5, fit_intercept=True, theta0=theta, drop=carriers)
    assert np.linalg.norm(res.theta - ref) <= 1e-6 * np.linalg.norm(ref - theta)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_retraining_nothing_from_a_non_minimiser_finds_the_minimiser(fit_intercept):
    rng = np.random.default_rng(10)
    X, y, w, start = make_data(rng, 200, 5, 4, fit_intercept=fit_intercept, weighted=True)
    kw = dict(l2=0.3, sample_weight=w, fit_intercept=fit_intercept)
    ref, gn, g0 = newton_fit_mn(X, y, 4, **kw)
    assert np.linalg.norm(start - ref) > 0.1 * np.linalg.norm(ref)  # far from it
    A = rn.MultinomialAttribution(X, y, start, **kw)
    res = A.retrain([[]])
    assert res.converged[0]
    assert np.linalg.norm(res.theta[0] - ref) <= 1e-8 * np.linalg.norm(ref)


def test_a_class_whose_samples_all_weigh_nothing_is_named_so():
    """A class present only with weight 0 (a scikit-learn user's sample_weight) is refused
    saying so, not only as a class without samples, where some parameter is unpenalised (an
    intercept, or l2 = 0): that class's parameters have no finite minimiser."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 3))
    y = np.r_[0, 1, 2, rng.integers(0, 3, 27)]
    w = np.where(y == 2, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"class\(es\) 2 of 0\.\.2 have no samples of positive "
                                         r"weight \(every sample of theirs has weight 0\)"):
        rn.fit(X, y, family="multinomial", l2=1.0, sample_weight=w, fit_intercept=True)
    with pytest.raises(ValueError, match=r"have no samples \(with positive weight\)"):
        rn.fit(X, np.where(y == 2, 0, y), family="multinomial", l2=0.0, n_classes=3)


@pytest.mark.parametrize("how", ["weight 0", "n_classes"])
def test_a_class_without_samples_is_fitted_when_every_parameter_is_penalised(how):
    """With l2 > 0 and no intercept the penalty holds an empty class's rows and F has a finite
    minimiser: fit, the attribution and retraining run (they refused) and equal the damped
    Newton reference written in test_multinomial (float64), to 1e-8 of theta's scale."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((80, 4))
    y = rng.integers(0, 3, 80)
    w, K = None, 3
    if how == "weight 0":
        w = np.where(y == 2, 0.0, rng.uniform(0.5, 2.0, 80))
    else:
        y, K = np.minimum(y, 1), 4  # classes 2 and 3 have no samples
    res = rn.fit(X, y, family="multinomial", l2=0.5, sample_weight=w, n_classes=K)
    ref, gn, g0 = newton_fit_mn(X, y, K, l2=0.5, sample_weight=w)
    assert gn <= 1e-10 * max(1.0, g0) and res.converged
    scale = np.linalg.norm(ref)
    assert np.linalg.norm(res.theta - ref) <= 1e-8 * scale
    A = rn.MultinomialAttribution(X, y, res.theta, l2=0.5, sample_weight=w, n_classes=K)
    T = np.flatnonzero(y == 1)[:5]
    refit = A.retrain([T])
    drop, _, _ = newton_fit_mn(X, y, K, l2=0.5, sample_weight=w, drop=T)
    assert refit.converged[0]
    assert np.linalg.norm(refit.theta[0] - drop) <= 1e-8 * scale


def test_removing_every_sample_with_a_penalty_blames_the_intercept():
    """With l2 > 0 only the unpenalised intercepts can be left without data: the warning said
    'Add l2 > 0' with l2 = 1. H_{-T} is l2 on the coefficients and 0 on the intercepts (the
    dense reference's H less every sample's H_i)."""
    rng = np.random.default_rng(8)
    X, y, _, _ = make_data(rng, 30, 3, 3, fit_intercept=True, weighted=False)
    theta, gn, g0 = newton_fit_mn(X, y, 3, l2=1.0, fit_intercept=True)
    A = rn.MultinomialAttribution(X, y, theta, l2=1.0, fit_intercept=True)
    with pytest.warns(rn.SingularRemovalWarning, match="intercept without data") as caught:
        ns = A.group_effect([np.arange(30)], method="ns")
    assert np.isinf(ns).all() and "Add l2 > 0" not in str(caught[0].message)


def test_a_refit_cut_short_by_max_iter_says_what_to_do():
    """The multinomial retrain's warning gives the binary engine's advice (it said only
    'above the tolerance'): raise max_iter, naming it; l2 > 0 only where l2 = 0."""
    rng = np.random.default_rng(9)
    X, y, _, _ = make_data(rng, 90, 3, 3, fit_intercept=True, weighted=False)
    for l2 in (1.0, 0.0):
        theta = newton_fit_mn(X, y, 3, l2=l2, fit_intercept=True)[0]
        A = rn.MultinomialAttribution(X, y, theta, l2=l2, fit_intercept=True)
        with pytest.warns(rn.ConvergenceWarning, match=r"raise max_iter \(it was 1\)") as caught:
            res = A.retrain([np.arange(25)], max_iter=1)
        assert not res.converged[0]
        assert ("add l2 > 0" in str(caught[0].message)) == (l2 == 0.0)
