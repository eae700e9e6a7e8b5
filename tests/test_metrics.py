"""Metrics (rif_native.metrics) against direct NumPy formulas and finite differences.

Sign: a removal effect is f(theta_est) - f(theta_hat); the linear effect <grad f(theta_hat), delta>.

Tolerances (all relative, norm-wise unless stated):
* value vs a direct NumPy sum (conftest.losses / sigmoid): 1e-12;
* gradient vs central differences, step 1e-6 * max(1, |theta|): 1e-6
  (truncation ~1e-12, rounding ~1e-16 * |f| / 1e-6 ~ 1e-9 at these sizes);
* linear effect vs the central difference (f(t + e d) - f(t - e d)) / (2 e), e = 1e-6: 1e-6;
* SelfLoss: 0.5 d^T H d vs the second difference (R(t + e d) + R(t - e d)) / (2 e^2), e = 1e-3,
  R the (cancellation-free) removal effect: 1e-5 (truncation O(e^2)); vs 0.5 d^T H d with a
  NumPy Hessian: 1e-10; gradient at a fit with tol 1e-12: <= 1e-9 max(1, ||grad F(0)||);
* 2-D inputs vs a loop over rows: rtol 1e-12, atol 1e-11 per entry (sums of ~50 terms of size
  up to ~20 in another order; a total near 0 after cancellation has only absolute accuracy).
"""

import numpy as np
import pytest

import rif_native as rn
from rif_native import metrics as M
from conftest import (
    FAMILIES,
    design,
    gradient,
    hessian,
    losses,
    make_problem,
    objective,
    sigmoid,
)


def _metrics_for(prob, rng, n_test=15):
    """The four built-in metrics on a problem (test points drawn like the training ones)."""
    kw = prob.kw
    fi, fam = kw["fit_intercept"], kw["family"]
    Xte = rng.standard_normal((n_test, prob.X.shape[1])) / np.sqrt(prob.X.shape[1])
    yte = prob.y[rng.integers(prob.n, size=n_test)]
    out = [
        M.TestPrediction(Xte, fit_intercept=fi, family=fam),
        M.TestLoss(Xte, yte, fit_intercept=fi, family=fam),
        M.SelfLoss(prob.X, prob.y, l2=kw["l2"], fit_intercept=fi, family=fam,
                   sample_weight=kw["sample_weight"]),
        M.Logit(Xte[0], fit_intercept=fi),
    ]
    if fam == "logistic":
        out.append(M.TestPrediction(Xte, 0, fit_intercept=fi, family=fam))
    return out, Xte, yte


def _central_gradient(f, theta, step=1e-6):
    g = np.zeros_like(theta)
    for j in range(theta.size):
        h = step * max(1.0, abs(theta[j]))
        e = np.zeros_like(theta)
        e[j] = h
        g[j] = (f(theta + e) - f(theta - e)) / (2 * h)
    return g


def _rel(got, ref):
    got, ref = np.asarray(got, float), np.asarray(ref, float)
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(got - ref) / den) if den > 0 else float(np.linalg.norm(got))


CASES = [(fam, fi, w) for fam in FAMILIES for fi, w in ((False, False), (True, True))]


# ----------------------------------------------------------------------------------------------
# values against direct NumPy sums
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,fit_intercept,weighted", CASES)
def test_values_match_numpy(rng, seed, family, fit_intercept, weighted):
    prob = make_problem(rng, family, n=40, d=5, fit_intercept=fit_intercept, weighted=weighted)
    (pred, tloss, self_loss, logit, *rest), Xte, yte = _metrics_for(prob, rng)
    th = prob.theta
    z = design(Xte, fit_intercept) @ th
    mean = {"logistic": sigmoid(z), "squared": z, "poisson": np.exp(z)}[family]
    checks = [
        (pred, mean.sum()),
        (tloss, losses(family, yte, z).sum()),
        (self_loss, objective(prob.X, prob.y, th, **prob.kw)),
        (logit, z[0]),
    ]
    if rest:
        checks.append((rest[0], sigmoid(-z).sum()))  # P(y = 0)
    assert np.allclose(pred.per_sample(th), mean, rtol=1e-13, atol=0)
    assert np.allclose(tloss.per_sample(th), losses(family, yte, z), rtol=1e-13, atol=1e-15)
    w = np.ones(prob.n) if prob.kw["sample_weight"] is None else prob.kw["sample_weight"]
    zt = design(prob.X, fit_intercept) @ th
    assert np.allclose(self_loss.per_sample(th), w * losses(family, prob.y, zt), rtol=1e-13,
                       atol=1e-15)
    for metric, ref in checks:
        got = metric.value(th)
        assert isinstance(got, float)
        assert abs(got - ref) <= 1e-12 * max(1.0, abs(ref)), (metric.name, got, ref, seed)
    assert [m.name for m in (pred, tloss, self_loss, logit)] == [
        "test_prediction", "test_loss", "self_loss", "logit"]


