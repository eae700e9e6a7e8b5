"""rif_native against statsmodels' GLM influence measures (an independent implementation).

statsmodels.GLM(...).fit().get_influence() gives
  * hat_matrix_diag: the generalised leverage  h_i = a_i x_i^T H^{-1} x_i   (same definition);
  * params_one: the one-step (Newton) estimate of the leave-one-out parameters, so that
    params_one - params = RIF_i = theta_{-i} - theta_hat (d_params is the opposite sign).
Unpenalised fits on data where the MLE exists (n = 300 >> d = 8, no separation).

Tolerances: leverage per-entry relative error <= 1e-9; RIF rows per-row norm-wise relative
error <= 1e-9; rif_native.fit vs statsmodels' IRLS params: relative error <= 1e-8.
"""

import numpy as np
import pytest

import rif_native as rn
from conftest import FAMILIES, assert_close, make_problem, rel_err

sm = pytest.importorskip("statsmodels.api")

TOL = 1e-9

SM_FAMILY = {
    "logistic": lambda: sm.families.Binomial(),
    "poisson": lambda: sm.families.Poisson(),
    "squared": lambda: sm.families.Gaussian(),
}


def sm_fit(X, y, family, weights=None):
    kw = {} if weights is None else {"var_weights": weights}
    res = sm.GLM(y, X, family=SM_FAMILY[family](), **kw).fit(tol=1e-14, maxiter=200)
    return res, res.get_influence()


def problem(rng, family, n=300, d=7):
    # d random features, |z| of order 1: no separation at n = 300
    P = make_problem(rng, family, n=n, d=d, l2=0.0)
    return P.X, P.y


def test_logistic_intercept_column_in_X(rng, seed):
    """The brief's case: Binomial GLM, ones column included in X, fit_intercept=False."""
    Xf, y = problem(rng, "logistic")
    X = np.column_stack([Xf, np.ones(Xf.shape[0])])
    res, infl = sm_fit(X, y, "logistic")
    theta = np.asarray(res.params)

    h = rn.leverage(X, y, theta, l2=0.0, family="logistic")
    assert_close(h, infl.hat_matrix_diag, TOL, "leverage vs hat_matrix_diag", seed)

    rif_sm = np.asarray(infl.params_one) - theta
    # sign convention sanity check: statsmodels' d_params is the opposite of the removal effect
    assert rel_err(-np.asarray(infl.d_params), rif_sm) <= 1e-12
    A = rn.Attribution(X, y, theta, l2=0.0, family="logistic")
    assert_close(A.rescaled_influence(), rif_sm, TOL, "RIF vs params_one - params", seed)
    assert_close(rn.rescaled_influence(X, y, theta), rif_sm, TOL, "functional RIF", seed)
    assert_close(A.leverage, infl.hat_matrix_diag, TOL, "Attribution.leverage", seed)

    fr = rn.fit(X, y, l2=0.0, family="logistic")
    assert fr.converged
    assert rel_err(fr.theta, theta) <= 1e-8, f"fit vs statsmodels params (seed={seed})"


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "var_weights"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fit_intercept_and_families(rng, seed, family, weighted):
    """fit_intercept=True must equal statsmodels with a ones column appended LAST; sample
    weights are statsmodels' var_weights (they multiply each sample's log-likelihood)."""
    X, y = problem(rng, family)
    n = X.shape[0]
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    res, infl = sm_fit(np.column_stack([X, np.ones(n)]), y, family, w)
    theta = np.asarray(res.params)
    kw = dict(l2=0.0, family=family, sample_weight=w, fit_intercept=True)

    A = rn.Attribution(X, y, theta, **kw)
    assert_close(A.leverage, infl.hat_matrix_diag, TOL, f"{family} leverage", seed)
    assert_rif_rows(A.rescaled_influence(), np.asarray(infl.params_one) - theta, X, y, theta,
                    A.residuals, f"{family} RIF vs params_one - params", seed)
    assert A.gradient_norm <= 1e-8 * max(1.0, np.abs(y).sum()), "statsmodels params are the optimum"

    fr = rn.fit(X, y, **kw)
    assert fr.converged
    assert rel_err(fr.theta, theta) <= 1e-8, f"{family} fit vs statsmodels (seed={seed})"


