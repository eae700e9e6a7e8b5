"""Regression influence diagnostics of a fitted GLM, with statsmodels' column names.

``diagnostics(A)`` (also ``Attribution.diagnostics()``) returns one row per sample, the columns of
statsmodels' ``GLMResults.get_influence().summary_frame()`` and two of this package's own. With
``r_i``, ``a_i`` the weighted residual and curvature (DESIGN.md section 2), ``h_i`` the leverage,
``RIF_i`` the one-step leave-one-out change (a removal effect, ``theta_{-i} - theta_hat``) and
``phi`` the dispersion (1 for logistic and Poisson; for squared loss the Pearson estimate
``sum_i w_i (y_i - z_i)^2 / (n - p)``, n counting the samples of positive weight):

===================  ===================================================================
column               definition
===================  ===================================================================
``dfb_<name>``       ``-RIF_ij / sqrt(phi [H^{-1}]_jj)``: statsmodels' DFBETAS, the change
                     ``theta_hat - theta_{-i}`` in standard errors (note the sign: the
                     opposite of a removal effect)
``cooks_d``          ``standard_resid^2 h_i / ((1 - h_i) p)``
``standard_resid``   ``-r_i / sqrt(phi a_i (1 - h_i))``: the Pearson residual, studentised
``hat_diag``         ``h_i``
``dffits_internal``  ``standard_resid sqrt(h_i / (1 - h_i))``
``rif_norm``         ``||RIF_i||``: how far leaving sample i out moves theta
``rif_score``        ``<direction, RIF_i>``, when a direction is given
===================  ===================================================================

For an unpenalised, unweighted fit these equal statsmodels' to rounding. With a penalty they use
the penalised Hessian (statsmodels has no penalty). With sample weights, row i describes
removing sample i entirely (weight to 0), the package's removal semantics; statsmodels'
``freq_weights`` mean something else (see the README). Samples of zero weight have residual and
leverage 0 and every column 0. Samples whose removal leaves H singular (h = 1) get inf.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["diagnostics"]


def _names(A: Any, names: Optional[Sequence[str]]) -> list:
    d = A.n_features
    if names is None:  # X's column names for a DataFrame, else x1..xd
        names = A.param_names[:d]
    names = [str(s) for s in names]
    if len(names) != d:
        raise ValueError(f"names must name the {d} features (not the intercept), got "
                         f"{len(names)}")
    return names + (["const"] if A.fit_intercept else [])


def _dispersion(A: Any) -> float:
    if A.family != "squared":
        return 1.0
    r, a = np.asarray(A.residuals), np.asarray(A.curvature)
    live = a > 0
    dof = int(live.sum()) - A.n_params
    if dof <= 0:
        raise ValueError("the squared-loss dispersion needs more samples of positive weight than "
                         f"parameters ({int(live.sum())} <= {A.n_params})")
    # r_i = w_i (z_i - y_i) and a_i = w_i: w_i (y_i - z_i)^2 = r_i^2 / a_i
    return float(np.sum(r[live] ** 2 / a[live]) / dof)


def diagnostics(A: Any, names: Optional[Sequence[str]] = None,
                direction: Optional[Any] = None) -> Any:
    """Per-sample influence diagnostics of Attribution A (see the module's table).

    Args:
        A: a :class:`rif_native.Attribution` (binary GLM families; X in memory or a source).
        names: the d feature names for the ``dfb_`` columns (default: A.param_names, X's
            column names when X was a DataFrame, else x1..xd; the intercept is ``const``).
        direction: optional (p,) metric gradient for a ``rif_score`` column.

    Returns:
        a pandas DataFrame (one row per sample) when pandas is installed, else a dict of
        column name to (n,) array, in the same column order.
    """
    if getattr(A, "family", None) == "multinomial":
        raise ValueError("diagnostics() covers the binary GLM families (one linear predictor); "
                         "for a multinomial model use its leverage_matrices() and RIF rows")
    columns = _names(A, names)
    phi = _dispersion(A)
    h = np.asarray(A.leverage, dtype=np.float64)
    r = np.asarray(A.residuals, dtype=np.float64)
    a = np.asarray(A.curvature, dtype=np.float64)
    p = A.n_params
    inv_diag = np.diag(A.solve(np.eye(p)))
    rif = np.ascontiguousarray(A.rescaled_influence(), dtype=np.float64)
    gap = 1.0 - h
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = np.where(a > 0, -r / np.sqrt(np.where(a > 0, a, 1.0)), 0.0)
        student = np.where(gap > 0, pearson / np.sqrt(phi * np.where(gap > 0, gap, 1.0)),
                           np.inf)
        ratio = np.where(gap > 0, h / np.where(gap > 0, gap, 1.0), np.inf)
        cooks = np.where(a > 0, student ** 2 * ratio / p, 0.0)
        dffits = np.where(a > 0, student * np.sqrt(ratio), 0.0)
    dfb = rif / -np.sqrt(phi * inv_diag)  # one pass over the n x p rows
    names = [f"dfb_{name}" for name in columns]
    rest = {"cooks_d": cooks, "standard_resid": student, "hat_diag": h,
            "dffits_internal": dffits, "rif_norm": np.sqrt(np.einsum("ij,ij->i", rif, rif))}
    if direction is not None:
        rest["rif_score"] = np.asarray(A.scores(direction, method="rif"), dtype=np.float64)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        return {**{name: dfb[:, j] for j, name in enumerate(names)}, **rest}
    frame = pd.concat([pd.DataFrame(dfb, columns=names, copy=False), pd.DataFrame(rest)],
                      axis=1)
    labels = getattr(A, "_labels", None)
    if labels is not None and labels.ids is not None:  # rows named by X's index
        frame.index = labels.ids
    return frame
