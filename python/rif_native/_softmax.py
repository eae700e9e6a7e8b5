"""The multinomial family's coordinates and per-sample algebra (used by rif_native.multinomial).

Parameters. The user's parameters are ``theta`` (K, p): row k holds class k's coefficients,
the intercept last (scikit-learn's ``np.column_stack([coef_, intercept_])``). Softmax does not
change when one vector is added to every row, so the kernel works in the subspace S where the
rows sum to zero: with Q (K, m), m = K - 1, an orthonormal basis of the vectors whose entries sum
to zero, the reduced parameters are ``R = Q^T theta`` (m, p) and ``Q R`` is theta's projection
onto S (the same probabilities). Points and removal effects map by Q^T and Q; so do gradients
of functions that the shift leaves unchanged (every metric's gradient lies in S).

Centring. With an intercept and X in memory, the kernel reads the centred rows
``[x - c, 1]`` (c the weighted column means), as the binary families do: the same model in the
parameters ``beta, b + c . beta`` for each class, without the cancellation of uncentred data.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import sources

ArrayLike = Any


def basis(K: int) -> np.ndarray:
    """Q (K, K - 1): orthonormal columns spanning the vectors whose entries sum to zero
    (Helmert's contrasts: column j is (1, ..., 1, -j, 0, ..., 0) / sqrt(j (j + 1)))."""
    Q = np.zeros((K, K - 1))
    for j in range(1, K):
        Q[:j, j - 1] = 1.0
        Q[j, j - 1] = -float(j)
        Q[:, j - 1] /= np.sqrt(j * (j + 1.0))
    return Q


def labels(y: ArrayLike, n: int, n_classes: Optional[int], weights: Optional[np.ndarray],
           empty_ok: bool = False) -> tuple[np.ndarray, int]:
    """y as int64 class indices 0..K-1 and K; ValueError for anything else, and for a class
    without samples (of positive weight) unless ``empty_ok`` (every parameter penalised: the
    penalty holds such a class's rows, and the minimiser is finite)."""
    a = np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"y must be a 1-D array of {n} class labels (one per row of X), "
                         f"got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer)
                               or np.issubdtype(a.dtype, np.floating)):
        raise ValueError("multinomial labels must be integer class indices 0..K-1, got dtype "
                         f"{a.dtype} (encode them first, e.g. with np.unique(y, "
                         "return_inverse=True))")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            bad = int(np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))[0])
            raise ValueError(f"multinomial labels must be integer class indices; y[{bad}] = "
                             f"{a[bad]!r}")
    y64 = a.astype(np.int64)
    if n and y64.min() < 0:
        bad = int(np.argmin(y64))
        raise ValueError(f"class labels must lie in 0..K-1; y[{bad}] = {y64[bad]}")
    top = int(y64.max()) + 1 if n else 0
    K = top if n_classes is None else int(n_classes)
    if K < 2:
        raise ValueError(f"the multinomial family needs at least 2 classes, got K = {K}")
    if top > K:
        bad = int(np.argmax(y64))
        raise ValueError(f"class labels must lie in 0..{K - 1} (n_classes = {K}); y[{bad}] = "
                         f"{y64[bad]}")
    live = np.ones(n, dtype=bool) if weights is None else weights > 0
    counts = np.bincount(y64[live], minlength=K)
    empty = np.flatnonzero(counts == 0)
    if len(empty) and not empty_ok:
        weighed = np.bincount(y64, minlength=K)[empty] > 0  # there, but all of weight 0
        why = ("samples of positive weight (every sample of theirs has weight 0)" if weighed.all()
               else "samples (with positive weight)")
        raise ValueError(f"class(es) {', '.join(map(str, empty[:10]))} of 0..{K - 1} have no "
                         f"{why}: with an intercept or l2 = 0 the model has no finite "
                         "minimiser for them. Give them samples of positive weight, relabel "
                         "the classes that do have some as 0..K'-1 (K' of them), or penalise "
                         "every parameter (l2 > 0, no intercept).")
    return y64, K


