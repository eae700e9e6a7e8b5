"""Shared fixtures and an independent float64 NumPy reference for rif_native.

The reference below is written from ../shared/DESIGN.md and ../spec/API.md only: explicit
inverses, dense matrices, no factorisation tricks, so that it shares no code path with the
package under test.  Conventions (DESIGN.md section 2):

    F(theta) = sum_i w_i loss(y_i, z_i) + (l2 / 2) ||theta||_P^2,   z = Xt theta
    Xt = X with a column of ones appended LAST when fit_intercept
    P  = identity on coefficients, 0 on the intercept
    H  = Xt^T diag(a) Xt + l2 P
    h_i = a_i xt_i^T H^{-1} xt_i,  IF_i = H^{-1} r_i xt_i,  RIF_i = IF_i / (1 - h_i)
    NS_T = H_{-T}^{-1} sum_{i in T} r_i xt_i,   H_{-T} = H - sum_{i in T} a_i xt_i xt_i^T

Every estimate is a removal effect theta_{-T} - theta_hat.

Random tests run twice: once with a fixed seed and once with a fresh seed drawn for this run.
The seed is printed (shown by pytest on failure) and put in assertion messages; set
RIF_TEST_SEED=<int> to replay a fresh-seed failure.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest

FAMILIES = ("logistic", "squared", "poisson")
FIXED_SEED = 20240611

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


# --------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------
def _fresh_seed() -> int:
    env = os.environ.get("RIF_TEST_SEED")
    if env:
        return int(env)
    # 63 bits of fresh OS entropy: a different problem every run.
    return int(np.random.SeedSequence().entropy % (2**63))


_FRESH_SEED = _fresh_seed()


def pytest_report_header(config):
    return (f"rif_native tests: fixed seed {FIXED_SEED}, fresh seed {_FRESH_SEED} "
            "(RIF_TEST_SEED=<seed> replays it)")


@pytest.fixture(params=["fixed", "fresh"])
def seed(request) -> int:
    """Seed for a random test: a fixed one and one fresh for this run."""
    s = FIXED_SEED if request.param == "fixed" else _FRESH_SEED
    print(f"seed={s}")
    return s


@pytest.fixture
def rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


class TextStream(io.StringIO):
    """A text stream standing in for stderr, a terminal or not (a log file)."""

    def __init__(self, terminal: bool) -> None:
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


# --------------------------------------------------------------------------------------------
# Error measures (all norm-wise, stated in every test that uses them)
# --------------------------------------------------------------------------------------------
def rel_err(got, ref) -> float:
    """Whole-array norm-wise relative error ||got - ref||_F / ||ref||_F (absolute if ref == 0)."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != reference shape {ref.shape}"
    den = np.linalg.norm(ref)
    num = np.linalg.norm(got - ref)
    return float(num / den) if den > 0 else float(num)


def row_rel_err(got, ref) -> float:
    """Worst per-row norm-wise relative error max_i ||got_i - ref_i|| / ||ref_i||.

    Rows are along the first axis (one sample, one set, one column of a transposed result); for
    a 1-D array every entry is a row (per-sample vectors: leverage, r, a, 1/(1-h)).  A reference
    row that is exactly zero (a sample of weight 0) must be matched by a zero row: its error is
    the absolute norm of ``got_i``.
    """
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"shape {got.shape} != reference shape {ref.shape}"
    if ref.ndim == 1:
        got = got[:, None]
        ref = ref[:, None]
    got = got.reshape(got.shape[0], -1)
    ref = ref.reshape(ref.shape[0], -1)
    num = np.linalg.norm(got - ref, axis=1)
    den = np.linalg.norm(ref, axis=1)
    err = np.where(den > 0, num / np.where(den > 0, den, 1.0), num)
    return float(err.max()) if err.size else 0.0