def assert_rif_rows(got, ref, X, y, theta, r, what, seed):
    """Per-row relative error at most TOL, except where the row cannot be resolved that well:
    RIF_i is proportional to the residual r_i, which both sides compute from z_i - y_i (or the
    like) with an absolute rounding error of about eps (|x_i| . |beta| + |b| + |y_i|). A sample
    the model fits almost exactly (|r_i| of 1e-7, say) has a row known only to that error
    relative to |r_i|; such rows get that allowance (times 100) on top of TOL."""
    eps = np.finfo(np.float64).eps
    d = X.shape[1]
    resolution = eps * (np.abs(X) @ np.abs(theta[:d]) + np.abs(theta[d:]).sum() + np.abs(y))
    allowed = TOL + 100.0 * resolution / np.maximum(np.abs(r), np.finfo(np.float64).tiny)
    norms = np.linalg.norm(ref, axis=1)
    err = np.linalg.norm(np.asarray(got) - ref, axis=1)
    worst = int(np.argmax(err / (allowed * norms)))
    assert np.all(err <= allowed * norms), (
        f"{what}: row {worst} has relative error {err[worst] / norms[worst]:.3e} > "
        f"{allowed[worst]:.1e} (TOL plus its residual's resolution; seed={seed})")


def _longley():
    data = pytest.importorskip("statsmodels.datasets.longley").load()
    X = np.asarray(data.exog, dtype=float)  # raw: GNP deflator ~100, GNP ~3e5, YEAR ~1950
    y = np.asarray(data.endog, dtype=float)
    return X, y


def test_longley_uncentred_with_intercept():
    """statsmodels' bundled longley data, raw (cond(X) about 5e9): the intercept's pivot of H
    is lost to cancellation unless the features are centred, which rif-native does inside
    (the intercept absorbs the shift). Everything must equal the computation on explicitly
    centred data mapped back to the user's parametrisation (theta_b = theta~_b - c . beta),
    and agree with statsmodels' OLS influence.

    Tolerances: against the explicitly centred computation 1e-10 (both compute the same
    centred problem; the centre differs in the last bits); against statsmodels, whose raw
    computation loses about cond(X) * eps = 1e-6 of relative accuracy, 1e-6 for leverage and
    fit, and 1e-5 for RIF rows (per-row norm-wise)."""
    X, y = _longley()
    n, d = X.shape
    kw = dict(l2=0.0, family="squared", fit_intercept=True)
    fr = rn.fit(X, y, **kw)
    assert fr.converged
    c = X.mean(axis=0)
    Xc = X - c
    frc = rn.fit(Xc, y, **kw)
    mapped = frc.theta.copy()
    mapped[d] -= c @ frc.theta[:d]
    assert rel_err(fr.theta, mapped) <= 1e-10

    A = rn.Attribution(X, y, fr.theta, **kw)
    Ac = rn.Attribution(Xc, y, frc.theta, **kw)
    assert rel_err(A.leverage, Ac.leverage) <= 1e-10
    rif_c = Ac.rescaled_influence()
    rif_c[:, d] -= rif_c[:, :d] @ c
    assert rel_err(A.rescaled_influence(), rif_c) <= 1e-10
    ns_c = Ac.group_effect([[0, 1, 2], [5, 9]], method="ns")
    ns_c[:, d] -= ns_c[:, :d] @ c
    assert rel_err(A.group_effect([[0, 1, 2], [5, 9]], method="ns"), ns_c) <= 1e-10
    v = np.r_[np.ones(d), 3.0]  # a direction in the user's parameters
    vc = v.copy()
    vc[:d] -= c * v[d]          # the same linear functional in the centred parameters
    assert rel_err(A.scores(v), Ac.scores(vc)) <= 1e-10

    res, infl = sm_fit(np.column_stack([X, np.ones(n)]), y, "squared")
    theta_sm = np.asarray(res.params)
    assert rel_err(fr.theta, theta_sm) <= 1e-6
    assert rel_err(A.leverage, infl.hat_matrix_diag) <= 1e-6
    assert_close(A.rescaled_influence(), np.asarray(infl.params_one) - theta_sm, 1e-5,
                 "longley RIF vs params_one - params")
    # exact: for squared loss the Newton step of removing a set is the exact refit
    sets = [[0, 1], [7, 8, 15]]
    refit = A.retrain(sets, tol=1e-13)
    assert refit.converged.all()
    assert rel_err(refit.effect, A.group_effect(sets, method="ns")) <= 1e-8
