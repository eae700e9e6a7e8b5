"""Metrics of a fitted model, and the removal effects of an estimate on them (Appendix C).

A metric is a scalar function ``f(theta)`` of the parameters. For an estimate ``theta_est`` of the
model refitted without a set T (an exact retrain, or ``theta_hat + delta`` with ``delta`` an IF,
RIF or Newton-step estimate from :class:`rif_native.Attribution`):

* the **removal effect** on f is ``f(theta_est) - f(theta_hat)``;
* the **linear effect** is ``<grad f(theta_hat), delta>`` with ``delta = theta_est - theta_hat``.

Sign: positive means "removing T increases f", the package-wide convention for removal effects.
``theta`` has ``p = d + fit_intercept`` entries with the intercept LAST, as everywhere in the
package. Every ``removal_effect`` / ``linear_effect`` takes one estimate of shape (p,) (returns a
float) or many as an (m, p) array (returns (m,)), computed for all rows at once.

Per-sample losses follow DESIGN.md section 2 (``z = x . theta``):

============  ===========================  =================
family        loss(y, z)                   predicted mean
============  ===========================  =================
logistic      log(1 + e^z) - y z           sigmoid(z)
squared       (z - y)^2 / 2                z
poisson       e^z - y z                    e^z
============  ===========================  =================

Removal effects are computed from per-sample differences ``loss(z + dz) - loss(z)`` written with
``expm1`` / ``log1p`` (never as the difference of two large totals), so they stay accurate for the
small changes of small removal sets.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import numpy as np

from ._api import _flag

__all__ = [
    "Custom",
    "Logit",
    "Metric",
    "SelfLoss",
    "TestLoss",
    "TestPrediction",
    "paper_metrics",
]

ArrayLike = Any
_FAMILIES = ("logistic", "squared", "poisson")
_BLOCK = 4096  # rows of X per block when evaluating many estimates at once


# ----------------------------------------------------------------------------- scalar helpers


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """sigmoid(z) without overflow: exp of a non-positive number only."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(z: np.ndarray) -> np.ndarray:
    """log(1 + e^z) = max(z, 0) + log1p(e^{-|z|}), exact for large |z|."""
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _loss(family: str, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-sample loss(y, z) of DESIGN.md's table (unweighted)."""
    if family == "logistic":
        return _softplus(z) - y * z
    if family == "squared":
        return 0.5 * (z - y) ** 2
    return np.exp(z) - y * z  # poisson


def _loss_diff(family: str, y: np.ndarray, z0: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """loss(y, z0 + dz) - loss(y, z0) without cancellation against the loss itself.

    logistic: log1p(sigmoid(z0) expm1(dz)) - y dz  (exact identity; the direct difference for
    |dz| > 30, where it loses nothing to cancellation); squared: dz (z0 - y + dz / 2);
    poisson: e^{z0} expm1(dz) - y dz.
    """
    if family == "logistic":
        small = np.abs(dz) <= 30.0
        dzs = np.where(small, dz, 0.0)
        stable = np.log1p(_sigmoid(z0) * np.expm1(dzs))
        direct = _softplus(z0 + dz) - _softplus(z0)
        return np.where(small, stable, direct) - y * dz
    if family == "squared":
        return dz * (z0 - y + 0.5 * dz)
    return np.exp(z0) * np.expm1(dz) - y * dz  # poisson


def _dloss(family: str, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """d loss / dz (unweighted): sigmoid(z) - y, z - y, e^z - y (logistic with y = 1 as
    -sigmoid(-z): the difference 1 - sigmoid(z) cancels for large z)."""
    if family == "logistic":
        return np.where(y == 1, -_sigmoid(-z), _sigmoid(z) - y)
    if family == "squared":
        return z - y
    return np.exp(z) - y


def _mean(family: str, z: np.ndarray) -> np.ndarray:
    """Predicted mean E[y | z]: sigmoid(z), z, e^z."""
    if family == "logistic":
        return _sigmoid(z)
    if family == "squared":
        return z
    return np.exp(z)


def _mean_diff(family: str, z0: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """mean(z0 + dz) - mean(z0) without cancellation.

    logistic: sigmoid(z1) - sigmoid(z0) = -sigmoid(z1) sigmoid(-z0) expm1(-dz) (exact identity).
    """
    if family == "logistic":
        z1 = z0 + dz
        return -_sigmoid(z1) * _sigmoid(-z0) * np.expm1(-dz)
    if family == "squared":
        return dz
    return np.exp(z0) * np.expm1(dz)


def _dmean(family: str, z: np.ndarray) -> np.ndarray:
    """d mean / dz: sigmoid(z) sigmoid(-z) (= sigmoid(z)(1 - sigmoid(z)) without that
    difference's cancellation for large z), 1, e^z."""
    if family == "logistic":
        return _sigmoid(z) * _sigmoid(-z)
    if family == "squared":
        return np.ones_like(z)
    return np.exp(z)


# ----------------------------------------------------------------------------- input checks


def _family(family: str) -> str:
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, _FAMILIES))}, got {family!r}")
    return family


def _matrix(X: ArrayLike, name: str, fit_intercept: bool) -> np.ndarray:
    """X as a finite 2-D float array (float32 kept, arithmetic below is float64)."""
    arr = np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples x features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one row, got shape {arr.shape}")
    if arr.shape[1] == 0 and not fit_intercept:
        raise ValueError(f"{name} has no features (d = 0), got shape {arr.shape}")
    if arr.dtype not in (np.float64, np.float32):
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _vector(v: ArrayLike, name: str, length: Optional[int], what: str) -> np.ndarray:
    arr = np.asarray(v)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D ({what}), got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries ({what}), got {arr.shape[0]}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _labels(y: ArrayLike, name: str, n: int, family: str) -> np.ndarray:
    ya = _vector(y, name, n, "one label per row")
    if family == "logistic" and not np.isin(ya, (0.0, 1.0)).all():
        bad = ya[~np.isin(ya, (0.0, 1.0))][0]
        raise ValueError(f"{name}: logistic labels must be 0 or 1, got {bad!r}")
    if family == "poisson" and (ya < 0).any():
        raise ValueError(f"{name}: poisson labels must be >= 0, got {ya.min()!r}")
    return ya


def _weights(w: Optional[ArrayLike], n: int) -> Optional[np.ndarray]:
    if w is None:
        return None
    wa = _vector(w, "sample_weight", n, "one weight per row")
    if (wa < 0).any():
        raise ValueError(f"sample_weight must be >= 0, got {wa.min()!r}")
    return wa


# ----------------------------------------------------------------------------- base class


class Metric:
    """A scalar function f(theta) of the parameters, with its gradient.

    Subclasses implement ``_values(thetas)`` (vectorised over the rows of an (m, p) array) and
    ``gradient``; they may override ``_differences`` with a form that avoids cancellation.

    Attributes:
        name: short identifier used in tables ("test_prediction", "test_loss", "self_loss",
            "logit", or a custom name).
        n_params: the length p of theta the metric expects (None when unknown, for Custom).
    """

    name: str = "metric"
    n_params: Optional[int] = None

    # -- public interface
    def value(self, theta: ArrayLike) -> float:
        """f(theta) for one parameter vector of shape (p,)."""
        t = self._theta(theta, "theta")
        return float(self._values(t[None, :])[0])

    def values(self, thetas: ArrayLike) -> np.ndarray:
        """f at each row of an (m, p) array (or one (p,) vector): shape (m,) (or (1,))."""
        T = self._rows(thetas, "thetas")
        return self._values(T)

    def gradient(self, theta: ArrayLike) -> np.ndarray:  # pragma: no cover - abstract
        """grad f(theta), shape (p,)."""
        raise NotImplementedError

    def removal_effect(self, theta_est: ArrayLike,
                       theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        """Removal effect ``f(theta_est) - f(theta_hat)`` (positive: removing T increases f).

        Args:
            theta_est: estimated (or exactly refitted) parameters without T: (p,) or (m, p).
            theta_hat: parameters fitted on all the data, (p,).

        Returns:
            a float for a (p,) estimate, an (m,) array for (m, p). Rows with a non-finite entry
            (an inf RIF of a singular removal) give NaN.
        """
        hat = self._theta(theta_hat, "theta_hat")
        est, single = self._estimates(theta_est, "theta_est")
        out = self._finite_rows(est, lambda rows: self._differences(rows - hat[None, :], hat))
        return float(out[0]) if single else out

    def linear_effect(self, delta: ArrayLike, theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        """Linear (first-order) removal effect ``<grad f(theta_hat), delta>``.

        Args:
            delta: estimated parameter change ``theta_{-T} - theta_hat``: (p,) or (m, p).
            theta_hat: parameters fitted on all the data, (p,).

        Returns:
            a float for a (p,) delta, an (m,) array for (m, p). Rows with a non-finite entry
            give NaN, as for removal_effect.
        """
        hat = self._theta(theta_hat, "theta_hat")
        D, single = self._estimates(delta, "delta")
        g = np.asarray(self.gradient(hat), dtype=np.float64)
        out = self._finite_rows(D, lambda rows: rows @ g)
        return float(out[0]) if single else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_params={self.n_params})"

    @staticmethod
    def _finite_rows(A: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """fn on the rows of A without inf/NaN (an inf RIF of a singular removal); NaN elsewhere."""
        out = np.full(A.shape[0], np.nan)
        ok = np.isfinite(A).all(axis=1)
        if ok.any():
            out[ok] = fn(A[ok])
        return out

    # -- for subclasses
    def _values(self, thetas: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _differences(self, deltas: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
        """f(theta_hat + delta_j) - f(theta_hat) for each row of the finite (m, p) ``deltas``."""
        return self._values(theta_hat[None, :] + deltas) - self._values(theta_hat[None, :])[0]

    # -- checks
    def _theta(self, theta: ArrayLike, name: str) -> np.ndarray:
        what = "one entry per parameter"
        if self.n_params is not None:
            what = f"p = {self.n_params} parameters, intercept last when fit_intercept=True"
        return _vector(theta, name, self.n_params, what)

    def _estimates(self, a: ArrayLike, name: str) -> tuple[np.ndarray, bool]:
        """(m, p) float64 array and whether a single (p,) vector was given; inf/NaN allowed."""
        arr = np.asarray(a)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        if arr.ndim not in (1, 2):
            raise ValueError(f"{name} must have shape (p,) or (m, p), got {arr.shape}")
        single = arr.ndim == 1
        arr = np.atleast_2d(arr).astype(np.float64)
        if self.n_params is not None and arr.shape[1] != self.n_params:
            raise ValueError(f"{name} must have p = {self.n_params} entries per row "
                             f"(intercept last when fit_intercept=True), got shape {np.shape(a)}")
        return arr, single

    def _rows(self, a: ArrayLike, name: str) -> np.ndarray:
        arr, _ = self._estimates(a, name)
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or inf")
        return arr


class _LinearPredictor(Metric):
    """Shared machinery: z = X theta[:d] (+ theta[d]) for a block of rows and many thetas."""

    def __init__(self, X: ArrayLike, fit_intercept: bool, name: str) -> None:
        self.fit_intercept = _flag(fit_intercept, "fit_intercept")
        self.X = _matrix(X, name, self.fit_intercept)
        self.n_rows, self.n_features = self.X.shape
        self.n_params = self.n_features + int(self.fit_intercept)

    def _blocks(self):
        for start in range(0, self.n_rows, _BLOCK):
            yield slice(start, min(start + _BLOCK, self.n_rows))

    def _z(self, rows: slice, thetas: np.ndarray) -> np.ndarray:
        """(rows, m) linear predictors of the block for each row of ``thetas`` (m, p)."""
        Xb = np.asarray(self.X[rows], dtype=np.float64)
        z = Xb @ thetas[:, : self.n_features].T
        if self.fit_intercept:
            z += thetas[:, self.n_features][None, :]
        return z

    def _xt_dot(self, rows: slice, v: np.ndarray) -> np.ndarray:
        """Xt[rows]^T v (p,): the block's contribution to a gradient."""
        Xb = np.asarray(self.X[rows], dtype=np.float64)
        out = Xb.T @ v
        if self.fit_intercept:
            out = np.append(out, v.sum())
        return out


# ----------------------------------------------------------------------------- the metrics


class TestPrediction(_LinearPredictor):
    """Total predicted probability of class ``target`` over a fixed set of test points.

    ``f(theta) = sum_j P_theta(y = target | x_j)``: ``sum_j sigmoid(z_j)`` for target 1 and
    ``sum_j sigmoid(-z_j)`` for target 0 (logistic). For "squared" and "poisson" the metric is the
    total predicted mean (``sum z_j`` or ``sum e^{z_j}``) and ``target`` must stay 1.
    Removal effects ``f(theta_est) - f(theta_hat)``: positive means removing T raises the total.

    Args:
        X_test: (n_test, d) test features (the fixed test subset).
        target: the class whose probability is summed, 0 or 1.
        fit_intercept: theta has the intercept as its last entry.
        family: "logistic" (default), "squared" or "poisson".
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, X_test: ArrayLike, target: int = 1, *, fit_intercept: bool = False,
                 family: str = "logistic") -> None:
        super().__init__(X_test, fit_intercept, "X_test")
        self.family = _family(family)
        if target not in (0, 1) or isinstance(target, bool):
            raise ValueError(f"target must be the class 0 or 1, got {target!r}")
        if self.family != "logistic" and target != 1:
            raise ValueError(f"target={target!r} only applies to family 'logistic'; for "
                             f"{self.family!r} the metric is the total predicted mean "
                             "(leave target=1)")
        self.target = int(target)
        self._sign = 1.0 if self.target == 1 else -1.0  # P(y=0) = sigmoid(-z)
        self.name = "test_prediction"

    def _values(self, thetas: np.ndarray) -> np.ndarray:
        out = np.zeros(thetas.shape[0])
        with np.errstate(over="ignore"):
            for b in self._blocks():
                out += _mean(self.family, self._sign * self._z(b, thetas)).sum(axis=0)
        return out

    def _differences(self, deltas: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
        out = np.zeros(deltas.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            for b in self._blocks():
                z0 = self._sign * self._z(b, theta_hat[None, :])
                dz = self._sign * self._z(b, deltas)
                out += _mean_diff(self.family, z0, dz).sum(axis=0)
        return out

    def per_sample(self, theta: ArrayLike) -> np.ndarray:
        """(n_test,) per-point predictions P_theta(y = target | x_j) (predicted means otherwise)."""
        t = self._theta(theta, "theta")
        with np.errstate(over="ignore"):
            return np.concatenate([_mean(self.family, self._sign * self._z(b, t[None, :]))[:, 0]
                                   for b in self._blocks()])

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """grad f(theta) = sum_j (+/-) mean'(z_j) x_j (with 1 for the intercept), shape (p,)."""
        t = self._theta(theta, "theta")
        g = np.zeros(self.n_params)
        for b in self._blocks():
            z = self._sign * self._z(b, t[None, :])[:, 0]
            g += self._sign * self._xt_dot(b, _dmean(self.family, z))
        return g


class TestLoss(_LinearPredictor):
    """Total loss over a fixed set of test points: ``f(theta) = sum_j w_j loss(y_j, z_j)``.

    No penalty term. Removal effects ``f(theta_est) - f(theta_hat)``: positive means removing T
    increases the test loss (those samples were helping).

    Args:
        X_test: (n_test, d) test features.
        y_test: (n_test,) test labels (0/1 for logistic, counts >= 0 for poisson).
        fit_intercept: theta has the intercept as its last entry.
        family: "logistic", "squared" or "poisson".
        sample_weight: optional (n_test,) weights >= 0 (default 1).
    """

    __test__ = False
    _arg_names = ("X_test", "y_test")  # argument names for error messages

    def __init__(self, X_test: ArrayLike, y_test: ArrayLike, *, fit_intercept: bool = False,
                 family: str = "logistic", sample_weight: Optional[ArrayLike] = None) -> None:
        x_name, y_name = self._arg_names
        super().__init__(X_test, fit_intercept, x_name)
        self.family = _family(family)
        self.y = _labels(y_test, y_name, self.n_rows, self.family)
        self.w = _weights(sample_weight, self.n_rows)
        self.name = "test_loss"

    def _weighted_sum(self, b: slice, per_sample: np.ndarray) -> np.ndarray:
        if self.w is not None:
            per_sample = per_sample * self.w[b, None]
        return per_sample.sum(axis=0)

    def _values(self, thetas: np.ndarray) -> np.ndarray:
        out = np.zeros(thetas.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            for b in self._blocks():
                per_sample = _loss(self.family, self.y[b, None], self._z(b, thetas))
                out += self._weighted_sum(b, per_sample)
        return out

    def _differences(self, deltas: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
        out = np.zeros(deltas.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            for b in self._blocks():
                z0 = self._z(b, theta_hat[None, :])
                diff = _loss_diff(self.family, self.y[b, None], z0, self._z(b, deltas))
                out += self._weighted_sum(b, diff)
        return out

    def per_sample(self, theta: ArrayLike) -> np.ndarray:
        """(n_rows,) per-point losses w_j loss(y_j, z_j), no penalty (to pick a test subset)."""
        t = self._theta(theta, "theta")
        out = np.concatenate([_loss(self.family, self.y[b], self._z(b, t[None, :])[:, 0])
                              for b in self._blocks()])
        return out if self.w is None else out * self.w

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """grad f(theta) = Xt^T r with r_j = w_j dloss/dz (z_j), shape (p,)."""
        t = self._theta(theta, "theta")
        g = np.zeros(self.n_params)
        for b in self._blocks():
            r = _dloss(self.family, self.y[b], self._z(b, t[None, :])[:, 0])
            if self.w is not None:
                r = r * self.w[b]
            g += self._xt_dot(b, r)
        return g


class SelfLoss(TestLoss):
    """The training objective F(theta) over ALL n training samples, removed ones included.

    ``f(theta) = sum_i w_i loss(y_i, z_i) + (l2 / 2) ||theta||_P^2`` (penalty included, P = 0 on
    the intercept): the paper's "self-loss". Removal effect ``f(theta_est) - f(theta_hat)``, which
    is >= 0 when theta_hat minimises F.

    Its gradient vanishes at the optimum, so the linear effect is second order:
    ``linear_effect(delta) = 0.5 delta^T H delta`` with H the Hessian of F at theta_hat (the
    gradient term is left out, as it is zero at a minimiser).

    Args:
        X, y: the full training data (n, d) and (n,).
        l2: the ridge penalty of F (sum of losses, not mean; see DESIGN.md).
        fit_intercept, family, sample_weight: as for the model.
        hessian: where H comes from: an :class:`rif_native.Attribution` at theta_hat (its
            ``.hessian()`` is used, and theta_hat is checked against it) or a (p, p) matrix.
            When None, the first ``linear_effect`` call builds an Attribution at its theta_hat.
    """

    __test__ = False
    _arg_names = ("X", "y")

    def __init__(self, X: ArrayLike, y: ArrayLike, *, l2: float = 0.0, fit_intercept: bool = False,
                 family: str = "logistic", sample_weight: Optional[ArrayLike] = None,
                 hessian: Any = None) -> None:
        super().__init__(X, y, fit_intercept=fit_intercept, family=family,
                         sample_weight=sample_weight)
        l2 = float(l2)
        if not (np.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
        self.l2 = l2
        self._P = np.ones(self.n_params)
        if self.fit_intercept:
            self._P[-1] = 0.0
        self.name = "self_loss"
        self._H: Optional[np.ndarray] = None
        self._H_theta: Optional[np.ndarray] = None  # theta the Hessian belongs to, when known
        self._H_source = "none"                     # "none" | "matrix" | "attribution" | "built"
        if hessian is not None:
            self.set_hessian(hessian)

    def set_hessian(self, hessian: Any) -> None:
        """Use ``hessian`` (an Attribution at theta_hat, or a (p, p) matrix) for linear_effect."""
        if hasattr(hessian, "hessian") and callable(hessian.hessian):
            self._check_attribution(hessian)
            self._H = np.asarray(hessian.hessian(), dtype=np.float64)
            self._H_theta = np.asarray(hessian.theta, dtype=np.float64)
            self._H_source = "attribution"
            return
        H = np.asarray(hessian)
        if H.dtype.kind not in "biuf":
            raise TypeError(f"hessian must be an Attribution or a real matrix, got dtype {H.dtype}")
        p = self.n_params
        if H.shape != (p, p):
            raise ValueError(f"hessian must have shape ({p}, {p}), got {H.shape}")
        if not np.isfinite(H).all():
            raise ValueError("hessian contains NaN or inf")
        self._H, self._H_theta, self._H_source = H.astype(np.float64), None, "matrix"

    def _check_attribution(self, A: Any) -> None:
        mismatch = []
        for attr, mine in (("n", self.n_rows), ("n_params", self.n_params),
                           ("family", self.family), ("fit_intercept", self.fit_intercept)):
            theirs = getattr(A, attr, mine)
            if theirs != mine:
                mismatch.append(f"{attr}={theirs!r} (metric has {mine!r})")
        theirs_l2 = float(getattr(A, "l2", self.l2))
        if not np.isclose(theirs_l2, self.l2, rtol=1e-12, atol=0.0):
            mismatch.append(f"l2={theirs_l2!r} (metric has {self.l2!r})")
        if hasattr(A, "_weights") and not mismatch:  # weights: None means all 1
            theirs_w, mine_w = A._weights, self.w
            ones = np.ones(self.n_rows)
            if not np.array_equal(ones if theirs_w is None else np.asarray(theirs_w, float),
                                  ones if mine_w is None else mine_w):
                mismatch.append("sample_weight (the Attribution's weights differ from the "
                                "metric's; give the metric the model's sample_weight)")
        if mismatch:
            raise ValueError("the Attribution given as hessian does not match this SelfLoss: "
                             + ", ".join(mismatch))

    def hessian(self, theta_hat: ArrayLike) -> np.ndarray:
        """(p, p) Hessian of F at theta_hat.

        Taken from the matrix or Attribution given (an Attribution built at another theta is an
        error); without either, built once per theta_hat through :class:`rif_native.Attribution`.
        """
        hat = self._theta(theta_hat, "theta_hat")
        if self._H_source == "matrix":
            return self._H
        if self._H_source == "attribution":
            if not np.allclose(self._H_theta, hat, rtol=1e-12, atol=1e-14):
                raise ValueError("theta_hat differs from the theta of the Attribution given as "
                                 "hessian: build the Attribution at theta_hat")
            return self._H
        if self._H_source != "built" or not np.array_equal(self._H_theta, hat):
            from ._api import Attribution  # local import: the compiled core only when needed

            A = Attribution(self.X, self.y, hat, l2=self.l2, family=self.family,
                            sample_weight=self.w, fit_intercept=self.fit_intercept)
            self._H, self._H_theta, self._H_source = A.hessian(), hat.copy(), "built"
        return self._H

    def _values(self, thetas: np.ndarray) -> np.ndarray:
        return super()._values(thetas) + 0.5 * self.l2 * (thetas**2 @ self._P)

    def _differences(self, deltas: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
        pen = 0.5 * self.l2 * ((deltas * (2.0 * theta_hat[None, :] + deltas)) @ self._P)
        return super()._differences(deltas, theta_hat) + pen

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """grad F(theta) = Xt^T r + l2 P theta, shape (p,); ~0 at a minimiser."""
        t = self._theta(theta, "theta")
        return super().gradient(t) + self.l2 * self._P * t

    def linear_effect(self, delta: ArrayLike, theta_hat: ArrayLike) -> Union[float, np.ndarray]:
        """Second-order effect ``0.5 delta^T H delta`` (H: Hessian of F at theta_hat).

        The first-order term ``<grad F(theta_hat), delta>`` vanishes at the optimum and is not
        added. Positive for any delta != 0 (H is positive definite): removing any set is predicted
        to raise the full-data objective, as it must at a minimiser.

        Args:
            delta: estimated change ``theta_{-T} - theta_hat``, (p,) or (m, p).
            theta_hat: the full-data optimum, (p,).

        Returns:
            a float for (p,), an (m,) array for (m, p); NaN for rows with inf/NaN entries.
        """
        H = self.hessian(theta_hat)
        D, single = self._estimates(delta, "delta")
        # (rows @ H) row by row with each row: a BLAS product, not einsum's triple loop
        out = self._finite_rows(D, lambda rows: 0.5 * np.einsum("ij,ij->i", rows @ H, rows))
        return float(out[0]) if single else out


class Logit(Metric):
    """The logit (linear predictor) of one point: ``f(theta) = x . theta[:d] (+ theta[d])``.

    Linear in theta, so the removal effect equals the linear effect exactly:
    ``x . delta`` (positive: removing T raises the point's logit). Used by the poisoning experiment.

    Args:
        x: (d,) features of the point.
        fit_intercept: theta has the intercept as its last entry.
    """

    def __init__(self, x: ArrayLike, *, fit_intercept: bool = False) -> None:
        self.fit_intercept = _flag(fit_intercept, "fit_intercept")
        xa = _vector(x, "x", None, "the features of one point")
        if xa.shape[0] == 0 and not self.fit_intercept:
            raise ValueError("x has no features (d = 0)")
        self.x = xa
        self._direction = np.append(xa, 1.0) if self.fit_intercept else xa
        self.n_params = self._direction.shape[0]
        self.name = "logit"

    def _values(self, thetas: np.ndarray) -> np.ndarray:
        return thetas @ self._direction

    def _differences(self, deltas: np.ndarray, theta_hat: np.ndarray) -> np.ndarray:
        return deltas @ self._direction

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """The constant gradient (x, 1) (or x without intercept), shape (p,)."""
        self._theta(theta, "theta")
        return self._direction.copy()


class Custom(Metric):
    """A metric from user functions ``value_fn(theta) -> float``, ``gradient_fn(theta) -> (p,)``.

    Removal effect ``value_fn(theta_est) - value_fn(theta_hat)`` (one call per estimate row),
    linear effect ``<gradient_fn(theta_hat), delta>``.

    Args:
        name: identifier used in tables.
        value_fn: f, called with a float64 (p,) array.
        gradient_fn: grad f, called with a float64 (p,) array.
        n_params: optional expected length p of theta (checked when given).
    """

    def __init__(self, name: str, value_fn: Callable[[np.ndarray], float],
                 gradient_fn: Callable[[np.ndarray], ArrayLike], *,
                 n_params: Optional[int] = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not callable(value_fn):
            raise TypeError(f"value_fn must be callable, got {type(value_fn).__name__}")
        if not callable(gradient_fn):
            raise TypeError(f"gradient_fn must be callable, got {type(gradient_fn).__name__}")
        if n_params is not None and (isinstance(n_params, bool) or int(n_params) != n_params
                                     or n_params < 1):
            raise ValueError(f"n_params must be a positive int or None, got {n_params!r}")
        self.name = name
        self.n_params = None if n_params is None else int(n_params)
        self._value_fn, self._gradient_fn = value_fn, gradient_fn

    def _values(self, thetas: np.ndarray) -> np.ndarray:
        return np.array([float(self._value_fn(t.copy())) for t in thetas], dtype=np.float64)

    def gradient(self, theta: ArrayLike) -> np.ndarray:
        """gradient_fn(theta) as a float64 (p,) array."""
        t = self._theta(theta, "theta")
        g = np.asarray(self._gradient_fn(t.copy()), dtype=np.float64)
        if g.shape != t.shape:
            raise ValueError(f"gradient_fn of metric {self.name!r} returned shape {g.shape}, "
                             f"expected {t.shape}")
        return g


def paper_metrics(X_test_subset: ArrayLike, y_test_subset: ArrayLike, X: ArrayLike, y: ArrayLike,
                  *, l2: float = 0.0, family: str = "logistic", fit_intercept: bool = False,
                  attribution: Any = None, sample_weight: Optional[ArrayLike] = None,
                  target: int = 1) -> list[Metric]:
    """The paper's three metrics (Appendix C), in this order:

    1. :class:`TestPrediction` -- total predicted P(y = target) over the test subset;
    2. :class:`TestLoss` -- total loss over the test subset;
    3. :class:`SelfLoss` -- F over all n training samples, penalty included, whose linear effect
       ``0.5 delta^T H delta`` takes H from ``attribution`` (an Attribution at theta_hat; when
       None it is built on first use).

    ``sample_weight`` weights the training samples (SelfLoss) only. Every removal effect is
    ``f(theta_est) - f(theta_hat)``.
    """
    return [
        TestPrediction(X_test_subset, target, fit_intercept=fit_intercept, family=family),
        TestLoss(X_test_subset, y_test_subset, fit_intercept=fit_intercept, family=family),
        SelfLoss(X, y, l2=l2, fit_intercept=fit_intercept, family=family,
                 sample_weight=sample_weight, hessian=attribution),
    ]