def close_to_scale(got, ref, tol):
    """Assert |got - ref| <= tol * max(1, max |ref|) entry-wise (a tolerance relative to the
    answer's scale: for paths that compute the same quantity in another order)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"shape {got.shape} != reference shape {ref.shape}"
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * scale)


def assert_close(got, ref, tol, what, seed=None, rowwise=True, per=None):
    """Assert a relative error of at most ``tol``.

    ``per="row"`` (the default, also ``rowwise=True``): row_rel_err, i.e. per row of a 2-D array
    and per entry of a 1-D per-sample vector.  ``per="whole"`` (also ``rowwise=False``):
    norm-wise over the whole array; use it for a single parameter vector (p,), a score vector
    or a matrix, whose individual entries may be near zero by cancellation.
    """
    if per is None:
        per = "row" if rowwise else "whole"
    got = np.asarray(got)
    assert np.all(np.isfinite(got)), f"{what}: non-finite values (seed={seed})"
    if per == "row":
        err, kind = row_rel_err(got, ref), ("per-entry" if got.ndim == 1 else "per-row")
    elif per == "whole":
        err, kind = rel_err(got, ref), "norm-wise"
    else:
        raise AssertionError(f"unknown measure {per!r}")
    assert err <= tol, f"{what}: {kind} relative error {err:.3e} > {tol:.1e} (seed={seed})"
    return err


# --------------------------------------------------------------------------------------------
# Independent float64 reference
# --------------------------------------------------------------------------------------------
def tree_snapshot(folder) -> dict:
    """Every file under folder (relative path: its bytes) and every folder (relative path:
    None): what a refused or failed write must leave as it was."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), folder)] = None
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = Path(path).read_bytes()
    return out


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def design(X, fit_intercept):
    """Xt: X as float64, with a column of ones appended LAST when fit_intercept."""
    X = np.asarray(X, dtype=np.float64)
    if fit_intercept:
        return np.hstack([X, np.ones((X.shape[0], 1))])
    return X.copy()


def penalty_diag(p, fit_intercept):
    """Diagonal of P: 1 on coefficients, 0 on the (last) intercept entry."""
    P = np.ones(p)
    if fit_intercept:
        P[-1] = 0.0
    return P


def derivatives(family, y, z, w):
    """(r, a) of DESIGN.md's table, sample weights included."""
    y = np.asarray(y, dtype=np.float64)
    if family == "logistic":
        s = sigmoid(z)
        return w * (s - y), w * s * (1.0 - s)
    if family == "squared":
        return w * (z - y), w * np.ones_like(z)
    if family == "poisson":
        ez = np.exp(z)
        return w * (ez - y), w * ez
    raise AssertionError(f"unknown family {family}")


def losses(family, y, z):
    """Per-sample loss(y_i, z_i), unweighted."""
    y = np.asarray(y, dtype=np.float64)
    if family == "logistic":
        return np.logaddexp(0.0, z) - y * z
    if family == "squared":
        return 0.5 * (z - y) ** 2
    if family == "poisson":
        return np.exp(z) - y * z
    raise AssertionError(f"unknown family {family}")


