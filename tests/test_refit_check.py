"""check_refit: the distance from a user's refit to the exact one is measured (against an
independent float64 Newton refit), the verdict follows it, and the corrected refit is the exact
one to second order. Also the short reprs, the theta-length hint and the one-call functions'
explicit keywords."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import rif_native as rn
from conftest import logistic_refit


def _standardised_breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y.astype(np.float64)


def _setup(typical=False):
    """Breast cancer, l2 = 1: the sample of largest leverage (or a typical one, of median
    leverage) and the exact refit without it."""
    X, y = _standardised_breast_cancer()
    w = np.ones(len(y))
    theta = logistic_refit(X, y, w, l2=1.0)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    order = np.argsort(A.leverage)
    i = int(order[len(order) // 2] if typical else order[-1])
    w_i = w.copy()
    w_i[i] = 0.0
    exact = logistic_refit(X, y, w_i, l2=1.0)
    return X, y, A, i, exact


def test_an_exact_refit_is_judgeable_and_agrees_with_the_newton_step():
    X, y, A, i, exact = _setup()
    c = A.check_refit([i], exact)
    effect = exact - A.theta
    assert c.judgeable and c.noise < 1e-6
    np.testing.assert_allclose(c.reported, effect, rtol=0, atol=1e-15)
    # one sample: NS is RIF; it is close to, not equal to, the exact refit
    np.testing.assert_allclose(c.predicted, A.rescaled_influence()[i], rtol=1e-10, atol=0)
    assert c.error_vs_reported == pytest.approx(
        np.linalg.norm(c.predicted - effect) / np.linalg.norm(effect), rel=1e-6)
    assert "relative error" in str(c)


def test_a_loose_refit_is_measured_and_refused():
    """theta_refit = exact + e with ||e|| ten times the effect: the check finds e (to second
    order) and says the refit cannot judge the estimate."""
    X, y, A, i, exact = _setup(typical=True)
    effect = exact - A.theta
    rng = np.random.default_rng(3)
    e = rng.standard_normal(A.n_params)
    e *= 10 * np.linalg.norm(effect) / np.linalg.norm(e)
    c = A.check_refit([i], exact + e, method="rif")
    assert not c.judgeable
    assert np.linalg.norm(c.solver_error + e) <= 1e-2 * np.linalg.norm(e)
    assert np.linalg.norm(c.corrected - effect) <= 1e-2 * np.linalg.norm(e)
    assert c.noise == pytest.approx(10.0, rel=0.05)
    assert "too loose" in str(c)


def test_scikit_learn_lbfgs_refit_is_checked_against_an_exact_refit():
    """The case from the issue: scikit-learn's lbfgs at tol=1e-10. Whatever it stops at, the
    measured distance to the optimum matches the independent exact refit's."""
    from sklearn.linear_model import LogisticRegression

    X, y, A, i, exact = _setup(typical=True)
    keep = np.setdiff1d(np.arange(len(y)), [i])
    m = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X[keep], y[keep])
    theta_refit = np.r_[m.coef_[0], m.intercept_]
    c = A.check_refit([i], theta_refit)
    distance = np.linalg.norm(theta_refit - exact)
    effect = np.linalg.norm(exact - A.theta)
    assert np.linalg.norm(c.solver_error) == pytest.approx(distance, rel=1e-2, abs=1e-13)
    assert c.noise == pytest.approx(distance / effect, rel=2e-2)


def test_bad_input():
    X, y, A, i, exact = _setup()
    with pytest.raises(ValueError, match="entries"):
        A.check_refit([i], exact[:-1])
    with pytest.raises(ValueError, match="outside"):
        A.check_refit([len(y)], exact)
    with pytest.raises(ValueError, match="NaN"):
        A.check_refit([i], np.full_like(exact, np.nan))


def test_results_print_in_a_line():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 50))
    y = (rng.random(200) < 0.5).astype(float)
    r = rn.fit(X, y, l2=1.0)
    text = repr(r)
    assert "\n" not in text and len(text) < 200 and "50 float64" in text
    assert f"n_iter={r.n_iter}" in text
    A = rn.Attribution(X, y, r.theta, l2=1.0)
    text = repr(A.retrain([[0], [1, 2]]))
    assert "\n" not in text and "2 x 50 float64" in text


def test_theta_length_error_names_fit_intercept():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 3))
    y = (rng.random(30) < 0.5).astype(float)
    with pytest.raises(ValueError, match="fit_intercept=True theta is d \\+ 1 long"):
        rn.Attribution(X, y, np.zeros(4))
    with pytest.raises(ValueError, match="fit_intercept=False theta is d long"):
        rn.Attribution(X, y, np.zeros(3), fit_intercept=True)


@pytest.mark.parametrize("f", [rn.leverage, rn.influence, rn.rescaled_influence,
                               rn.newton_step])
