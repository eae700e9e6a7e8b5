"""Estimates against exact retraining, and fit() against an independent Newton solver.

(1) squared loss: the Newton step is exact, so NS_T (and RIF_i for a single sample) must equal
    theta_{-T} - theta_hat from a closed-form ridge solve without T: per-row relative error <= 1e-9.
(2) logistic with d comparable to n: exact leave-one-out refits vs IF_i and RIF_i; RIF must be
    closer for >= 90% of 50 removals (and NS closer than the RIF sum for >= 80% of groups).
    Median relative errors are printed (pytest -s shows them).
(3) fit(): a stationary point (||grad F|| <= 1e-8 max(1, ||grad F(0)||), gradient by NumPy),
    equal to the NumPy Newton optimum (relative error <= 1e-7), FitResult fields.
"""

import dataclasses

import numpy as np
import pytest

import rif_native as rn
from conftest import (
    FAMILIES,
    Reference,
    assert_close,
    design,
    gradient,
    make_problem,
    newton_fit,
    rel_err,
    sigmoid,
)


# ----------------------------------------------------------------------------------------------
# (1) squared loss: Newton step == exact refit
# ----------------------------------------------------------------------------------------------
def ridge_closed_form(X, y, *, l2, sample_weight=None, fit_intercept=False):
    Xt = design(X, fit_intercept)
    w = np.ones(Xt.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    P = np.ones(Xt.shape[1])
    if fit_intercept:
        P[-1] = 0.0
    return np.linalg.solve(Xt.T @ (w[:, None] * Xt) + l2 * np.diag(P), Xt.T @ (w * y))


@pytest.mark.parametrize("l2", [0.0, 2.0])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_squared_ns_equals_exact_refit(rng, seed, l2, fit_intercept, weighted):
    n, d = 80, 9
    P = make_problem(rng, "squared", n=n, d=d, fit_intercept=fit_intercept, weighted=weighted,
                     l2=l2)
    w = P.kw["sample_weight"]
    theta = ridge_closed_form(P.X, P.y, l2=l2, sample_weight=w, fit_intercept=fit_intercept)
    A = rn.Attribution(P.X, P.y, theta, **P.kw)

    sizes = [1, 3, 5, 8, 15, 30]  # p = 9 or 10: sizes on both sides of p/2 and above p
    sets = [np.sort(rng.choice(n, size=k, replace=False)) for k in sizes]
    exact = []
    for T in sets:
        keep = np.setdiff1d(np.arange(n), T)
        wk = None if w is None else w[keep]
        exact.append(ridge_closed_form(P.X[keep], P.y[keep], l2=l2, sample_weight=wk,
                                       fit_intercept=fit_intercept) - theta)
        if w is not None and np.all(w[T] == 0):  # removing weight-0 samples changes nothing,
            exact[-1][:] = 0.0                    # exactly (the refit differs by rounding only)
    exact = np.array(exact)
    assert_close(A.group_effect(sets, method="ns"), exact, 1e-9, "NS vs exact ridge refit", seed)
    assert_close(rn.newton_step(P.X, P.y, theta, sets, **P.kw), exact, 1e-9,
                 "newton_step vs exact ridge refit", seed)
    # single removals: RIF_i is exact for a quadratic loss
    idx = np.arange(0, n, 9)
    exact1 = []
    for i in idx:
        keep = np.arange(n) != i
        wk = None if w is None else w[keep]
        exact1.append(ridge_closed_form(P.X[keep], P.y[keep], l2=l2, sample_weight=wk,
                                        fit_intercept=fit_intercept) - theta)
    exact1 = np.array(exact1)
    if weighted:  # a zero-weight sample has no effect at all, exactly
        zero = np.flatnonzero(w[idx] == 0)
        exact1[zero] = 0.0
    assert_close(A.rescaled_influence(idx), exact1, 1e-9, "RIF vs exact leave-one-out", seed)


# ----------------------------------------------------------------------------------------------
# (2) logistic, d comparable to n: RIF beats IF against exact refits
# ----------------------------------------------------------------------------------------------
def _logistic_high_dim(rng, n=400, d=150):
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    beta = 2.0 * rng.standard_normal(d)
    y = (rng.random(n) < sigmoid(X @ beta)).astype(np.float64)
    return X, y


def _exact_removal(X, y, T, theta_hat, kw):
    keep = np.setdiff1d(np.arange(X.shape[0]), np.atleast_1d(T))
    theta, gn = newton_fit(X[keep], y[keep], theta0=theta_hat, **kw)
    return theta - theta_hat


def test_logistic_rif_beats_if(rng, seed):
    n, d = 400, 150
    X, y = _logistic_high_dim(rng, n, d)
    kw = dict(l2=1.0, family="logistic", fit_intercept=True)
    theta_hat, _ = newton_fit(X, y, **kw)
    A = rn.Attribution(X, y, theta_hat, **kw)

    idx = rng.choice(n, size=50, replace=False)
    IF = A.influence(idx)
    RIF = A.rescaled_influence(idx)
    err_if, err_rif = [], []
    for k, i in enumerate(idx):
        exact = _exact_removal(X, y, i, theta_hat, kw)
        err_if.append(np.linalg.norm(IF[k] - exact) / np.linalg.norm(exact))
        err_rif.append(np.linalg.norm(RIF[k] - exact) / np.linalg.norm(exact))
    err_if, err_rif = np.array(err_if), np.array(err_rif)
    frac = float(np.mean(err_rif < err_if))
    print(f"\n[logistic n={n} d={d} l2=1, seed={seed}] single removals: median relative error "
          f"IF {np.median(err_if):.3e}, RIF {np.median(err_rif):.3e}; RIF closer for {frac:.0%}; "
          f"max leverage {A.leverage.max():.3f}")
    assert frac >= 0.9, f"RIF closer than IF for only {frac:.0%} of removals (seed={seed})"
    assert np.median(err_rif) < 0.2 * np.median(err_if), f"seed={seed}"

    # groups of 20: Newton step closer than the sum of RIFs, which is closer than the IF sum
    sets = [rng.choice(n, size=20, replace=False) for _ in range(10)]
    est = {m: A.group_effect(sets, method=m) for m in ("if", "rif", "ns")}
    errs = {m: [] for m in est}
    for j, T in enumerate(sets):
        exact = _exact_removal(X, y, T, theta_hat, kw)
        for m in est:
            errs[m].append(np.linalg.norm(est[m][j] - exact) / np.linalg.norm(exact))
    errs = {m: np.array(v) for m, v in errs.items()}
    print("groups of 20: median relative error " +
          ", ".join(f"{m.upper()} {np.median(v):.3e}" for m, v in errs.items()))
    assert np.mean(errs["ns"] < errs["rif"]) >= 0.8, f"seed={seed}"
    assert np.mean(errs["rif"] < errs["if"]) >= 0.8, f"seed={seed}"


def test_arrhythmia_rif_beats_if(rng, seed, arrhythmia):
    """Real data, n/d ~ 1.7: 30 exact leave-one-out refits."""
    X, y = arrhythmia
    kw = dict(l2=1.0, family="logistic", fit_intercept=True)
    theta_hat, _ = newton_fit(X, y, **kw)
    A = rn.Attribution(X, y, theta_hat, **kw)
    # samples the model fits to rounding (|r_i| ~ 0, so removal changes nothing measurable) are
    # no test of an estimator: draw among the others
    r = Reference(X, y, theta_hat, **kw).r
    idx = rng.choice(np.flatnonzero(np.abs(r) > 1e-6), size=30, replace=False)
    IF, RIF = A.influence(idx), A.rescaled_influence(idx)
    err_if, err_rif = [], []
    for k, i in enumerate(idx):
        exact = _exact_removal(X, y, i, theta_hat, kw)
        err_if.append(np.linalg.norm(IF[k] - exact) / np.linalg.norm(exact))
        err_rif.append(np.linalg.norm(RIF[k] - exact) / np.linalg.norm(exact))
    err_if, err_rif = np.array(err_if), np.array(err_rif)
    frac = float(np.mean(err_rif < err_if))
    print(f"\n[arrhythmia, seed={seed}] median relative error IF {np.median(err_if):.3e}, "
          f"RIF {np.median(err_rif):.3e}; RIF closer for {frac:.0%}")
    assert frac >= 0.9, f"seed={seed}"


# ----------------------------------------------------------------------------------------------
# (3) fit()
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_stationary_and_matches_newton(rng, seed, family, fit_intercept, weighted):
    P = make_problem(rng, family, n=150, d=10, fit_intercept=fit_intercept, weighted=weighted,
                     l2=0.5)
    res = rn.fit(P.X, P.y, **P.kw)

    # FitResult fields
    assert dataclasses.is_dataclass(res)
    assert isinstance(res.theta, np.ndarray) and res.theta.shape == (P.p,)
    assert res.theta.dtype == np.float64
    assert isinstance(res.grad_norm, float)
    assert isinstance(res.n_iter, int) and 1 <= res.n_iter <= 100
    assert res.converged is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.converged = False

    # stationarity, measured by our own gradient
    g0 = np.linalg.norm(gradient(P.X, P.y, np.zeros(P.p), **P.kw))
    g = np.linalg.norm(gradient(P.X, P.y, res.theta, **P.kw))
    assert g <= 1e-8 * max(1.0, g0), f"||grad F|| = {g:.3e}, ||grad F(0)|| = {g0:.3e} (seed={seed})"
    assert abs(res.grad_norm - g) <= 1e-10 * max(1.0, g0), (res.grad_norm, g)

    theta_ref, _ = newton_fit(P.X, P.y, **P.kw)
    assert rel_err(res.theta, theta_ref) <= 1e-7, f"fit vs NumPy Newton (seed={seed})"

    # squared loss: also the closed form
    if family == "squared":
        closed = ridge_closed_form(P.X, P.y, l2=P.kw["l2"], sample_weight=P.kw["sample_weight"],
                                   fit_intercept=fit_intercept)
        assert rel_err(res.theta, closed) <= 1e-9


def test_fit_unpenalised_logistic_matches_scipy(rng, seed):
    """l2 = 0, MLE exists (n = 300 >> d = 6): compare with scipy's root of grad F (MINPACK)."""
    from scipy.optimize import root

    P = make_problem(rng, "logistic", n=300, d=6, fit_intercept=True, l2=0.0)
    res = rn.fit(P.X, P.y, l2=0.0, family="logistic", fit_intercept=True, tol=1e-12)
    Xt = design(P.X, True)

    def dF(t):
        return Xt.T @ (sigmoid(Xt @ t) - P.y)

    def d2F(t):
        s = sigmoid(Xt @ t)
        return Xt.T @ ((s * (1 - s))[:, None] * Xt)

    ref = root(dF, np.zeros(Xt.shape[1]), jac=d2F, method="hybr", tol=1e-14)
    g0 = max(1.0, np.linalg.norm(dF(np.zeros(Xt.shape[1]))))
    assert np.linalg.norm(dF(ref.x)) <= 1e-11 * g0, ref.message  # scipy reached the optimum
    assert rel_err(res.theta, ref.x) <= 1e-8, f"seed={seed}"
    assert np.linalg.norm(dF(res.theta)) <= 1e-10 * g0


def test_fit_tol_theta0_and_convergence_warning(rng, seed):
    P = make_problem(rng, "logistic", n=200, d=8, fit_intercept=True, weighted=True, l2=0.1)
    g0 = np.linalg.norm(gradient(P.X, P.y, np.zeros(P.p), **P.kw))

    loose = rn.fit(P.X, P.y, tol=1e-3, **P.kw)
    assert loose.converged
    assert np.linalg.norm(gradient(P.X, P.y, loose.theta, **P.kw)) <= 1e-3 * max(1.0, g0)

    tight = rn.fit(P.X, P.y, tol=1e-12, **P.kw)
    assert tight.converged and tight.n_iter >= loose.n_iter

    # warm start at the optimum: stays there
    warm = rn.fit(P.X, P.y, theta0=tight.theta, **P.kw)
    assert warm.converged
    assert rel_err(warm.theta, tight.theta) <= 1e-9

    # one iteration from zero cannot reach tol=1e-10: ConvergenceWarning, converged False
    assert issubclass(rn.ConvergenceWarning, Warning)
    with pytest.warns(rn.ConvergenceWarning):
        bad = rn.fit(P.X, P.y, max_iter=1, **P.kw)
    assert bad.converged is False
    assert bad.n_iter <= 1
    gb = np.linalg.norm(gradient(P.X, P.y, bad.theta, **P.kw))
    assert abs(bad.grad_norm - gb) <= 1e-9 * max(1.0, gb)
    assert bad.grad_norm > 1e-10 * max(1.0, g0)


def test_fit_then_attribution_is_consistent(rng, seed):
    """The usual pipeline: fit, then attribute at the fitted theta; gradient_norm is ~0."""
    P = make_problem(rng, "poisson", n=120, d=6, fit_intercept=True, l2=0.3)
    res = rn.fit(P.X, P.y, **P.kw)
    A = rn.Attribution(P.X, P.y, res.theta, **P.kw)
    g0 = np.linalg.norm(gradient(P.X, P.y, np.zeros(P.p), **P.kw))
    assert A.gradient_norm <= 1e-8 * max(1.0, g0)
    R = Reference(P.X, P.y, res.theta, **P.kw)
    assert_close(A.rescaled_influence(), R.RIF, 1e-9, "RIF at fitted theta", seed)


def test_fit_warns_when_the_data_are_separable():
    """Logistic, l2 = 0, separable labels: no finite minimiser exists, so fit must say so
    (whether it stops on the gradient tolerance or on max_iter); with l2 > 0 it must not."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(float)
    with pytest.warns(rn.ConvergenceWarning):
        rn.fit(X, y, l2=0.0)
    res = rn.fit(X, y, l2=1.0)  # filterwarnings=error: any warning here fails the test
    assert res.converged