def objective(X, y, theta, *, l2=0.0, family="logistic", sample_weight=None, fit_intercept=False):
    Xt = design(X, fit_intercept)
    w = np.ones(Xt.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    theta = np.asarray(theta, dtype=np.float64)
    z = Xt @ theta
    P = penalty_diag(Xt.shape[1], fit_intercept)
    return float(np.sum(w * losses(family, y, z)) + 0.5 * l2 * np.sum(P * theta**2))


def gradient(X, y, theta, *, l2=0.0, family="logistic", sample_weight=None, fit_intercept=False):
    """grad F(theta) = Xt^T r + l2 P theta."""
    Xt = design(X, fit_intercept)
    w = np.ones(Xt.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    theta = np.asarray(theta, dtype=np.float64)
    r, _ = derivatives(family, y, Xt @ theta, w)
    return Xt.T @ r + l2 * penalty_diag(Xt.shape[1], fit_intercept) * theta


def hessian(X, y, theta, *, l2=0.0, family="logistic", sample_weight=None, fit_intercept=False):
    Xt = design(X, fit_intercept)
    w = np.ones(Xt.shape[0]) if sample_weight is None else np.asarray(sample_weight, float)
    _, a = derivatives(family, y, Xt @ np.asarray(theta, float), w)
    return Xt.T @ (a[:, None] * Xt) + l2 * np.diag(penalty_diag(Xt.shape[1], fit_intercept))


class Reference:
    """Every quantity of the spec, computed densely in float64 with an explicit inverse."""

    def __init__(self, X, y, theta, *, l2=0.0, family="logistic", sample_weight=None,
                 fit_intercept=False):
        self.family = family
        self.l2 = float(l2)
        self.fit_intercept = bool(fit_intercept)
        self.Xt = design(X, fit_intercept)
        self.n, self.p = self.Xt.shape
        self.d = self.p - int(self.fit_intercept)
        self.y = np.asarray(y, dtype=np.float64)
        self.w = (np.ones(self.n) if sample_weight is None
                  else np.asarray(sample_weight, dtype=np.float64))
        self.theta = np.asarray(theta, dtype=np.float64).copy()
        self.z = self.Xt @ self.theta
        self.r, self.a = derivatives(family, self.y, self.z, self.w)
        self.P = penalty_diag(self.p, self.fit_intercept)
        self.H = self.Xt.T @ (self.a[:, None] * self.Xt) + self.l2 * np.diag(self.P)
        Hinv = np.linalg.inv(self.H)
        self.Hinv = 0.5 * (Hinv + Hinv.T)
        self.G = self.r[:, None] * self.Xt                     # rows g_i = r_i xt_i
        self.IF = self.G @ self.Hinv                           # rows H^{-1} g_i (H^{-1} symmetric)
        self.h = self.a * np.einsum("ij,jk,ik->i", self.Xt, self.Hinv, self.Xt)
        with np.errstate(divide="ignore"):  # h_i == 1 exactly gives inf, as the spec says
            self.rescale = 1.0 / (1.0 - self.h)
        self.RIF = self.IF * self.rescale[:, None]
        self.grad = self.Xt.T @ self.r + self.l2 * self.P * self.theta

    # group estimates -------------------------------------------------------------------------
    def H_minus(self, T):
        T = np.asarray(T, dtype=np.intp)
        XT = self.Xt[T]
        return self.H - XT.T @ (self.a[T, None] * XT)

    def ns(self, T):
        """Newton step of removing T: direct solve with H_{-T} (no Woodbury)."""
        T = np.asarray(T, dtype=np.intp)
        return np.linalg.solve(self.H_minus(T), self.G[T].sum(axis=0))

    def group_if(self, T):
        return self.IF[np.asarray(T, dtype=np.intp)].sum(axis=0)

    def group_rif(self, T):
        return self.RIF[np.asarray(T, dtype=np.intp)].sum(axis=0)

    def solve(self, v):
        return self.Hinv @ np.asarray(v, dtype=np.float64)

    def scores(self, direction, method="rif"):
        est = self.RIF if method == "rif" else self.IF
        return est @ np.asarray(direction, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Independent fitter: damped Newton in NumPy
# --------------------------------------------------------------------------------------------
def newton_fit(X, y, *, l2=0.0, family="logistic", sample_weight=None, fit_intercept=False,
               theta0=None, rtol=1e-13, max_iter=200):
    """argmin F by Newton with Armijo backtracking, to ||grad F|| <= rtol * max(1, ||grad F(0)||).

    Returns (theta, final gradient norm).  Independent of the package (explicit dense solves).
    """
    kw = dict(l2=l2, family=family, sample_weight=sample_weight, fit_intercept=fit_intercept)
    Xt = design(X, fit_intercept)
    p = Xt.shape[1]
    theta = np.zeros(p) if theta0 is None else np.asarray(theta0, dtype=np.float64).copy()
    g0 = np.linalg.norm(gradient(X, y, np.zeros(p), **kw))
    target = rtol * max(1.0, g0)
    g = gradient(X, y, theta, **kw)
    for _ in range(max_iter):
        gn = np.linalg.norm(g)
        if gn <= target:
            break
        step = np.linalg.solve(hessian(X, y, theta, **kw), g)
        if gn <= 1e-6 * max(1.0, g0):
            # inside the quadratic region the objective is flat to rounding: take full steps
            theta = theta - step
        else:
            f = objective(X, y, theta, **kw)
            slope = float(g @ step)
            t = 1.0
            while t > 1e-12:
                cand = theta - t * step
                if objective(X, y, cand, **kw) <= f - 1e-4 * t * slope:
                    break
                t *= 0.5
            theta = theta - t * step
        g = gradient(X, y, theta, **kw)
    return theta, float(np.linalg.norm(gradient(X, y, theta, **kw)))


# --------------------------------------------------------------------------------------------
# Random problems
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Problem:
    X: np.ndarray
    y: np.ndarray
    theta: np.ndarray
    kw: dict  # keyword arguments shared by the reference and rif_native (l2, family, ...)
    seed: int | None = None

    @property
    def ref(self) -> Reference:
        if not hasattr(self, "_ref"):
            self._ref = Reference(self.X, self.y, self.theta, **self.kw)
        return self._ref

    @property
    def p(self) -> int:
        return self.theta.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[0]


def make_problem(rng, family="logistic", n=60, d=8, *, fit_intercept=False, weighted=False,
                 l2=1.0, fitted=False, seed=None) -> Problem:
    """A random GLM problem with moderate linear predictors (|z| of order 1).

    theta is either a perturbation of the generating parameters (any theta is valid for the
    attribution formulas) or, with ``fitted=True``, the reference Newton optimum.
    """
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    beta = rng.standard_normal(d)
    b0 = 0.3 if fit_intercept else 0.0
    z = X @ beta + b0
    if family == "logistic":
        y = (rng.random(n) < sigmoid(z)).astype(np.float64)
    elif family == "squared":
        y = z + 0.5 * rng.standard_normal(n)
    elif family == "poisson":
        y = rng.poisson(np.exp(np.clip(z, -3, 3))).astype(np.float64)
    else:
        raise AssertionError(family)
    w = None
    if weighted:
        w = rng.uniform(0.25, 3.0, n)
        w[rng.integers(n)] = 0.0  # a sample with zero weight is allowed
    kw = dict(l2=float(l2), family=family, sample_weight=w, fit_intercept=fit_intercept)
    if fitted:
        theta, _ = newton_fit(X, y, **kw)
    else:
        theta = beta + 0.1 * rng.standard_normal(d)
        if fit_intercept:
            theta = np.append(theta, b0 + 0.1 * rng.standard_normal())
    return Problem(X=X, y=y, theta=theta, kw=kw, seed=seed)


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------
def _standardise(X):
    X = np.asarray(X, dtype=np.float64)
    sd = X.std(axis=0)
    keep = sd > 0
    X = X[:, keep]
    return (X - X.mean(axis=0)) / X.std(axis=0)


def load_arrhythmia():
    """UCI arrhythmia: n = 452, '?' imputed by column medians, constant columns dropped,
    standardised; label 1 for class 1 (normal) and 0 for classes 2-16."""
    path = DATA_DIR / "arrhythmia" / "arrhythmia.data"
    if not path.is_file():
        pytest.skip(f"real dataset not found at {path} (needs ../shared/data/arrhythmia)")
    raw = np.genfromtxt(path, delimiter=",", missing_values="?", filling_values=np.nan)
    assert raw.shape == (452, 280), raw.shape
    X, cls = raw[:, :-1], raw[:, -1]
    med = np.nanmedian(X, axis=0)
    med = np.where(np.isnan(med), 0.0, med)
    X = np.where(np.isnan(X), med[None, :], X)
    X = _standardise(X)
    y = (cls == 1).astype(np.float64)
    return X, y


def load_madelon():
    """NIPS-2003 MADELON training split: 2000 x 500 integer features, standardised; y in {0,1}."""
    base = DATA_DIR / "madelon"
    data, labels = base / "madelon_train.data", base / "madelon_train.labels"
    if not (data.is_file() and labels.is_file()):
        pytest.skip(f"real dataset not found at {base} (needs ../shared/data/madelon)")
    X = _standardise(np.loadtxt(data))
    y = (np.loadtxt(labels) > 0).astype(np.float64)
    assert X.shape[0] == 2000 and y.shape == (2000,)
    return X, y


@pytest.fixture(scope="session")
def arrhythmia():
    return load_arrhythmia()


@pytest.fixture(scope="session")
def madelon():
    return load_madelon()


def logistic_refit(X, y, w, l2=0.0):
    """argmin sum_i w_i logloss_i + l2/2 ||beta||^2 for [X, 1] (intercept last, unpenalised),
    by float64 Newton to ||grad|| < 1e-12: an exact refit independent of rif_native."""
    Z = np.column_stack([X, np.ones(len(X))])
    pen = np.r_[np.full(X.shape[1], l2), 0.0]
    theta = np.zeros(Z.shape[1])
    for _ in range(200):
        s = 1 / (1 + np.exp(-(Z @ theta)))
        g = Z.T @ (w * (s - y)) + pen * theta
        if np.linalg.norm(g) < 1e-12:
            break
        H = (Z * (w * s * (1 - s))[:, None]).T @ Z + np.diag(pen)
        theta -= np.linalg.solve(H, g)
    return theta


@pytest.fixture(scope="module")
def client():
    """A distributed LocalCluster (2 worker processes, one thread each) and its Client, per
    test module."""
    import warnings

    distributed = pytest.importorskip("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cluster's own start-up notes
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=50)
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()
