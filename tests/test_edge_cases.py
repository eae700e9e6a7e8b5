"""Edge cases found in review: samples whose exp(z) overflows (removed ones and live ones),
and the two Newton-step paths (Woodbury for small sets, a fresh factor for large ones) agreeing
on which removals make the Hessian singular."""

import numpy as np
import pytest

import rif_native as rn


def test_zero_weight_sample_with_overflowing_exp_contributes_nothing():
    rng = np.random.default_rng(0)
    n, d = 80, 4
    X = rng.standard_normal((n, d)) * 0.3
    y = rng.poisson(1.0, n).astype(float)
    X[5] = 1e4  # x . theta is about 4e3 at the fit: exp overflows for this row
    w = np.ones(n)
    w[5] = 0.0
    res = rn.fit(X, y, family="poisson", l2=1.0, sample_weight=w)
    keep = np.arange(n) != 5
    ref = rn.fit(X[keep], y[keep], family="poisson", l2=1.0)
    assert res.converged
    np.testing.assert_allclose(res.theta, ref.theta, rtol=1e-9, atol=1e-12)
    A = rn.Attribution(X, y, res.theta, family="poisson", l2=1.0, sample_weight=w)
    assert np.isfinite(A.leverage).all() and A.leverage[5] == 0.0
    # retraining's passes skip it too (its residual is 0, not 0 * inf)
    T = [10, 11, 12]
    refit = A.retrain(T, tol=1e-12)
    keep2 = keep & ~np.isin(np.arange(n), T)
    ref2 = rn.fit(X[keep2], y[keep2], family="poisson", l2=1.0, tol=1e-12)
    assert refit.converged and not refit.refreshed  # no NaN gradient, no fallback to Newton
    np.testing.assert_allclose(refit.theta, ref2.theta, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("extra", [0, 30])  # k <= p/2 (Woodbury) and k > p/2 (direct factor)
def test_singular_set_detected_by_both_newton_step_paths(extra):
    rng = np.random.default_rng(1)
    n, d = 120, 20
    X = rng.standard_normal((n, d))
    X[:, 0] = 0.0
    X[:3, 0] = 1.0  # only samples 0, 1, 2 carry feature 0
    y = rng.standard_normal(n)
    theta = rn.fit(X, y, family="squared", l2=0.0).theta
    A = rn.Attribution(X, y, theta, family="squared", l2=0.0)
    T = np.r_[0, 1, 2, 3 + np.arange(extra)]
    assert (len(T) > A.n_params / 2) == (extra > 0)
    with pytest.warns(rn.SingularRemovalWarning, match="set"):
        ns = A.group_effect([T, [10, 11]], method="ns")
    assert np.isinf(ns[0]).all() and np.isfinite(ns[1]).all()


def test_retrain_warns_when_removal_makes_logistic_data_separable():
    """l2 = 0: removing the samples that overlap the classes leaves separable data, which has no
    finite refit; retrain must say so (and must not for a harmless set)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(float)
    flip = np.argsort(np.abs(X[:, 0]))[:12]
    y[flip] = 1 - y[flip]
    theta = rn.fit(X, y, l2=0.0).theta
    A = rn.Attribution(X, y, theta, l2=0.0)
    with pytest.warns(rn.ConvergenceWarning, match="separable"):
        A.retrain([flip, flip[:2]])
    with pytest.warns(rn.ConvergenceWarning, match=r"set\(s\) 0 the logistic"):
        A.retrain([flip, flip[:2]])
    A.retrain(flip[:2])  # still overlapping classes: a finite refit exists, no warning


def test_overflowing_curvature_is_named_not_reported_as_a_singular_hessian():
    """exp(z) of the poisson family overflows above z ~ 709: H would hold inf / NaN, whose
    factor must not pass as positive definite; the error names the sample and its z."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 3))
    X[3, 0] = 900.0
    with pytest.raises(ValueError, match=r"overflow at sample 3 \(linear predictor z = 900\)"):
        rn.Attribution(X, np.ones(50), np.array([1.0, 0.0, 0.0]), l2=1.0, family="poisson")


def test_fit_stopped_by_max_iter_says_what_to_do(rng):
    """With a penalty the data cannot be separable: the warning asks for more iterations, and
    mentions separability only for the unpenalised logistic loss."""
    X = rng.standard_normal((200, 5))
    y = (rng.random(200) < 0.5).astype(float)
    with pytest.warns(rn.ConvergenceWarning, match=r"raise max_iter \(it was 1\)") as caught:
        rn.fit(X, y, l2=1.0, max_iter=1)
    assert "separable" not in str(caught[0].message)
    with pytest.warns(rn.ConvergenceWarning, match="with l2 = 0 the data may be separable"):
        rn.fit(X, y, max_iter=1)


def test_confident_logistic_samples_keep_their_relative_precision():
    """Samples with sigma(z) near 1 (z from 20 to 40, confident and correct: common in separable
    embeddings): a_i = sigma(z)(1 - sigma(z)) and, for y = 1, r_i = sigma(z) - 1 lose their
    relative precision in the difference 1 - sigma(z) (a 1e-3 error at z = 30, all of it from
    z = 37: a_i = r_i = 0, so the sample's leverage, IF and RIF were 0). Against sigma(-z)
    computed directly, per entry, for every sample: within a few eps times z's magnitude (z
    itself is rounded there), and the leverages and RIF rows within eps cond(H)."""
    from scipy.special import expit

    rng = np.random.default_rng(3)
    n, d = 120, 3
    X = rng.standard_normal((n, d))
    X[:, 0] = np.linspace(-40.0, 40.0, n)
    theta = np.array([1.0, 0.3, -0.2])
    z = X @ theta
    y = (z > 0).astype(float)
    y[np.abs(z) < 3] = rng.random(int((np.abs(z) < 3).sum())) < 0.5  # overlap near 0
    for w in (None, np.linspace(0.5, 2.0, n)):
        A = rn.Attribution(X, y, theta, l2=1.0, sample_weight=w, num_threads=1)
        wt = np.ones(n) if w is None else w
        z_ = X @ theta
        a = wt * expit(z_) * expit(-z_)
        r = wt * np.where(y == 1, -expit(-z_), expit(z_))
        tol_z = 8 * np.finfo(float).eps * np.max(np.abs(z_))
        assert np.all(A.curvature > 0)
        np.testing.assert_allclose(A.curvature, a, rtol=tol_z, atol=0)
        np.testing.assert_allclose(A.residuals, r, rtol=tol_z, atol=0)
        H = X.T @ (a[:, None] * X) + np.eye(d)
        Hinv = np.linalg.inv(H)
        h = a * np.einsum("ij,jk,ik->i", X, Hinv, X)
        tol = tol_z + 10 * np.finfo(float).eps * np.linalg.cond(H)
        np.testing.assert_allclose(A.leverage, h, rtol=tol, atol=0)
        rif = (r[:, None] * X) @ Hinv / (1 - h)[:, None]
        got = A.rescaled_influence()
        err = np.linalg.norm(got - rif, axis=1) / np.linalg.norm(rif, axis=1)
        assert err.max() <= tol, f"RIF rows: relative error {err.max():.3e} > {tol:.1e}"


@pytest.mark.parametrize("scale", [1e14, 1e20])
@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_poisson_fit_from_zero_reaches_huge_counts(scale, solver):
    """Poisson counts of 1e14 and more: Newton's first step from theta = 0 moves z by about
    the counts, so every length down to 1e-12 of it still overflows exp(z); the line search
    gave up there, and fit stopped after 0 iterations at theta = 0 with a 'stalled (float64
    rounding), raise tol' warning. Against SciPy's minimiser of the same loss, started from
    the counts' log (where it is well scaled)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(4)
    n, d = 40, 3
    X = rng.standard_normal((n, d))
    y = scale * rng.uniform(0.5, 2.0, n)
    res = rn.fit(X, y, family="poisson", fit_intercept=True, solver=solver)
    Z = np.c_[X, np.ones(n)]
    u = y / y.mean()  # the loss divided by mean(y), shifted: e^{z - log mean y} - u z

    def f(t):
        z = Z @ t
        return np.sum(np.exp(z) - u * z), Z.T @ (np.exp(z) - u)

    ref = minimize(f, np.zeros(d + 1), jac=True, method="BFGS", options={"gtol": 1e-13}).x
    ref[-1] += np.log(y.mean())
    assert res.converged and res.n_iter > 0
    np.testing.assert_allclose(res.theta, ref, rtol=0, atol=1e-9)


def test_singular_removal_with_a_penalty_blames_the_intercept():
    """With l2 > 0 only the unpenalised intercept can be left without data (a set holding every
    sample of positive weight): the SingularRemovalWarning said 'Add l2 > 0' with l2 = 1. The
    estimates are inf either way (H_{-T}'s intercept entry is 0, as NumPy's H_{-T} shows)."""
    rng = np.random.default_rng(5)
    n, d = 12, 3
    X = rng.standard_normal((n, d))
    y = (rng.random(n) < 0.5).astype(float)
    y[:2] = [0.0, 1.0]
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    Z = np.c_[X, np.ones(n)]
    H_minus_all = A.hessian() - Z.T @ (A.curvature[:, None] * Z)
    np.testing.assert_allclose(H_minus_all, np.diag([1.0] * d + [0.0]), atol=1e-12)
    with pytest.warns(rn.SingularRemovalWarning, match="intercept") as caught:
        ns = A.group_effect(np.arange(n), method="ns")
    assert np.isinf(ns).all() and "Add l2 > 0" not in str(caught[0].message)
    w = np.r_[1.0, np.zeros(n - 1)]  # one sample of positive weight: its leverage is 1
    B = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, sample_weight=w)
    with pytest.warns(rn.SingularRemovalWarning, match="intercept") as caught:
        rif = B.rescaled_influence([0])
    assert np.isinf(rif).all() and "Add l2 > 0" not in str(caught[0].message)
