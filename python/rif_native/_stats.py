"""Agreement statistics between predicted and actual effects (NumPy only)."""

from __future__ import annotations

import numpy as np


def rankdata(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based), ties sharing the mean of their positions."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    ranks = np.empty(a.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_a[1:] != sorted_a[:-1]])
    ends = np.r_[starts[1:], a.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1.0
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or fewer than 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    denom = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denom) if denom > 0 else float("nan")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (Pearson of average ranks)."""
    return pearson(rankdata(x), rankdata(y))


def slope_through_origin(actual: np.ndarray, predicted: np.ndarray) -> float:
    """Least-squares slope b of predicted = b * actual: 1 means no systematic under/overshoot."""
    a, p = np.asarray(actual, float), np.asarray(predicted, float)
    denom = a @ a
    return float(a @ p / denom) if denom > 0 else float("nan")


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