def test_one_call_functions_list_their_keywords(f):
    params = inspect.signature(f).parameters
    for name in ("l2", "family", "sample_weight", "fit_intercept", "num_threads", "backend",
                 "max_memory", "progress"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 4))
    y = (rng.random(60) < 0.5).astype(float)
    w = rng.uniform(0.5, 2.0, 60)
    theta = logistic_refit(X, y, w, l2=0.5)
    A = rn.Attribution(X, y, theta, l2=0.5, sample_weight=w, fit_intercept=True, num_threads=1)
    args = (X, y, theta, [[0, 1]]) if f is rn.newton_step else (X, y, theta)
    got = f(*args, l2=0.5, sample_weight=w, fit_intercept=True, num_threads=1)
    want = {rn.leverage: lambda: A.leverage, rn.influence: A.influence,
            rn.rescaled_influence: A.rescaled_influence,
            rn.newton_step: lambda: A.group_effect([[0, 1]], method="ns")}[f]()
    np.testing.assert_array_equal(got, want)


def _multinomial_setup():
    """Three classes with an intercept, l2 = 0.5; the fitted theta by the float64 reference,
    a set of 4 samples and the exact refit without them (test_multinomial's damped Newton)."""
    from test_multinomial import make_data, newton_fit_mn

    rng = np.random.default_rng(21)
    X, y, w, _ = make_data(rng, 100, 4, 3, fit_intercept=True, weighted=True)
    kw = dict(l2=0.5, sample_weight=w, fit_intercept=True)
    theta, gn, g0 = newton_fit_mn(X, y, 3, **kw)
    assert gn <= 1e-11 * max(1.0, g0)
    T = np.array([3, 17, 40, 41])
    exact, gn, g0 = newton_fit_mn(X, y, 3, drop=T, theta0=theta, **kw)
    assert gn <= 1e-11 * max(1.0, g0)
    A = rn.MultinomialAttribution(X, y, theta, **kw)
    return X, y, w, A, T, exact


def test_multinomial_refits_are_checked_in_the_subspace_of_the_estimates():
    """The exact refit is judgeable and the Newton step's error against it is the reference's
    (the dense float64 Newton step of test_multinomial); a refit loose by e in S is measured
    (solver_error = -e to second order); shifting every class row by one vector (no prediction
    changes: the intercepts, as scikit-learn leaves them) changes nothing."""
    from test_multinomial import DenseMultinomial

    X, y, w, A, T, exact = _multinomial_setup()
    effect = exact - A.theta
    c = A.check_refit(T, exact)
    assert c.judgeable and c.noise < 1e-8
    assert c.predicted.shape == (3, A.n_params)
    np.testing.assert_allclose(c.reported, effect, rtol=0, atol=1e-14)
    ns = DenseMultinomial(X, y, A.theta, l2=0.5, sample_weight=w, fit_intercept=True).ns(T)
    assert np.linalg.norm(c.predicted - ns) <= 1e-9 * np.linalg.norm(ns)
    assert c.error_vs_corrected == pytest.approx(
        np.linalg.norm(ns - effect) / np.linalg.norm(effect), rel=1e-6)

    shift = np.zeros_like(exact)
    shift[:, -1] = 0.3  # every class's intercept up by 0.3
    s = A.check_refit(T, exact + shift)
    np.testing.assert_allclose(s.reported, c.reported, rtol=0, atol=1e-14)
    np.testing.assert_allclose(s.solver_error, c.solver_error, rtol=0,
                               atol=1e-9 * np.linalg.norm(effect))

    e = np.random.default_rng(4).standard_normal(exact.shape)
    e -= e.mean(axis=0)  # in S
    e *= 0.05 * np.linalg.norm(effect) / np.linalg.norm(e)
    loose = A.check_refit(T, exact + e, method="rif")
    assert np.linalg.norm(loose.solver_error + e) <= 1e-2 * np.linalg.norm(e)
    assert loose.noise == pytest.approx(0.05, rel=0.05) and loose.judgeable


def test_multinomial_theta_refit_is_checked():
    X, y, w, A, T, exact = _multinomial_setup()
    with pytest.raises(ValueError, match=r"theta_refit must have shape \(K, p\) = \(3, 5\)"):
        A.check_refit(T, exact[:2])
    bad = exact.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="theta_refit has non-finite entries"):
        A.check_refit(T, bad)


def test_a_multinomial_set_taking_a_whole_class_is_named():
    """With an intercept, removing every sample of a class leaves no finite minimiser: said
    so, not as 'class(es) 2 have no samples of positive weight ... relabel the classes' from
    the check's internal rebuild (the review's case; the user gave no weights)."""
    X, y, w, A, T, exact = _multinomial_setup()
    whole = np.flatnonzero(y == 2)
    with pytest.raises(ValueError, match=r"take every sample .* of class\(es\) 2: without them"):
        A.check_refit(whole, exact)