def weights(sample_weight: Optional[ArrayLike], n: int) -> Optional[np.ndarray]:
    """Sample weights as float64 (None: all ones); ValueError when negative or not finite."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and >= 0")
    return w


def parameters(theta: ArrayLike, K: int, p: int, name: str = "theta") -> np.ndarray:
    """theta as a (K, p) float64 array; ValueError naming the expected shape otherwise."""
    t = np.asarray(theta, dtype=np.float64)
    if t.shape != (K, p):
        raise ValueError(f"{name} must have shape (K, p) = ({K}, {p}): a row per class, p = "
                         f"d + fit_intercept entries with the intercept last; got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError(f"{name} has non-finite entries")
    return t


class Coordinates:
    """Maps between the user's (K, p) arrays and the kernel's reduced (m, p) ones."""

    def __init__(self, K: int, d: int, fit_intercept: bool, centre: Optional[np.ndarray]):
        self.K, self.m, self.d = K, K - 1, d
        self.p = d + int(fit_intercept)
        self.Q = basis(K)
        self.centre = centre if fit_intercept else None

    # points and differences of points: theta (.., K, p) <-> R (.., m, p)
    def point_to_kernel(self, theta: np.ndarray) -> np.ndarray:
        t = np.array(theta, dtype=np.float64)
        if self.centre is not None:
            t[..., self.d] += t[..., :self.d] @ self.centre
        return np.einsum("km,...kp->...mp", self.Q, t)

    def point_to_user(self, R: np.ndarray) -> np.ndarray:
        t = np.einsum("km,...mp->...kp", self.Q, R)
        if self.centre is not None:
            t[..., self.d] -= t[..., :self.d] @ self.centre
        return t

    # gradients and metric directions (duals)
    def dual_to_kernel(self, G: np.ndarray) -> np.ndarray:
        g = np.array(G, dtype=np.float64)
        if self.centre is not None:
            g[..., :self.d] -= g[..., self.d:self.d + 1] * self.centre
        return np.einsum("km,...kp->...mp", self.Q, g)

    def dual_to_user(self, R: np.ndarray) -> np.ndarray:
        g = np.einsum("km,...mp->...kp", self.Q, R)
        if self.centre is not None:
            g[..., :self.d] += g[..., self.d:self.d + 1] * self.centre
        return g

    def predictor(self, A: np.ndarray) -> np.ndarray:
        """Kernel-coordinate rows A (.., m, p) as coefficients of the uncentred [x, 1]: the same
        linear functions x -> A [x - c, 1]."""
        if self.centre is None:
            return np.asarray(A)
        B = np.array(A, dtype=np.float64)
        B[..., self.d] -= B[..., :self.d] @ self.centre
        return B


def raw_rows(X: Any, idx: np.ndarray) -> np.ndarray:
    """Rows idx of X (an array or a Source) as they are, float64 and C-contiguous."""
    idx = np.asarray(idx, dtype=np.int64)
    Xr = X.take(idx) if isinstance(X, sources.Source) else X[idx]
    return np.ascontiguousarray(Xr, dtype=np.float64)


def rows(X: Any, idx: np.ndarray, fit_intercept: bool, centre: Optional[np.ndarray]) -> np.ndarray:
    """The kernel's rows [x_i - c, 1] (k, p) of samples idx, float64."""
    Xr = raw_rows(X, idx)
    if centre is not None:
        Xr = Xr - centre
    if fit_intercept:
        Xr = np.hstack([Xr, np.ones((len(idx), 1))])
    return Xr


def linear(X: Any, B: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """[x_i, 1] . B_k for every sample: (n, m) from B (m, p) in uncentred coordinates."""
    if isinstance(X, sources.Source):
        return sources.matvec(X, B.T, fit_intercept)
    d = X.shape[1]
    coef = np.ascontiguousarray(B[:, :d].T, dtype=np.float64)
    if X.dtype == np.float64:
        Z = X @ coef
    else:  # float32 rows converted block by block: the products in float64, as the kernel's
        Z = np.empty((X.shape[0], B.shape[0]))
        for b in range(0, X.shape[0], 16384):
            Z[b:b + 16384] = X[b:b + 16384].astype(np.float64) @ coef
    if fit_intercept:
        Z += B[:, d]
    return Z


def curvature(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """A~_i = Q^T (diag(p_i) - p_i p_i^T) Q for every sample: (n, m, m)."""
    qp = P @ Q
    A = np.einsum("ka,ik,kb->iab", Q, P, Q, optimize=True)
    A -= qp[:, :, None] * qp[:, None, :]
    return A


def quadform_matrices(S: np.ndarray, m: int) -> np.ndarray:
    """The kernel's pair columns (n, m (m + 1) / 2) as symmetric (n, m, m) matrices."""
    k, l = np.triu_indices(m)
    out = np.empty((S.shape[0], m, m))
    out[:, k, l] = S
    out[:, l, k] = S
    return out


def sqrtm_psd(A: np.ndarray) -> np.ndarray:
    """Symmetric square roots of PSD matrices (.., m, m)."""
    lam, V = np.linalg.eigh(A)
    return (V * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]) @ np.swapaxes(V, -1, -2)
