"""Attribution.diagnostics() against statsmodels' GLMInfluence.summary_frame() (unweighted,
unpenalised: every column equal to 1e-10 of the column's scale) and, with sample weights,
against exact leave-one-out refits (the package's removal semantics)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import rif_native as rn
from conftest import logistic_refit, make_problem

sm = pytest.importorskip("statsmodels.api")
pd = pytest.importorskip("pandas")

SM_FAMILY = {"logistic": sm.families.Binomial, "poisson": sm.families.Poisson,
             "squared": sm.families.Gaussian}
COLUMNS = ("cooks_d", "standard_resid", "hat_diag", "dffits_internal")


def _column_close(got, ref, what, tol=1e-10):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max(), 1e-300)
    err = np.abs(got - ref).max() / scale
    assert err <= tol, f"{what}: max error {err:.2e} of the column's scale"


@pytest.mark.parametrize("family", ["logistic", "poisson", "squared"])
def test_equal_to_statsmodels_summary_frame(rng, seed, family):
    P = make_problem(rng, family, n=300, d=6, l2=0.0)
    X, y = P.X, P.y
    n, d = X.shape
    names = [f"f{j}" for j in range(d)]
    res = sm.GLM(y, pd.DataFrame(np.column_stack([X, np.ones(n)]), columns=names + ["const"]),
                 family=SM_FAMILY[family]()).fit(method="newton", tol=1e-14, maxiter=200)
    # (method="newton": IRLS's cov_params, hence bse and dfb_, come from the weights of its
    # previous iterate, 1e-9 away from the inverse Hessian at params)
    frame = res.get_influence().summary_frame()
    A = rn.Attribution(X, y, np.asarray(res.params), l2=0.0, family=family, fit_intercept=True)
    ours = A.diagnostics(names=names)
    assert list(ours.columns[:d + 1]) == [f"dfb_{s}" for s in names + ["const"]]
    for col in [f"dfb_{s}" for s in names + ["const"]] + list(COLUMNS):
        _column_close(ours[col], frame[col], f"{family} {col} (seed {seed})")
    assert np.all(ours["rif_norm"] >= 0)


def test_rif_columns_and_dict_without_pandas(rng, monkeypatch):
    """rif_norm is ||RIF_i||, rif_score <direction, RIF_i>; without pandas a dict of arrays."""
    P = make_problem(rng, "logistic", n=120, d=5, l2=1.0, fit_intercept=True)
    A = rn.Attribution(P.X, P.y, P.theta, l2=1.0, fit_intercept=True)
    v = rng.standard_normal(A.n_params)
    monkeypatch.setitem(sys.modules, "pandas", None)
    table = A.diagnostics(direction=v)
    assert isinstance(table, dict)
    rif = A.rescaled_influence()
    np.testing.assert_allclose(table["rif_norm"], np.linalg.norm(rif, axis=1), rtol=1e-12)
    np.testing.assert_allclose(table["rif_score"], rif @ v, rtol=1e-9,
                               atol=1e-12 * np.abs(rif @ v).max())
    assert list(table)[:A.n_params] == [f"dfb_x{j + 1}" for j in range(5)] + ["dfb_const"]


_refit = logistic_refit


def test_weighted_rows_describe_removing_the_sample(rng):
    """With weights 1 to 3, row i's dfb (times the standard errors) is the one-step estimate of
    dropping sample i entirely (its weight to 0), not one unit of its weight: on the five
    weight-3 samples of largest leverage it is within 10% of the exact refit without the
    sample, and at least 30% away from the refit with its weight lowered to 2 (whose change
    is about a third as large)."""
    P = make_problem(rng, "logistic", n=300, d=6, l2=0.0)
    X, y = P.X, P.y
    w = rng.integers(1, 4, size=len(y)).astype(np.float64)
    theta = _refit(X, y, w)
    A = rn.Attribution(X, y, theta, sample_weight=w, fit_intercept=True)
    table = A.diagnostics()
    se = np.sqrt(np.diag(A.solve(np.eye(A.n_params))))
    dfb = table[[c for c in table.columns if c.startswith("dfb_")]].to_numpy()
    heavy = np.flatnonzero(w == 3)
    for i in heavy[np.argsort(-A.leverage[heavy])[:5]]:
        one_step = dfb[i] * se  # theta_hat - theta_{-i}, one step
        drop, unit = w.copy(), w.copy()
        drop[i], unit[i] = 0.0, 2.0
        full = theta - _refit(X, y, drop)
        partial = theta - _refit(X, y, unit)
        assert np.linalg.norm(one_step - full) <= 0.1 * np.linalg.norm(full), i
        assert np.linalg.norm(one_step - partial) >= 0.3 * np.linalg.norm(partial), i


def test_zero_weight_sample_has_zero_row(rng):
    P = make_problem(rng, "poisson", n=80, d=4, l2=0.5, fit_intercept=True)
    w = np.ones(80)
    w[7] = 0.0
    A = rn.Attribution(P.X, P.y, P.theta, l2=0.5, family="poisson", sample_weight=w,
                       fit_intercept=True)
    row = A.diagnostics().iloc[7]
    assert np.all(row.to_numpy() == 0.0)


def test_multinomial_refused(rng):
    X = rng.standard_normal((30, 2))
    y = np.arange(30) % 3
    A = rn.Attribution(X, y, np.zeros((3, 2)), family="multinomial", l2=1.0)
    with pytest.raises(AttributeError):
        A.diagnostics()
