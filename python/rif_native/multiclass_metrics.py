"""Metrics of a multinomial model (rif_native.multinomial), and their removal effects.

A metric is a scalar function ``f(theta)`` of the (K, p) parameters (a row per class, the
intercept last). Each has ``value(theta)``, ``values(thetas)`` for (s, K, p) estimates,
``gradient(theta)`` (K, p) (the direction to pass to ``MultinomialAttribution.scores``), and
``removal_effect(theta_est, theta_hat) = f(theta_est) - f(theta_hat)`` and
``linear_effect(delta, theta_hat) = <grad f(theta_hat), delta>``. Every metric here is unchanged
by adding one vector to every class row, so its gradient's rows sum to zero.

* :class:`TestLoss`: total cross-entropy ``sum_i logsumexp(z_i) - z_{i, y_i}`` over test points;
* :class:`ClassProbability`: total predicted probability of class k over test points;
* :class:`LogitMargin`: ``z_k - z_l`` of one point (k's margin over l);
* :class:`SelfLoss`: the training objective F (penalty included) over all n training samples,
  removed ones included.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from ._api import _flag

__all__ = ["ClassProbability", "LogitMargin", "SelfLoss", "TestLoss", "paper_metrics"]

ArrayLike = Any
_BLOCK = 4096


def _design(X: ArrayLike, fit_intercept: bool, name: str) -> np.ndarray:
    A = np.asarray(X, dtype=np.float64)
    if A.ndim == 1:
        A = A[None, :]
    if A.ndim != 2:
        raise ValueError(f"{name} must be 2-D (points x features), got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} has non-finite entries")
    return np.hstack([A, np.ones((len(A), 1))]) if _flag(fit_intercept, "fit_intercept") else A


def _class(k: Any, name: str) -> int:
    """A class index k >= 0 (checked against K when theta is seen: _check_class)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{name} must be a class index 0..K-1, got {k!r}")
    return int(k)


def _check_class(k: int, K: int, name: str) -> None:
    if k >= K:
        raise ValueError(f"{name} = {k} is not a class of theta, which has {K} (0..{K - 1})")


def _logsumexp(Z: np.ndarray) -> np.ndarray:
    top = Z.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(Z - top).sum(axis=-1, keepdims=True)))[..., 0]


def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=-1, keepdims=True))
    return E / E.sum(axis=-1, keepdims=True)