def test_weighted_test_loss_and_float32(rng):
    Xte = rng.standard_normal((30, 4))
    yte = (rng.random(30) < 0.5).astype(float)
    w = rng.uniform(0.0, 2.0, 30)
    th = rng.standard_normal(4)
    m = M.TestLoss(Xte, yte, family="logistic", sample_weight=w)
    assert abs(m.value(th) - np.sum(w * losses("logistic", yte, Xte @ th))) <= 1e-12 * 30
    X32 = Xte.astype(np.float32)
    m32 = M.TestLoss(X32, yte, family="logistic", sample_weight=w)
    ref = np.sum(w * losses("logistic", yte, X32.astype(np.float64) @ th))
    assert abs(m32.value(th) - ref) <= 1e-12 * max(1.0, abs(ref))


def test_logistic_extreme_logits_are_finite():
    """Stable formulas: |z| ~ 800 overflows a naive exp; values and effects stay finite."""
    Xte = np.array([[800.0], [-800.0], [0.5]])
    yte = np.array([0.0, 1.0, 1.0])
    th = np.array([1.0])
    m = M.TestLoss(Xte, yte)
    z = Xte[:, 0]
    ref = np.sum(np.logaddexp(0.0, z) - yte * z)
    assert abs(m.value(th) - ref) <= 1e-12 * ref
    eff = m.removal_effect(np.array([[1.1], [0.9], [1.0 + 1e-9]]), th)
    assert np.all(np.isfinite(eff))
    p = M.TestPrediction(Xte)
    assert abs(p.value(th) - (1.0 + 0.0 + sigmoid(0.5))) <= 1e-15
    assert np.all(np.isfinite(p.gradient(th)))


# ----------------------------------------------------------------------------------------------
# gradients and linear effects against finite differences
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family,fit_intercept,weighted", CASES)
def test_gradient_matches_central_differences(rng, seed, family, fit_intercept, weighted):
    prob = make_problem(rng, family, n=40, d=5, fit_intercept=fit_intercept, weighted=weighted)
    metrics, _, _ = _metrics_for(prob, rng)
    th = prob.theta
    for m in metrics:
        fd = _central_gradient(m.value, th)
        err = _rel(m.gradient(th), fd)
        assert err <= 1e-6, f"{m.name} ({family}): gradient rel. error {err:.2e} (seed={seed})"
    # SelfLoss gradient is grad F of the reference
    sl = metrics[2]
    assert _rel(sl.gradient(th), gradient(prob.X, prob.y, th, **prob.kw)) <= 1e-12


@pytest.mark.parametrize("family,fit_intercept,weighted", CASES)
def test_linear_effect_matches_central_differences(rng, seed, family, fit_intercept, weighted):
    prob = make_problem(rng, family, n=40, d=5, fit_intercept=fit_intercept, weighted=weighted)
    metrics, _, _ = _metrics_for(prob, rng)
    th = prob.theta
    deltas = 0.1 * rng.standard_normal((4, th.size))
    eps = 1e-6
    for m in metrics:
        if m.name == "self_loss":
            continue  # second-order linear effect: next test
        lin = m.linear_effect(deltas, th)
        fd = np.array([(m.value(th + eps * d) - m.value(th - eps * d)) / (2 * eps) for d in deltas])
        assert lin.shape == (4,)
        err = _rel(lin, fd)
        assert err <= 1e-6, f"{m.name} ({family}): linear effect rel. error {err:.2e} (seed={seed})"
        # the removal effect of a small step approaches the linear effect, first order
        tiny = m.removal_effect(th + 1e-7 * deltas, th) / 1e-7
        assert _rel(tiny, lin) <= 1e-5, (m.name, seed)


