"""Agreement statistics between predicted and actual effects (NumPy only)."""

from __future__ import annotations

from typing import Any

import numpy as np


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their positions."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or fewer than 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return float("nan")
    (xc, _), (yc, _) = _unit_scale(x), _unit_scale(y)  # no overflow in the mean or squares
    xc, yc = xc - xc.mean(), yc - yc.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def slope_through_origin(actual: Any, predicted: Any) -> float:
    """Least-squares slope of ``predicted`` on ``actual`` through the origin.

    ``sum(x * y) / sum(x * x)`` over the pairs where both are finite; NaN when no such pair has a
    non-zero ``x``.  A slope of 1 means the estimate has the right scale; IF typically gives well
    below 1 in high dimension, RIF close to 1.
    """
    x = np.asarray(actual, dtype=float).ravel()
    y = np.asarray(predicted, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"actual has {x.size} values but predicted has {y.size}; they must match")
    ok = np.isfinite(x) & np.isfinite(y)
    # effects of 1e200 or 1e-200 would overflow or underflow in x * x
    (x, sx), (y, sy) = _unit_scale(x[ok]), _unit_scale(y[ok])
    if sx == 0.0:
        return float("nan")
    if sy == 0.0:
        return 0.0
    return float(np.dot(x, y)) / float(np.dot(x, x)) * (sy / sx)


def _unit_scale(v: np.ndarray) -> tuple:
    """(``v`` divided by its largest magnitude, that magnitude); v itself where it is 0."""
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    return (v / scale if scale > 0 else v), scale


def median_relative_error(actual: np.ndarray, predicted: np.ndarray) -> float:
    """median |predicted - actual| / |actual| over points with actual != 0."""
    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    keep = a != 0
    if not keep.any():
        return float("nan")
    return float(np.median(np.abs(p[keep] - a[keep]) / np.abs(a[keep])))


def agreement(actual: np.ndarray, predicted: np.ndarray) -> dict:
    """slope, pearson, spearman and median_rel_error over the finite pairs, plus their count."""
    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    ok = np.isfinite(a) & np.isfinite(p)
    a, p = a[ok], p[ok]
    return {
        "slope": slope_through_origin(a, p),
        "pearson": pearson(a, p),
        "spearman": spearman(a, p),
        "median_rel_error": median_relative_error(a, p),
        "n_sets": int(ok.sum()),
    }