class _Metric:
    name = "metric"

    def __init__(self, X: np.ndarray):
        self._X = X  # with the intercept's column when fitted

    def _thetas(self, thetas: ArrayLike) -> tuple[np.ndarray, bool]:
        T = np.asarray(thetas, dtype=np.float64)
        single = T.ndim == 2
        T = T[None] if single else T
        if T.ndim != 3 or T.shape[2] != self._X.shape[1]:
            raise ValueError(f"{self.name}: theta must be (K, {self._X.shape[1]}) or (s, K, "
                             f"{self._X.shape[1]}), got {np.shape(thetas)}")
        return T, single

    def _per_point(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dz(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def values(self, thetas: ArrayLike) -> np.ndarray:
        T, _ = self._thetas(thetas)
        out = np.zeros(len(T))
        for b in range(0, len(self._X), _BLOCK):
            Xb = self._X[b:b + _BLOCK]
            Z = np.einsum("ip,skp->sik", Xb, T)
            out += self._per_point(Z, slice(b, b + len(Xb))).sum(axis=1)
        return out + self._extra(T)

    def value(self, theta: ArrayLike) -> float:
        return float(self.values(np.asarray(theta)[None])[0])

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """(K, p) gradient at theta."""
        T, _ = self._thetas(theta)
        G = np.zeros(T.shape[1:])
        for b in range(0, len(self._X), _BLOCK):
            Xb = self._X[b:b + _BLOCK]
            D = self._dz(Xb @ T[0].T, slice(b, b + len(Xb)))  # (points, K)
            G += D.T @ Xb
        return G + self._extra_gradient(T[0])

    def removal_effect(self, theta_est: ArrayLike, theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        T, single = self._thetas(theta_est)
        out = self.values(T) - self.value(theta_hat)
        return float(out[0]) if single else out

    def linear_effect(self, delta: ArrayLike, theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        D, single = self._thetas(delta)
        out = np.einsum("skp,kp->s", D, self.gradient(theta_hat))
        return float(out[0]) if single else out

    def _extra(self, T: np.ndarray) -> np.ndarray:
        return np.zeros(len(T))

    def _extra_gradient(self, theta: np.ndarray) -> np.ndarray:
        return np.zeros_like(theta)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(points={len(self._X)})"


class TestLoss(_Metric):
    """Total cross-entropy over test points (optionally weighted)."""

    name = "test loss"
    __test__ = False  # not a pytest class

    def __init__(self, X_test: ArrayLike, y_test: ArrayLike, *, fit_intercept: bool = False,
                 sample_weight: Optional[ArrayLike] = None) -> None:
        super().__init__(_design(X_test, fit_intercept, "X_test"))
        y = np.asarray(y_test)
        if y.shape != (len(self._X),) or y.dtype == bool or \
                not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)) \
                or not np.all(np.isfinite(y)) or np.any(y != np.round(y)) or \
                (len(y) and y.min() < 0):
            raise ValueError("y_test must hold one integer class index >= 0 per test point")
        self._y = y.astype(np.int64)
        self._w = (np.ones(len(y)) if sample_weight is None
                   else np.asarray(sample_weight, dtype=np.float64).reshape(len(y)))

    def _check_classes(self, K: int) -> None:
        if len(self._y) and self._y.max() >= K:
            raise ValueError(f"y_test has class {self._y.max()} but theta has {K} classes")

    def _per_point(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        self._check_classes(Z.shape[-1])
        y = self._y[rows]
        picked = np.take_along_axis(Z, np.broadcast_to(y[None, :, None], Z.shape[:2] + (1,)),
                                    axis=2)[..., 0]
        return self._w[rows] * (_logsumexp(Z) - picked)

    def per_sample(self, theta: ArrayLike) -> np.ndarray:
        """(points,) each test point's weighted loss at theta."""
        T, _ = self._thetas(theta)
        return self._per_point((self._X @ T[0].T)[None], slice(0, len(self._X)))[0]

    def _dz(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        self._check_classes(Z.shape[-1])
        D = _softmax(Z)
        D[np.arange(len(D)), self._y[rows]] -= 1.0
        return D * self._w[rows, None]


class ClassProbability(_Metric):
    """Total predicted probability of class k over test points."""

    name = "class probability"

    def __init__(self, X_test: ArrayLike, k: int, *, fit_intercept: bool = False) -> None:
        super().__init__(_design(X_test, fit_intercept, "X_test"))
        self.k = _class(k, "k")

    def _per_point(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        _check_class(self.k, Z.shape[-1], "k")
        return _softmax(Z)[..., self.k]

    def _dz(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        _check_class(self.k, Z.shape[-1], "k")
        P = _softmax(Z)
        D = -P * P[:, self.k:self.k + 1]
        D[:, self.k] += P[:, self.k]
        return D


class LogitMargin(_Metric):
    """z_k - z_l of one point x: how far class k leads class l."""

    name = "logit margin"

    def __init__(self, x: ArrayLike, k: int, l: int, *, fit_intercept: bool = False) -> None:
        X = _design(x, fit_intercept, "x")
        if len(X) != 1:
            raise ValueError("LogitMargin takes one point x")
        super().__init__(X)
        self.k, self.l = _class(k, "k"), _class(l, "l")

    def _per_point(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        _check_class(max(self.k, self.l), Z.shape[-1], "k" if self.k >= self.l else "l")
        return Z[..., self.k] - Z[..., self.l]

    def _dz(self, Z: np.ndarray, rows: slice) -> np.ndarray:
        _check_class(max(self.k, self.l), Z.shape[-1], "k" if self.k >= self.l else "l")
        D = np.zeros_like(Z)
        D[:, self.k] += 1.0
        D[:, self.l] -= 1.0
        return D


class SelfLoss(TestLoss):
    """The training objective F over all n training samples (removed ones included), penalty
    included: its gradient vanishes at the fitted theta, so linear effects are 0 and
    ``removal_effect`` (always >= 0 for an exact refit's theta) is what to compare."""

    name = "self-loss"

    def __init__(self, X: ArrayLike, y: ArrayLike, *, l2: float = 0.0, fit_intercept: bool = False,
                 sample_weight: Optional[ArrayLike] = None, attribution: Any = None) -> None:
        super().__init__(X, y, fit_intercept=fit_intercept, sample_weight=sample_weight)
        self.l2 = float(l2)
        self._d = self._X.shape[1] - int(fit_intercept)
        self._attribution = attribution

    def linear_effect(self, delta: ArrayLike, theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        """With an attribution at theta_hat, the second-order term ``0.5 delta^T H delta`` (the
        gradient vanishes at the optimum, so the first-order term is 0); without, 0 + the
        gradient term."""
        if self._attribution is None:
            return super().linear_effect(delta, theta_hat)
        D, single = self._thetas(delta)
        out = self._attribution.quadratic_form(D)
        return float(out[0]) if single else out

    def _extra(self, T: np.ndarray) -> np.ndarray:
        return 0.5 * self.l2 * np.einsum("skp,skp->s", T[..., :self._d], T[..., :self._d])

    def _extra_gradient(self, theta: np.ndarray) -> np.ndarray:
        G = np.zeros_like(theta)
        G[:, :self._d] = self.l2 * theta[:, :self._d]
        return G


def paper_metrics(X_test_subset: ArrayLike, y_test_subset: ArrayLike, X: ArrayLike, y: ArrayLike,
                  *, attribution: Any = None, l2: float = 0.0, fit_intercept: bool = False,
                  sample_weight: Optional[ArrayLike] = None,
                  target: Optional[int] = None) -> list:
    """The paper's three metrics for a multinomial model, named as the binary ones:
    ``test_prediction`` (total probability of the ``target`` class over the test subset; default
    the subset's most frequent label), ``test_loss`` and ``self_loss``."""
    yt = np.asarray(y_test_subset).astype(np.int64)
    if target is None:
        target = int(np.argmax(np.bincount(yt))) if len(yt) else 0
    prediction = ClassProbability(X_test_subset, target, fit_intercept=fit_intercept)
    loss = TestLoss(X_test_subset, yt, fit_intercept=fit_intercept)
    self_loss = SelfLoss(X, y, l2=l2, fit_intercept=fit_intercept, sample_weight=sample_weight,
                         attribution=attribution)
    for metric, name in ((prediction, "test_prediction"), (loss, "test_loss"),
                         (self_loss, "self_loss")):
        metric.name = name
    return [prediction, loss, self_loss]