@pytest.mark.parametrize("family,fit_intercept,weighted", CASES)
def test_self_loss_linear_effect_is_second_difference(rng, seed, family, fit_intercept, weighted):
    prob = make_problem(rng, family, n=40, d=5, fit_intercept=fit_intercept, weighted=weighted)
    th = prob.theta
    sl = M.SelfLoss(prob.X, prob.y, **prob.kw)  # Hessian built on first use
    deltas = rng.standard_normal((3, th.size))
    e = 1e-3
    second = (sl.removal_effect(th + e * deltas, th) + sl.removal_effect(th - e * deltas, th)) / (
        2 * e**2)
    err = _rel(sl.linear_effect(deltas, th), second)
    assert err <= 1e-5, f"self-loss 0.5 d^T H d vs second difference: {err:.2e} (seed={seed})"


@pytest.mark.parametrize("family", FAMILIES)
def test_self_loss_at_fitted_theta(rng, seed, family):
    prob = make_problem(rng, family, n=60, d=6, fit_intercept=True, weighted=True)
    kw = prob.kw
    res = rn.fit(prob.X, prob.y, tol=1e-12, **kw)
    th = res.theta
    A = rn.Attribution(prob.X, prob.y, th, **kw)
    sl = M.SelfLoss(prob.X, prob.y, hessian=A, **kw)
    g0 = np.linalg.norm(gradient(prob.X, prob.y, np.zeros_like(th), **kw))
    assert np.linalg.norm(sl.gradient(th)) <= 1e-9 * max(1.0, g0), seed
    H = hessian(prob.X, prob.y, th, **kw)
    D = rng.standard_normal((5, th.size))
    ref = 0.5 * np.einsum("ij,jk,ik->i", D, H, D)
    assert _rel(sl.linear_effect(D, th), ref) <= 1e-10, seed
    assert _rel(sl.linear_effect(D[0], th), ref[0]) <= 1e-10
    # the same from a matrix and from the lazily built Attribution
    assert _rel(M.SelfLoss(prob.X, prob.y, hessian=H, **kw).linear_effect(D, th), ref) <= 1e-10
    assert _rel(M.SelfLoss(prob.X, prob.y, **kw).linear_effect(D, th), ref) <= 1e-10
    # at a minimiser every removal effect on F is >= 0 and matches 0.5 d^T H d to second order
    small = 1e-4 * D
    eff = sl.removal_effect(th + small, th)
    assert np.all(eff > 0)
    assert _rel(eff, sl.linear_effect(small, th)) <= 1e-3


def test_self_loss_refuses_the_hessian_of_a_differently_weighted_fit(rng):
    """SelfLoss(X, y, hessian=A) with A weighted and the metric not (or the other way round):
    its removal effects summed unweighted losses while its linear effect used A's weighted
    Hessian, silently (35% apart in one example). Now refused, naming sample_weight; with the
    weights given, both agree with the NumPy F and Hessian of the weighted fit."""
    prob = make_problem(rng, "logistic", n=60, d=4, fit_intercept=True, weighted=True)
    kw = prob.kw
    th = rn.fit(prob.X, prob.y, tol=1e-12, **kw).theta
    A = rn.Attribution(prob.X, prob.y, th, **kw)
    unweighted = {**kw, "sample_weight": None}
    with pytest.raises(ValueError, match="sample_weight"):
        M.SelfLoss(prob.X, prob.y, hessian=A, **unweighted)
    B = rn.Attribution(prob.X, prob.y, th, **unweighted)
    with pytest.raises(ValueError, match="sample_weight"):
        M.SelfLoss(prob.X, prob.y, hessian=B, **kw)
    sl = M.SelfLoss(prob.X, prob.y, hessian=A, **kw)
    d = 1e-3 * rng.standard_normal(th.size)
    H = hessian(prob.X, prob.y, th, **kw)
    assert _rel(sl.linear_effect(d, th), 0.5 * d @ H @ d) <= 1e-10
    ref = objective(prob.X, prob.y, th + d, **kw) - objective(prob.X, prob.y, th, **kw)
    assert _rel(sl.removal_effect(th + d, th), ref) <= 1e-6  # F - F: cancellation


