"""rif_native.trust: the numbers it reports, and its rule (a set's additive RIF is not to be
trusted when it differs from the set's Newton step by more than 20%) checked against exact
retraining on high-dimensional logistic data where the rule fires for some sets and not for
others."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn

from conftest import Reference


def _problem(rng, n=300, d=120):
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 2.5
    beta = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(np.float64)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=1e-12).theta
    return X, y, rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)


def test_summary_numbers(rng):
    X, y, A = _problem(rng)
    s = A.trust()
    h = A.leverage
    assert s["n"] == 300 and s["p"] == 121 and s["n_over_p"] == pytest.approx(300 / 121)
    assert s["leverage_median"] == pytest.approx(np.median(h))
    assert s["leverage_max"] == pytest.approx(h.max()) and s["above_half"] == int((h > 0.5).sum())
    # the largest |RIF_i - IF_i| / |IF_i|, from the rows themselves
    rif, inf = A.rescaled_influence(), A.influence()
    ratio = np.linalg.norm(rif - inf, axis=1) / np.linalg.norm(inf, axis=1)
    assert s["max_rif_if_gap"] == pytest.approx(ratio.max(), rel=1e-8)
    assert "leverage>0.5" in repr(A) and "n/p=" in repr(A)


def _with_duplicates(rng, n=300, d=120, groups=6, size=8):
    """Logistic data with planted groups of near-duplicate samples (same label): removing a
    whole group is the case where members interact (each RIF assumes its twins stay)."""
    X = rng.standard_normal((n, d)) / np.sqrt(d) * 2.5
    planted = []
    for g in range(groups):
        idx = np.arange(g * size, (g + 1) * size)
        X[idx] = rng.standard_normal(d) / np.sqrt(d) * 2.5 + \
            0.05 * rng.standard_normal((size, d)) / np.sqrt(d)
        planted.append(idx)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.standard_normal(d))))).astype(np.float64)
    for idx in planted:
        y[idx] = y[idx[0]]
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=1e-12).theta
    return X, y, rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True), planted


def test_additivity_rule_against_exact_retraining(rng):
    """Random sets of 3 ordinary samples (they barely interact) and the planted groups of 8
    near-duplicates (they do). Premise, asserted: NS within 8% of the exact refit for every
    set. Then by the triangle inequality a flagged set's additive RIF is more than 10% off the
    exact effect and an unflagged one less than 30% off: asserted, and both kinds must occur
    (here: the groups are flagged, with RIF 30% to 70% off; the random sets are not, within
    5%)."""
    X, y, A, planted = _with_duplicates(rng)
    n = len(y)
    sets = [np.sort(rng.choice(np.arange(48, n), 3, replace=False)) for _ in range(6)] + planted
    with pytest.warns(rn.TrustWarning, match="additivity gap"):
        report = A.trust(sets)
    gaps, flagged = report["additivity_gap"], set(report["flagged_sets"].tolist())
    exact = A.retrain(sets, tol=1e-12).effect
    rif = A.group_effect(sets, method="rif")
    ns = A.group_effect(sets, method="ns")
    assert flagged and len(flagged) < len(sets), gaps
    for j in range(len(sets)):
        norm = np.linalg.norm(exact[j])
        assert np.linalg.norm(ns[j] - exact[j]) <= 0.08 * norm, f"premise: NS of set {j}"
        err = np.linalg.norm(rif[j] - exact[j]) / norm
        if j in flagged:
            assert err > 0.10, (j, gaps[j], err)
        else:
            assert err < 0.30, (j, gaps[j], err)


def test_no_warning_when_nothing_is_flagged(rng, recwarn):
    X, y, A = _problem(rng)
    report = A.trust([[0, 1]])
    assert report["flagged_sets"].size == 0
    assert not [w for w in recwarn if issubclass(w.category, rn.TrustWarning)]
    assert np.isscalar(A.trust([0, 1], warn=False)["additivity_gap"])


def test_a_set_whose_removal_changes_nothing_is_not_flagged(rng, recwarn):
    # Samples of zero weight: removing them leaves F, hence theta_hat, exactly as it is (the
    # exact refit is theta_hat), so the sum of their RIF and their Newton step are both 0 and
    # they cannot interact. The gap was 0 / 0, counted as inf and flagged.
    n, d = 150, 6
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(np.float64)
    w = np.ones(n)
    w[:4] = 0.0
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True, sample_weight=w, tol=1e-12).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, sample_weight=w)
    refit = A.retrain([0, 1, 2, 3], tol=1e-12).theta
    np.testing.assert_allclose(refit, theta, rtol=0, atol=1e-10)  # removal changes nothing
    report = A.trust([[0, 1, 2, 3], [0, 10], [20, 21]])
    assert report["additivity_gap"][0] == 0.0
    assert report["flagged_sets"].size == 0
    assert not [r for r in recwarn if issubclass(r.category, rn.TrustWarning)]


def test_summary_counts_only_the_samples_in_the_fit(rng):
    """Samples of weight 0 are not in the fit (leverage 0): with half the samples masked out,
    n / p and the leverage quantiles are those of the other half (a NumPy reference on the
    samples of positive weight), not diluted by zeros (they said n/p = 16.7 and a median
    leverage of 0.002 where the fit has n/p = 8.3 and a median of 0.075)."""
    n, d = 120, 6
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(np.float64)
    w = rng.uniform(0.5, 2.0, n)
    w[rng.permutation(n)[: n // 2]] = 0.0
    theta = rn.fit(X, y, l2=1.0, sample_weight=w, tol=1e-12).theta
    s = rn.Attribution(X, y, theta, l2=1.0, sample_weight=w).trust()
    live = w > 0
    h = Reference(X[live], y[live], theta, l2=1.0, sample_weight=w[live]).h
    assert s["n"] == n and s["n_fit"] == n // 2 and s["n_over_p"] == pytest.approx(n / 2 / d)
    for key, q in (("leverage_median", 0.5), ("leverage_q90", 0.9), ("leverage_q99", 0.99)):
        assert s[key] == pytest.approx(np.quantile(h, q), rel=1e-9), key
    assert s["leverage_max"] == pytest.approx(h.max(), rel=1e-9)