# ----------------------------------------------------------------------------------------------
# vectorisation and accuracy of removal effects
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_removal_effect_2d_equals_loop(rng, seed, family):
    prob = make_problem(rng, family, n=50, d=4, fit_intercept=True)
    metrics, _, _ = _metrics_for(prob, rng)
    metrics.append(M.Custom("sq", lambda t: float(t @ t), lambda t: 2 * t))
    th = prob.theta
    est = th + 0.2 * rng.standard_normal((6, th.size))
    for m in metrics:
        many = m.removal_effect(est, th)
        loop = np.array([m.removal_effect(e, th) for e in est])
        assert many.shape == (6,)
        assert np.allclose(many, loop, rtol=1e-12, atol=1e-11), (m.name, seed)
        direct = np.array([m.value(e) - m.value(th) for e in est])
        assert np.allclose(many, direct, rtol=1e-9, atol=1e-10)
        lin = m.linear_effect(est - th, th)
        lin_loop = np.array([m.linear_effect(e - th, th) for e in est])
        assert np.allclose(lin, lin_loop, rtol=1e-12, atol=1e-11), (m.name, seed)
        assert np.allclose(m.values(est), [m.value(e) for e in est], rtol=1e-12, atol=1e-11)


def test_removal_effect_nonfinite_rows_give_nan(rng):
    Xte = rng.standard_normal((10, 3))
    m = M.TestLoss(Xte, (rng.random(10) < 0.5).astype(float))
    th = rng.standard_normal(3)
    est = np.vstack([th + 0.1, np.full(3, np.inf), th])
    eff = m.removal_effect(est, th)
    assert np.isnan(eff[1]) and np.isfinite(eff[[0, 2]]).all() and eff[2] == 0.0
    for metric in (m, M.SelfLoss(Xte, m.y, hessian=np.eye(3)), M.Logit(Xte[0])):
        lin = metric.linear_effect(est - th, th)
        assert np.isnan(lin[1]) and np.isfinite(lin[[0, 2]]).all() and lin[2] == 0.0


def test_small_removal_effects_keep_precision(rng):
    """Effects ~1e-10 of totals ~1e2: computed from per-sample differences, not totals."""
    Xte = rng.standard_normal((300, 5))
    yte = (rng.random(300) < 0.5).astype(float)
    th = rng.standard_normal(5)
    est = th + 1e-10 * rng.standard_normal(5)
    d = est - th  # exact (Sterbenz): the step the estimate really represents
    for m in (M.TestLoss(Xte, yte), M.TestPrediction(Xte),
              M.SelfLoss(Xte, yte, l2=1.0, hessian=np.eye(5))):
        # first order is exact to ~1e-9 relative here (SelfLoss's linear_effect is second order,
        # so use its gradient); a difference of totals would lose ~1e-5 relative
        ref = m.gradient(th) @ d
        assert abs(m.removal_effect(est, th) - ref) <= 1e-7 * abs(ref), m.name


# ----------------------------------------------------------------------------------------------
# Logit, Custom, paper_metrics, errors
# ----------------------------------------------------------------------------------------------
def test_logit_effect_is_exactly_linear(rng):
    x = rng.standard_normal(4)
    m = M.Logit(x, fit_intercept=True)
    th = rng.standard_normal(5)
    D = rng.standard_normal((3, 5))
    ref = D[:, :4] @ x + D[:, 4]
    assert np.allclose(m.removal_effect(th + D, th), ref, rtol=0, atol=1e-14)
    assert np.allclose(m.linear_effect(D, th), ref, rtol=0, atol=1e-14)
    assert np.array_equal(m.gradient(th), np.append(x, 1.0))


def test_custom_metric(rng):
    c = M.Custom("cube", lambda t: float(np.sum(t**3)), lambda t: 3 * t**2, n_params=3)
    th = rng.standard_normal(3)
    D = 0.01 * rng.standard_normal((2, 3))
    assert np.allclose(c.removal_effect(th + D, th), np.sum((th + D) ** 3, 1) - np.sum(th**3))
    assert np.allclose(c.linear_effect(D, th), D @ (3 * th**2))
    assert c.name == "cube"
    bad = M.Custom("bad", lambda t: 0.0, lambda t: np.zeros(2))
    with pytest.raises(ValueError, match="gradient_fn.*shape"):
        bad.gradient(th)
    with pytest.raises(ValueError, match="3 entries"):
        c.value(np.zeros(4))
    with pytest.raises(TypeError, match="value_fn"):
        M.Custom("x", 1.0, lambda t: t)


def test_paper_metrics(rng):
    prob = make_problem(rng, "logistic", n=40, d=5, fit_intercept=True, fitted=True)
    A = rn.Attribution(prob.X, prob.y, prob.theta, **prob.kw)
    ms = M.paper_metrics(prob.X[:8], prob.y[:8], prob.X, prob.y, l2=prob.kw["l2"],
                         family="logistic", fit_intercept=True, attribution=A)
    assert [m.name for m in ms] == ["test_prediction", "test_loss", "self_loss"]
    assert all(isinstance(m, M.Metric) for m in ms)
    D = A.rescaled_influence([0, 1, 2])
    ref = 0.5 * np.einsum("ij,jk,ik->i", D, A.hessian(), D)
    assert _rel(ms[2].linear_effect(D, prob.theta), ref) <= 1e-12
    with pytest.raises(ValueError, match="theta_hat differs"):
        ms[2].linear_effect(D, prob.theta + 0.1)
    with pytest.raises(ValueError, match="does not match.*l2"):
        M.SelfLoss(prob.X, prob.y, l2=2.0 * prob.kw["l2"], fit_intercept=True, hessian=A)


def test_errors(rng):
    X = rng.standard_normal((5, 3))
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="family"):
        M.TestLoss(X, y, family="gaussian")
    with pytest.raises(ValueError, match="logistic labels"):
        M.TestLoss(X, y + 0.5)
    with pytest.raises(ValueError, match="poisson labels"):
        M.TestLoss(X, -y, family="poisson")
    with pytest.raises(ValueError, match="target"):
        M.TestPrediction(X, 0, family="squared")
    with pytest.raises(ValueError, match="target"):
        M.TestPrediction(X, 2)
    with pytest.raises(ValueError, match="X_test must be 2-D"):
        M.TestPrediction(X[0])
    with pytest.raises(ValueError, match="NaN"):
        M.TestPrediction(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="y_test must have 5"):
        M.TestLoss(X, y[:4])
    m = M.TestLoss(X, y, fit_intercept=True)
    with pytest.raises(ValueError, match="p = 4.*fit_intercept"):
        m.value(np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(p,\) or \(m, p\)"):
        m.removal_effect(np.zeros((2, 2, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="theta_hat contains NaN"):
        m.linear_effect(np.zeros(4), np.full(4, np.nan))
    with pytest.raises(ValueError, match=r"hessian must have shape \(3, 3\)"):
        M.SelfLoss(X, y, hessian=np.eye(4))
    with pytest.raises(ValueError, match="l2"):
        M.SelfLoss(X, y, l2=-1.0)


@pytest.mark.parametrize("target", [0, 1])
def test_gradients_of_confident_test_points_keep_their_precision(target):
    """Test points the model is sure of (|z| from 20 to 40): the prediction metric's gradient
    sigma(z)(1 - sigma(z)) x and the loss's sigma(z) - 1 for y = 1 lost their relative precision
    in 1 - sigma(z) (1e-3 at z = 30, all of it from z = 37: a zero gradient, so every score of a
    metric on such a point was 0). Against sigma(-z) computed directly, per point."""
    from scipy.special import expit

    rng = np.random.default_rng(5)
    d = 3
    theta = np.array([1.0, 0.5, -0.5])
    for z in (-38.0, -30.0, 20.0, 30.0, 38.0):
        x = rng.standard_normal(d)
        x[0] = z - x[1:] @ theta[1:]
        zz = x @ theta
        pred = M.TestPrediction(x[None, :], target=target)
        s = 1.0 if target == 1 else -1.0
        want = s * expit(zz) * expit(-zz) * x
        tol = 8 * np.finfo(float).eps * abs(zz)
        np.testing.assert_allclose(pred.gradient(theta), want, rtol=tol, atol=0)
        loss = M.TestLoss(x[None, :], np.array([float(target)]))
        want = (-expit(-zz) if target == 1 else expit(zz)) * x
        np.testing.assert_allclose(loss.gradient(theta), want, rtol=tol, atol=0)
