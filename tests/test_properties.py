"""Property-based tests (hypothesis) of every public entry point and of the private ``_core``
bindings.

Properties (the reliability issue):

* valid inputs give finite results equal to the float64 NumPy reference ``Ref`` below (written
  here from DESIGN.md section 2: ``H = Xt^T diag(a) Xt + l2 P`` solved by LU, leverage
  ``a_i x_i^T H^{-1} x_i``, ``IF_i = H^{-1} r_i x_i``, ``RIF = IF / (1 - h)``,
  ``NS_T = H_{-T}^{-1} sum_T g_i``, fit and retrain by damped Newton in NumPy);
* invalid inputs raise ValueError or TypeError (numpy.linalg.LinAlgError, i.e.
  NotPositiveDefiniteError, for a Hessian that is singular by construction) whose message is one
  line, shorter than 300 characters and names the argument; never SystemError, never a crash;
* inputs are never modified, not even by a call that raises;
* float32 / float64 / Fortran-order / strided / list inputs give the same results; 1 and 2
  threads agree; two Python threads sharing one Attribution get the results of sequential calls.

Tolerances are relative and scale with the conditioning: ``kappa`` is the condition number of the
Jacobi-scaled Hessian (diag(H)^-1/2 H diag(H)^-1/2, which governs Cholesky's accuracy) and
``amp = max 1/(1 - h_i)``. Generated data are well conditioned by construction (Gaussian rows,
``l2 >= 1e-3`` times the data scale squared, or ``l2 = 0`` with at least 4p + 4 samples of positive
weight), and every verdict that depends on singularity is decided structurally (duplicate or zero
columns, a feature carried by one sample, all-zero weights), never by a borderline value. X is
always exactly representable in float32 and scaled by powers of two, so float32 and float64
inputs, and scaled copies, hold the same numbers.

Profiles: ``HYPOTHESIS_PROFILE=ci`` (default: derandomized, no example database, bounded example
counts, about a minute on 2 cores) or ``long`` (random seeds, ``RIF_PROPS_SCALE`` x more examples,
default 20); ``tests/fuzz/run_long.py`` drives the long run (>= 100,000 calls) in subprocess
batches. ``RIF_PROPS_SURVEY=1`` records every distinct failure with its first example and goes
on (printed at the end) instead of stopping at the first; ``RIF_PROPS_SHRINK=0`` skips shrinking.
Groups that can crash or hang the interpreter on a defective build (the ``_core`` bindings fed
arbitrary Python objects, huge ``num_threads``, unattainable tolerances) run in a subprocess
(``tests/fuzz/isolated.py``), so that a segfault or a hang fails one test, naming the example,
instead of killing the session. Every call into the package is counted; the count is
printed at the end of the module (and appended to ``$RIF_PROPS_COUNT_FILE`` when set).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis.errors import HypothesisException
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import rif_native as rn
from rif_native import _core

# ----------------------------------------------------------------------------------------------
# Profiles, the call counter and the crash journal
# ----------------------------------------------------------------------------------------------
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_COMMON = dict(database=None, deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
if os.environ.get("RIF_PROPS_SHRINK", "1") == "0":  # report first examples, do not minimise
    from hypothesis import Phase
    _COMMON["phases"] = [Phase.explicit, Phase.reuse, Phase.generate]
settings.register_profile("ci", derandomize=True, **_COMMON)
settings.register_profile("long", derandomize=False, **_COMMON)
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"HYPOTHESIS_PROFILE must be 'ci' or 'long', got {PROFILE!r}")
SCALE = float(os.environ.get("RIF_PROPS_SCALE", "20" if PROFILE == "long" else "1"))


def examples(n: int) -> settings:
    """The active profile with n examples (times the profile's scale)."""
    return settings(parent=settings.get_profile(PROFILE), max_examples=max(1, round(n * SCALE)))


class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n = 0

    def add(self, k: int = 1) -> None:
        with self._lock:
            self.n += k


CALLS = _Counter()
_COUNT_FILE = os.environ.get("RIF_PROPS_COUNT_FILE")
_JOURNAL = os.environ.get("RIF_PROPS_JOURNAL")


def call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call into the package, counted."""
    CALLS.add()
    return fn(*args, **kwargs)


_LAST = {"example": "(none)"}


def journal(label: str, what: Any) -> None:
    """Record the example about to run (read back when a subprocess dies or hangs)."""
    text = f"{label}: {what!r}"
    _LAST["example"] = text
    if currently_in_test_context():
        note(text)
    if _JOURNAL:
        with open(_JOURNAL, "w") as f:
            f.write(text + "\n")


# Survey mode (RIF_PROPS_SURVEY=1, the long run's default): a failing example is recorded under a
# key (the property and its message with the numbers masked) and the search goes on, so that one
# run lists every distinct failure with its first example instead of stopping at the first.
SURVEY = os.environ.get("RIF_PROPS_SURVEY") == "1"
_FINDINGS_FILE = os.environ.get("RIF_PROPS_FINDINGS")
_IN_CHILD = os.environ.get("RIF_PROPS_CHILD") == "1"
FINDING = "rif-props-finding"
FINDINGS: dict = {}
_FINDINGS_LOCK = threading.Lock()


def _finding_key(name: str, exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    masked = re.sub(r"(?<![A-Za-z_])[-+]?(\d+\.?\d*(e[-+]?\d+)?|nan|inf)(?![A-Za-z_])", "#",
                    first)
    return f"{name}: {type(exc).__name__}: {masked[:200]}"


def record(name: str, exc: BaseException) -> None:
    key = _finding_key(name, exc)
    with _FINDINGS_LOCK:
        new = key not in FINDINGS
        entry = FINDINGS.setdefault(key, {"count": 0, "message": str(exc)[:600],
                                          "example": _LAST["example"]})
        entry["count"] += 1
        if new and _FINDINGS_FILE:  # at once: a later crash of this process must not lose it
            with open(_FINDINGS_FILE, "a") as f:
                f.write(json.dumps(dict(entry, key=key)) + "\n")
        if new and _IN_CHILD:  # the parent (test_isolated) merges these
            print(f"{FINDING} {json.dumps(dict(entry, key=key))}", flush=True)


def surveyed(fn: Callable) -> Callable:
    """In survey mode, record failures of the property instead of raising them."""
    if not SURVEY:
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HypothesisException:
            raise
        except Exception as exc:
            record(fn.__name__, exc)

    return wrapper


def findings_report() -> str:
    lines = [f"{len(FINDINGS)} distinct failures:"] if FINDINGS else []
    for key, e in sorted(FINDINGS.items()):
        lines += [f"* {key}  [x{e['count']}]", f"    first example: {e['example']}",
                  f"    message: {e['message'][:300]!r}"]
    return "\n".join(lines)


@atexit.register
def _write_count() -> None:
    if _COUNT_FILE and CALLS.n:
        with open(_COUNT_FILE, "a") as f:
            f.write(f"{CALLS.n}\n")
    if _FINDINGS_FILE and FINDINGS:  # final counts
        with open(_FINDINGS_FILE, "a") as f:
            for key, e in FINDINGS.items():
                if e["count"] > 1:
                    f.write(json.dumps(dict(e, key=key)) + "\n")


@pytest.fixture(scope="module", autouse=True)
def _report_calls(request):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is not None and capman is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line(f"\nrif_native properties ({PROFILE} profile): {CALLS.n} calls into "
                          "the package")
            if SURVEY:
                tr.write_line(findings_report() or "survey: no failures")


# ----------------------------------------------------------------------------------------------
# The NumPy reference (float64, LU solves: no code path shared with the package)
# ----------------------------------------------------------------------------------------------
FAMILIES = ("logistic", "squared", "poisson")
EPS = np.finfo(np.float64).eps
TINY = 1e-320  # absolute floor: rows that are exactly zero must be (sub)normal zeros


def sigmoid(z: np.ndarray) -> np.ndarray:
    ez = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + ez), ez / (1.0 + ez))


def derivs(family: str, y: np.ndarray, z: np.ndarray, w: np.ndarray):
    """(r, a) of DESIGN.md's table, weights included; logistic r without cancellation."""
    if family == "logistic":
        return w * np.where(y == 1, -sigmoid(-z), sigmoid(z)), w * sigmoid(z) * sigmoid(-z)
    if family == "squared":
        return w * (z - y), w.copy()
    ez = np.exp(z)
    return w * (ez - y), w * ez


def loss_sum(family: str, y, z, w) -> float:
    if family == "logistic":
        per = np.logaddexp(0.0, z) - y * z
    elif family == "squared":
        per = 0.5 * (z - y) ** 2
    else:
        per = np.exp(z) - y * z
    return float(np.sum(np.where(w > 0, w * per, 0.0)))


def norm(a, axis=None):
    """Euclidean / Frobenius norm without overflow or underflow of the squares."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return np.zeros(np.delete(a.shape, axis)) if axis is not None else 0.0
    m = np.max(np.abs(a), axis=axis, keepdims=True)
    m = np.where((m > 0) & np.isfinite(m), m, 1.0)
    out = np.sqrt(np.sum((a / m) ** 2, axis=axis, keepdims=True)) * m
    return out.reshape(np.delete(a.shape, axis)) if axis is not None else float(out.ravel()[0])


def jacobi_cond(H: np.ndarray) -> float:
    dg = np.diag(H)
    if not np.all(dg > 0):
        return math.inf
    s = 1.0 / np.sqrt(dg)
    return float(np.linalg.cond(H * s[:, None] * s[None, :]))


class Ref:
    """Every quantity of DESIGN.md section 2 for one problem, densely in float64."""

    def __init__(self, X, y, theta, l2, family, w, fit_intercept):
        X = np.asarray(X, dtype=np.float64)
        self.n, self.d = X.shape
        self.fi = bool(fit_intercept)
        self.Xt = np.hstack([X, np.ones((self.n, 1))]) if self.fi else X.copy()
        self.p = self.Xt.shape[1]
        self.family, self.l2 = family, float(l2)
        self.y = np.asarray(y, dtype=np.float64)
        self.w = np.ones(self.n) if w is None else np.asarray(w, dtype=np.float64)
        self.P = np.ones(self.p)
        if self.fi:
            self.P[-1] = 0.0
        self.theta = np.asarray(theta, dtype=np.float64)
        self.z = self.Xt @ self.theta
        self.r, self.a = derivs(family, self.y, self.z, self.w)
        self.H = self.Xt.T @ (self.a[:, None] * self.Xt) + np.diag(self.l2 * self.P)
        self.kappa = jacobi_cond(self.H)
        self.HiX = np.linalg.solve(self.H, self.Xt.T)  # p x n: H^{-1} x_i
        # h_i = a_i ||L^{-1} x_i||^2 in Jacobi-scaled coordinates (accurate to eps * kappa)
        dinv = 1.0 / np.sqrt(np.diag(self.H))
        Ls = np.linalg.cholesky(self.H * dinv[:, None] * dinv[None, :])
        Zs = np.linalg.solve(Ls, (self.Xt * dinv[None, :]).T) if self.n else np.zeros((self.p, 0))
        self.h = self.a * np.sum(Zs**2, axis=0)
        with np.errstate(divide="ignore"):  # h = 1 (structurally singular removal) gives inf
            self.rescale = 1.0 / (1.0 - self.h)
        self.amp = float(np.max(self.rescale)) if self.n else 1.0
        self.IF = self.r[:, None] * self.HiX.T
        with np.errstate(invalid="ignore"):
            self.RIF = self.IF * self.rescale[:, None]
        self.RIF[np.isinf(self.rescale)] = np.inf  # DESIGN.md: a singular removal's RIF is inf
        self.grad = self.Xt.T @ self.r + self.l2 * self.P * self.theta
        # per-row magnitudes that bound rounding in sums over samples and in scores
        self.xnorm = norm(self.Xt, axis=1)
        # r_i may cancel (z_i close to y_i): its rounding is relative to the terms, not to r_i
        zmag = np.abs(self.Xt) @ np.abs(self.theta)
        terms = {"squared": zmag + np.abs(self.y), "logistic": np.ones(self.n),
                 "poisson": np.exp(self.z) * (1.0 + zmag) + np.abs(self.y)}[family]
        self.rmag = np.abs(self.r) + 1e-2 * self.w * terms
        self.if_scale = self.rmag * norm(self.HiX.T, axis=1)  # for IF_i = r_i H^{-1} x_i
        with np.errstate(invalid="ignore"):
            self.rif_scale = self.if_scale * self.rescale

    def tol(self, extra: float = 1.0) -> float:
        """Relative tolerance for quantities computed from the factor of H."""
        return 1e-12 + 1e3 * EPS * self.kappa * self.amp * extra

    def score_scale(self, V, rescaled: bool) -> np.ndarray:
        """Per sample, the magnitude that rounding in a score r_i x_i^T H^{-1} v / (1 - h_i) is
        measured against: |r_i| ||x_i|| ||H^{-1} V|| / (1 - h_i) (x_i . u cancels, and u = H^{-1}
        v carries a relative error of eps * kappa; r_i is taken as rmag); it bounds ||est_i|| ||V||.
        """
        u = norm(np.linalg.solve(self.H, np.asarray(V, dtype=np.float64)))
        s = self.rmag * self.xnorm * u
        s = np.maximum(s, self.if_scale * norm(V))
        return s * (self.rescale if rescaled else 1.0)

    def H_minus(self, T) -> np.ndarray:
        T = np.asarray(T, dtype=np.intp)
        return self.H - self.Xt[T].T @ (self.a[T, None] * self.Xt[T])

    def ns(self, T) -> np.ndarray:
        T = np.asarray(T, dtype=np.intp)
        return np.linalg.solve(self.H_minus(T), (self.r[T, None] * self.Xt[T]).sum(axis=0))

    def group(self, T, method: str) -> np.ndarray:
        T = np.asarray(T, dtype=np.intp)
        if method == "ns":
            return self.ns(T)
        return (self.RIF if method == "rif" else self.IF)[T].sum(axis=0)

    def group_scale(self, T, method: str) -> float:
        """A magnitude that rounding errors of the set's estimate are measured against."""
        T = np.asarray(T, dtype=np.intp)
        est = self.rif_scale if method == "rif" else self.if_scale
        s = float(est[T].sum()) if len(T) else 0.0
        if method == "ns" and len(T):
            s = max(s, float(norm(self.ns(T))))
        return s

    def objective(self, theta, w) -> float:
        z = self.Xt @ theta
        return loss_sum(self.family, self.y, z, w) + 0.5 * self.l2 * float(self.P @ theta**2)

    def gradient(self, theta, w) -> np.ndarray:
        r, _ = derivs(self.family, self.y, self.Xt @ theta, w)
        return self.Xt.T @ r + self.l2 * self.P * theta

    def hessian_at(self, theta, w) -> np.ndarray:
        _, a = derivs(self.family, self.y, self.Xt @ theta, w)
        return self.Xt.T @ (a[:, None] * self.Xt) + np.diag(self.l2 * self.P)

    def newton(self, theta0, w, rtol=1e-14, max_iter=200) -> np.ndarray:
        """argmin sum_i w_i loss_i + l2/2 ||theta||_P^2 by damped Newton (Armijo)."""
        theta = np.asarray(theta0, dtype=np.float64).copy()
        g0 = norm(self.gradient(np.zeros(self.p), w))
        g = self.gradient(theta, w)
        for _ in range(max_iter):
            gn = norm(g)
            if gn <= rtol * max(1.0, g0):
                break
            step = np.linalg.solve(self.hessian_at(theta, w), g)
            t = 1.0
            if gn > 1e-6 * max(1.0, g0):
                f, slope = self.objective(theta, w), float(g @ step)
                while t > 1e-12 and self.objective(theta - t * step, w) > f - 1e-4 * t * slope:
                    t *= 0.5
            theta = theta - t * step
            g = self.gradient(theta, w)
        return theta


# ----------------------------------------------------------------------------------------------
# Random problems: a compact, reproducible description drawn by hypothesis, data from its seed
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Spec:
    family: str
    n: int
    d: int
    fit_intercept: bool
    regime: str          # "ridge": l2 > 0; "ols": l2 = 0 with >= 4p + 4 positive weights
    weights: str         # "none", "real" (some exact zeros), "int" (some zeros), "zero" (all 0)
    l2_exp: float        # ridge: l2 = 10**l2_exp * scale**2
    scale_exp: int       # X scaled by 2**scale_exp (exactly)
    seed: int

    @property
    def p(self) -> int:
        return self.d + int(self.fit_intercept)

    def build(self) -> "Case":
        rng = np.random.default_rng(self.seed)
        n, d, p, fi = self.n, self.d, self.p, self.fit_intercept
        scale = 2.0 ** self.scale_exp
        X = (rng.standard_normal((n, d)) / math.sqrt(max(d, 1))).astype(np.float32)
        X = X.astype(np.float64) * scale
        theta = 0.8 * rng.standard_normal(p)
        theta[:d] /= scale
        unit = np.r_[np.full(d, 1 / scale), np.ones(int(fi))]
        truth = theta + 0.3 * rng.standard_normal(p) * unit
        z = X @ truth[:d] + (truth[d] if fi else 0.0)
        if self.family == "logistic":
            y = (rng.random(n) < sigmoid(z)).astype(np.float64)
        elif self.family == "squared":
            y = z + 0.5 * rng.standard_normal(n)
        else:
            y = rng.poisson(np.exp(np.clip(z, -3, 3))).astype(np.float64)
        w = None
        if self.weights == "zero":
            w = np.zeros(n)
        elif self.weights in ("real", "int"):
            w = (rng.uniform(0.1, 3.0, n) if self.weights == "real"
                 else rng.integers(1, 4, n).astype(np.float64))
            need = 4 * p + 4 if self.regime == "ols" else (2 if fi else 0)
            zeros = rng.permutation(n)[: max(0, min(n - need, rng.integers(0, n // 3 + 1)))]
            w[zeros] = 0.0
        l2 = 0.0 if self.regime == "ols" else 10.0 ** self.l2_exp * scale**2
        return Case(self, X, y, theta, w, l2)


@dataclasses.dataclass(eq=False, repr=False)
class Case:
    spec: Spec
    X: np.ndarray
    y: np.ndarray
    theta: np.ndarray
    w: Optional[np.ndarray]
    l2: float

    def __repr__(self) -> str:
        return f"Case({self.spec})"

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def p(self) -> int:
        return self.theta.shape[0]

    @property
    def kw(self) -> dict:
        return dict(l2=self.l2, family=self.spec.family, sample_weight=self.w,
                    fit_intercept=self.spec.fit_intercept)

    @property
    def ref(self) -> Ref:
        if not hasattr(self, "_ref"):
            self._ref = Ref(self.X, self.y, self.theta, self.l2, self.spec.family, self.w,
                            self.spec.fit_intercept)
        return self._ref

    @property
    def positive(self) -> np.ndarray:
        return np.arange(self.n) if self.w is None else np.flatnonzero(self.w > 0)


@st.composite
def specs(draw, *, regimes=("ridge", "ols"), families=FAMILIES, intercept=None, max_n=40,
          max_d=6, min_d=0, weights=("none", "real", "int"), l2_exps=(-3.0, 3.0),
          big_l2=True) -> Spec:
    family = draw(st.sampled_from(families))
    fi = draw(st.booleans()) if intercept is None else intercept
    d = draw(st.integers(max(min_d, 0 if fi else 1), max_d))
    p = d + int(fi)
    regime = draw(st.sampled_from(regimes))
    if regime == "ols":
        n = draw(st.integers(4 * p + 4, 4 * p + 4 + max_n // 2))
    else:
        n = draw(st.integers(2 if fi else 1, max_n))
    wkind = draw(st.sampled_from(weights))
    l2_exp = draw(st.floats(*l2_exps))
    if big_l2 and regime == "ridge" and draw(st.integers(0, 9)) == 0:
        l2_exp = draw(st.floats(3.0, 290.0))  # up to l2 = 1e290: H stays finite
    return Spec(family, n, d, fi, regime, wkind, l2_exp, draw(st.integers(-6, 6)),
                draw(st.integers(0, 2**32 - 1)))


def draw_subset(data, n: int, max_size: int, label: str) -> list:
    return data.draw(st.lists(st.integers(0, max(n - 1, 0)), unique=True,
                              max_size=min(n, max_size)), label=label)


def pd_after_removal(case: Case, T) -> list:
    """T trimmed (structurally) so that H_{-T} stays positive definite and well conditioned:
    ridge without intercept keeps l2 I; with an intercept at least one positive-weight sample
    stays; l2 = 0 keeps at least 2p + 2 positive-weight (Gaussian) rows."""
    s = case.spec
    pos = set(case.positive.tolist())
    keep_pos = 0 if (s.regime == "ridge" and not s.fit_intercept) else (
        1 if s.regime == "ridge" else 2 * case.p + 2)
    out, removed = [], 0
    for i in T:
        if i in pos:
            if len(pos) - removed - 1 < keep_pos:
                continue
            removed += 1
        out.append(i)
    return out


# ----------------------------------------------------------------------------------------------
# Assertions
# ----------------------------------------------------------------------------------------------
def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(1, 1) if a.ndim == 0 else a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def close_rows(got, ref, tol: float, what: str, scale=None) -> None:
    """Per row i (first axis; entries of a 1-D array): ||got_i - ref_i|| <= tol * s_i, with
    s_i = ||ref_i|| or the given per-row magnitude."""
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.isfinite(got).all(), (
        f"{what}: non-finite entries, first at {np.argwhere(~np.isfinite(got))[0].tolist()}")
    g, r = _rows(got), _rows(ref)
    err = norm(g - r, axis=1)
    s = norm(r, axis=1) if scale is None else np.broadcast_to(
        np.asarray(scale, dtype=np.float64).reshape(-1), err.shape)
    bad = np.flatnonzero(err > tol * s + TINY)
    if len(bad):
        i = bad[0]
        raise AssertionError(f"{what}: row {i} error {err[i]:.3e} > {tol:.2e} x {s[i]:.3e} "
                             f"(got {g[i][:4]}, expected {r[i][:4]})")


def close_whole(got, ref, tol: float, what: str, scale: Optional[float] = None) -> None:
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite entries"
    err = float(norm(got - ref))
    s = float(norm(ref)) if scale is None else max(scale, float(norm(ref)))
    assert err <= tol * s + TINY, f"{what}: error {err:.3e} > {tol:.2e} x {s:.3e}"


def check_message(exc: BaseException, names: Optional[str], what: str) -> None:
    """One line, under 300 characters, naming the argument (a regex) when names is given."""
    msg = str(exc)
    assert "\n" not in msg.strip(), f"{what}: {type(exc).__name__} message is not one line " \
                                    f"({msg.count(chr(10)) + 1} lines): {msg[:200]!r}..."
    assert len(msg) < 300, f"{what}: {type(exc).__name__} message has {len(msg)} characters: " \
                           f"{msg[:200]!r}..."
    assert msg.strip(), f"{what}: empty {type(exc).__name__} message"
    if names:
        assert re.search(names, msg), f"{what}: message {msg!r} does not name {names!r}"


def expect_error(fn: Callable, types, names: Optional[str], what: str) -> BaseException:
    try:
        out = call(fn)
    except types as exc:
        check_message(exc, names, what)
        return exc
    except BaseException as exc:  # SystemError, RuntimeError, IndexError, ...
        raise AssertionError(f"{what}: raised {type(exc).__name__} ({str(exc)[:200]!r}), "
                             f"expected {types}") from exc
    raise AssertionError(f"{what}: accepted (returned {type(out).__name__}), expected {types}")


def snapshot(*objs) -> list:
    import copy
    return [copy.deepcopy(o) for o in objs]


def unchanged(before: list, objs: tuple, what: str) -> None:
    for k, (b, o) in enumerate(zip(before, objs)):
        if isinstance(o, np.ndarray):
            ok = (o.shape == b.shape and o.dtype == b.dtype
                  and np.array_equal(o, b, equal_nan=o.dtype.kind in "fc"))
        elif o is None or isinstance(o, (str, int, float, bool)):
            ok = True
        elif isinstance(o, (list, tuple, dict)):
            ok = _deep_equal(o, b)
        else:
            ok = vars(o) == vars(b) if hasattr(o, "__dict__") else True
        assert ok, f"{what}: input {k} ({type(o).__name__}) was modified"


def _deep_equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_deep_equal, a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


# ----------------------------------------------------------------------------------------------
# 1. Valid inputs: every public query equals the reference
# ----------------------------------------------------------------------------------------------
def _sets_arg(data, case: Case, label: str):
    """(sets argument, list of index lists, single) in one of the accepted representations."""
    n = case.n
    form = data.draw(st.sampled_from(["single", "lists", "arrays", "mask", "2d", "empty-list"]),
                     label=f"{label} form")
    if form == "empty-list":
        return [], [], False
    if form in ("single", "mask"):
        T = pd_after_removal(case, draw_subset(data, n, 12, label))
        if form == "mask":
            m = np.zeros(n, dtype=bool)
            m[T] = True
            return m, [sorted(T)], True
        if not T:  # [] is "no sets"; one empty set is an empty array
            return np.array([], dtype=np.int64), [[]], True
        return list(T), [T], True
    k = data.draw(st.integers(1, 4), label=f"{label} count")
    if form == "2d":
        size = data.draw(st.integers(0, min(n, 6)), label=f"{label} size")
        rows = []
        for _ in range(k):
            T = pd_after_removal(case, draw_subset(data, n, size, label))
            rows.append(T)
        size = min(len(T) for T in rows)
        rows = [T[:size] for T in rows]
        return np.array(rows, dtype=np.int64).reshape(k, size), rows, False
    sets = [pd_after_removal(case, draw_subset(data, n, 12, label)) for _ in range(k)]
    arg = sets if form == "lists" else [np.array(T, dtype=np.int32) for T in sets]
    return arg, sets, False


def _directions(data, case: Case, label: str):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label=f"{label} seed"))
    m = data.draw(st.sampled_from([None, 1, 2, 3]), label=f"{label} columns")
    V = rng.standard_normal(case.p if m is None else (case.p, m))
    return V


def check_attribution(A, case: Case, data, label: str) -> None:
    """Every query of an Attribution built from `case`, against the reference."""
    R = case.ref
    tol = R.tol()
    close_rows(A.leverage, R.h, tol, f"{label} leverage")
    close_rows(A.rescale, R.rescale, tol, f"{label} rescale")
    rscale = R.w * (np.abs(R.z) + np.abs(R.y) + 1.0)
    if R.family == "poisson":
        rscale = rscale * (np.exp(R.z) + 1.0)
    close_rows(A.residuals, R.r, 1e-12, f"{label} residuals", scale=rscale)
    close_rows(A.curvature, R.a, 1e-12, f"{label} curvature")
    close_whole(A.theta, R.theta, 0.0, f"{label} theta")
    gscale = float(np.abs(R.r) @ R.xnorm + R.l2 * norm(R.theta))
    assert abs(A.gradient_norm - norm(R.grad)) <= 1e-12 * gscale + TINY, \
        f"{label} gradient_norm {A.gradient_norm} vs {norm(R.grad)}"
    close_whole(A.hessian(), R.H, 1e-13 * (R.n + 1), f"{label} hessian")
    assert set(A.timings) >= {"hessian", "cholesky", "leverage"}
    V = _directions(data, case, "solve v")
    close_whole(A.solve(V), np.linalg.solve(R.H, V), tol, f"{label} solve")
    idx = data.draw(st.one_of(st.none(), st.lists(st.integers(0, case.n - 1), unique=True,
                                                  max_size=min(case.n, 8))), label="indices")
    sel = np.arange(case.n) if idx is None else np.asarray(idx, dtype=np.intp)
    close_rows(A.influence(idx), R.IF[sel], tol, f"{label} influence", scale=R.if_scale[sel])
    close_rows(A.rescaled_influence(idx), R.RIF[sel], tol, f"{label} rescaled_influence",
               scale=R.rif_scale[sel])
    D = _directions(data, case, "direction")
    method = data.draw(st.sampled_from(["rif", "if"]), label="scores method")
    est = R.RIF if method == "rif" else R.IF
    got = A.scores(D, method=method)
    close_rows(got, est @ D, tol, f"{label} scores({method})",
               scale=R.score_scale(D, method == "rif"))
    arg, sets, single = _sets_arg(data, case, "sets")
    for method in ("if", "rif", "ns"):
        got = A.group_effect(arg, method=method)
        ref = np.array([R.group(T, method) for T in sets]).reshape(len(sets), case.p)
        scale = [R.group_scale(T, method) for T in sets]
        ktol = tol if method != "ns" else tol * max(
            [jacobi_cond(R.H_minus(T)) for T in sets] + [1.0])
        if single:
            assert got.shape == (case.p,), f"{label} group_effect({method}) shape {got.shape}"
            got = got[None]
        close_rows(got, ref, ktol, f"{label} group_effect({method})", scale=scale)


@examples(80)
@given(spec=specs(), data=st.data())
@surveyed
def test_attribution_matches_reference(spec, data):
    case = spec.build()
    journal("attribution", case)
    nt = data.draw(st.sampled_from([None, 1, 2]), label="num_threads")
    args = (case.X, case.y, case.theta, case.w)
    before = snapshot(*args)
    A = call(rn.Attribution, case.X, case.y, case.theta, num_threads=nt, **case.kw)
    check_attribution(A, case, data, "Attribution")
    unchanged(before, args, "Attribution")
    # the one-call functions: the same numbers
    R, tol = case.ref, case.ref.tol()
    fn = data.draw(st.sampled_from(["leverage", "influence", "rescaled_influence",
                                    "newton_step"]), label="function")
    if fn == "newton_step":
        arg, sets, single = _sets_arg(data, case, "ns sets")
        got = call(rn.newton_step, case.X, case.y, case.theta, arg, num_threads=nt, **case.kw)
        ref = np.array([R.ns(T) for T in sets]).reshape(len(sets), case.p)
        kt = tol * max([jacobi_cond(R.H_minus(T)) for T in sets] + [1.0])
        close_rows(got[None] if single else got, ref, kt, "newton_step()",
                   scale=[R.group_scale(T, "ns") for T in sets])
    else:
        got = call(getattr(rn, fn), case.X, case.y, case.theta, num_threads=nt, **case.kw)
        ref = {"leverage": R.h, "influence": R.IF, "rescaled_influence": R.RIF}[fn]
        scale = {"leverage": R.h, "influence": R.if_scale, "rescaled_influence": R.rif_scale}[fn]
        close_rows(got, ref, tol, f"{fn}()", scale=scale)
    unchanged(before, args, fn)


@examples(60)
@given(spec=specs(), data=st.data())
@surveyed
def test_core_canonical_matches_reference(spec, data):
    """_core called directly with the canonical arrays (C-contiguous float64 / float32 X)."""
    case = spec.build()
    journal("core canonical", case)
    R, tol = case.ref, case.ref.tol()
    X = case.X.astype(np.float32) if data.draw(st.booleans(), label="float32") else case.X
    nt = data.draw(st.sampled_from([0, 1, 2]), label="num_threads")
    C = call(_core.Attribution, X, case.y, case.theta, case.l2, spec.family, case.w,
             spec.fit_intercept, nt)
    close_rows(C.leverage, R.h, tol, "_core leverage", scale=np.maximum(R.h, TINY))
    assert C.has_host_data and not C.rows_on_device and C.device_panels >= 0
    assert C.woodbury_limit >= 0
    close_whole(C.theta, R.theta, 0.0, "_core theta")
    idx = np.asarray(draw_subset(data, case.n, 8, "indices"), dtype=np.int64)
    for rescaled in (False, True):
        close_rows(call(C.influence_rows, idx, rescaled, nt), (R.RIF if rescaled else R.IF)[idx],
                   tol, f"_core influence_rows({rescaled})",
                   scale=(R.rif_scale if rescaled else R.if_scale)[idx])
    V = np.ascontiguousarray(_directions(data, case, "V").reshape(case.p, -1).T)  # (m, p)
    close_whole(call(C.solve, V), np.linalg.solve(R.H, V.T).T, tol, "_core solve")
    sc = call(C.scores, V, True, nt)
    close_rows(sc, R.RIF @ V.T, tol, "_core scores",
               scale=R.score_scale(V.T, True))
    _, sets, _ = _sets_arg(data, case, "sets")
    indices = np.array([i for T in sets for i in T], dtype=np.int64)
    offsets = np.r_[0, np.cumsum([len(T) for T in sets])].astype(np.int64)
    scale = [R.group_scale(T, "rif") for T in sets]
    got = call(C.group_sums, indices, offsets, True, nt)
    close_rows(got, np.array([R.group(T, "rif") for T in sets]).reshape(-1, case.p), tol,
               "_core group_sums", scale=scale)
    got, singular = call(C.newton_step, indices, offsets, nt)
    assert list(singular) == []
    kt = tol * max([jacobi_cond(R.H_minus(T)) for T in sets] + [1.0])
    close_rows(got, np.array([R.ns(T) for T in sets]).reshape(-1, case.p), kt, "_core newton_step",
               scale=[R.group_scale(T, "ns") for T in sets])


# ----------------------------------------------------------------------------------------------
# 2. Layouts and dtypes give the same results
# ----------------------------------------------------------------------------------------------
def _x_variant(X: np.ndarray, kind: str):
    n, d = X.shape
    if kind == "C64":
        return X
    if kind == "C32":
        return X.astype(np.float32)
    if kind == "F64":
        return np.asfortranarray(X)
    if kind == "F32":
        return np.asfortranarray(X.astype(np.float32))
    if kind == "rows":
        big = np.zeros((2 * n, d))
        big[::2] = X
        return big[::2]
    if kind == "cols":
        big = np.zeros((n, 2 * d))
        big[:, ::2] = X
        return big[:, ::2]
    if kind == "negative-stride":
        return X[::-1].copy()[::-1]
    if kind == "rows32":
        big = np.zeros((2 * n, d), dtype=np.float32)
        big[::2] = X
        return big[::2]
    if kind == "big-endian":
        return X.astype(">f8")
    if kind == "read-only":
        ro = X.copy()
        ro.setflags(write=False)
        return ro
    if kind == "list":
        return X.tolist()
    raise AssertionError(kind)


X_KINDS = ["C64", "C32", "F64", "F32", "rows", "cols", "negative-stride", "rows32", "big-endian",
           "read-only", "list"]


def _vec_variant(v: Optional[np.ndarray], kind: str, integral: bool):
    if v is None:
        return None
    if kind == "C64":
        return v
    if kind == "strided":
        return np.repeat(v, 2)[::2]
    if kind == "list":
        return v.tolist()
    if kind == "tuple":
        return tuple(v.tolist())
    if kind == "int" and integral:
        return v.astype(np.int64)
    if kind == "float32" and np.array_equal(v.astype(np.float32).astype(np.float64), v):
        return v.astype(np.float32)
    if kind == "read-only":
        ro = v.copy()
        ro.setflags(write=False)
        return ro
    if kind == "big-endian":
        return v.astype(">f8")
    return v


VEC_KINDS = ["C64", "strided", "list", "tuple", "int", "float32", "read-only", "big-endian"]


def _all_results(X, y, theta, w, case: Case, sets, V, nt=None) -> dict:
    kw = dict(case.kw, sample_weight=w)
    A = call(rn.Attribution, X, y, theta, num_threads=nt, **kw)
    out = {
        "leverage": A.leverage, "rescale": A.rescale, "residuals": A.residuals,
        "curvature": A.curvature, "hessian": A.hessian(), "solve": A.solve(V),
        "influence": A.influence(), "rif": A.rescaled_influence(), "scores": A.scores(V),
        "scores_if": A.scores(V, method="if"),
        "ns": A.group_effect(sets, method="ns"), "grif": A.group_effect(sets, method="rif"),
        "gif": A.group_effect(sets, method="if"),
        "leverage_fn": call(rn.leverage, X, y, theta, num_threads=nt, **kw),
        "ns_fn": call(rn.newton_step, X, y, theta, sets, num_threads=nt, **kw),
    }
    CALLS.add(13)
    return out


def _compare_results(got: dict, ref: dict, tol: float, what: str) -> None:
    for key, r in ref.items():
        r = np.asarray(r)
        close_whole(got[key], r, tol, f"{what}: {key}",
                    scale=float(norm(r)) if r.ndim else None)


@examples(40)
@given(spec=specs(regimes=("ridge",), big_l2=False), data=st.data())
@surveyed
def test_layouts_and_dtypes_agree(spec, data):
    case = spec.build()
    journal("layouts", case)
    R = case.ref
    sets = [pd_after_removal(case, draw_subset(data, case.n, 6, "set")) for _ in range(2)]
    V = _directions(data, case, "V").reshape(case.p, -1)
    ref = _all_results(case.X, case.y, case.theta, case.w, case, sets, V)
    close_rows(ref["leverage"], R.h, R.tol(), "canonical leverage", scale=np.maximum(R.h, TINY))
    xk = data.draw(st.sampled_from(X_KINDS), label="X layout")
    yk, tk, wk = (data.draw(st.sampled_from(VEC_KINDS), label=f"{a} layout")
                  for a in ("y", "theta", "w"))
    X = _x_variant(case.X, xk)
    y = _vec_variant(case.y, yk, spec.family != "squared")
    theta = _vec_variant(case.theta, tk, False)
    w = _vec_variant(case.w, wk, spec.weights == "int")
    if spec.family == "logistic" and data.draw(st.booleans(), label="bool y"):
        y = case.y.astype(bool)
    args = (X, y, theta, w)
    before = snapshot(*args)
    got = _all_results(X, y, theta, w, case, sets, V)
    unchanged(before, args, f"layout X={xk} y={yk} theta={tk} w={wk}")
    # float64 conversions are exact; float32 X is read exactly, computed in float64
    _compare_results(got, ref, 1e-13 + 50 * EPS * R.kappa * R.amp, f"X={xk} y={yk}")
    fit_kw = dict(case.kw, sample_weight=w, max_iter=50)
    if case.l2 > 0 and not has_finite_minimiser(case, _live_weights(case)):
        # an intercept over one kind of label: both fits must say there is no finite answer
        for args, kw in (((case.X, case.y), dict(case.kw, max_iter=50)),
                         ((X, y), dict(fit_kw, theta0=theta))):
            with pytest.warns(rn.ConvergenceWarning, match="no finite"):
                assert not call(rn.fit, *args, **kw).converged
        return
    f1 = call(rn.fit, case.X, case.y, **dict(case.kw, max_iter=50))
    f2 = call(rn.fit, X, y, theta0=theta, **fit_kw)
    bound = 1e-9 * max(1.0, float(norm(R.gradient(np.zeros(case.p), R.w))))
    lam = np.linalg.eigvalsh(R.hessian_at(f1.theta, R.w))[0]
    assert norm(f2.theta - f1.theta) <= 4 * bound / lam + 1e-10 * norm(
        f1.theta), f"fit with X={xk}: {f2.theta} vs {f1.theta}"


# ----------------------------------------------------------------------------------------------
# 3. Threads: 1 and 2 (and all) threads agree; two Python threads on one object
# ----------------------------------------------------------------------------------------------
@st.composite
def big_specs(draw) -> Spec:
    """Problems that span several row blocks, so that a threaded reduction really runs."""
    family = draw(st.sampled_from(FAMILIES))
    fi = draw(st.booleans())
    if draw(st.booleans()):
        d, n = draw(st.integers(1, 6)), draw(st.integers(4200, 9000))
    else:
        d, n = draw(st.integers(200, 280)), draw(st.integers(1100, 2000))
    return Spec(family, n, d, fi, "ridge", draw(st.sampled_from(["none", "real"])),
                draw(st.floats(-2, 2)), draw(st.integers(-3, 3)), draw(st.integers(0, 2**32 - 1)))


@examples(6)
@given(spec=big_specs(), data=st.data())
@surveyed
def test_one_and_two_threads_agree(spec, data):
    case = spec.build()
    journal("threads", case)
    R = case.ref
    sets = [pd_after_removal(case, draw_subset(data, case.n, k, "set"))
            for k in (1, 4, case.p // 2 + 3, 300)]
    V = _directions(data, case, "V").reshape(case.p, -1)
    one = _all_results(case.X, case.y, case.theta, case.w, case, sets, V, nt=1)
    close_rows(one["leverage"], R.h, R.tol(), "1-thread leverage vs reference",
               scale=np.maximum(R.h, TINY))
    tol = max(1e-12, 50 * EPS * R.kappa * R.amp)
    for nt in (2, None):
        _compare_results(_all_results(case.X, case.y, case.theta, case.w, case, sets, V, nt=nt),
                         one, tol, f"num_threads={nt} vs 1")
    f1 = call(rn.fit, case.X, case.y, num_threads=1, max_iter=50, **case.kw)
    f2 = call(rn.fit, case.X, case.y, num_threads=2, max_iter=50, **case.kw)
    close_whole(f2.theta, f1.theta, 1e-9, "fit with 2 threads vs 1")


@examples(12)
@given(spec=specs(regimes=("ridge",), big_l2=False, max_n=60), data=st.data())
@surveyed
def test_concurrent_calls_on_one_object(spec, data):
    """Two Python threads run the same queries on one (fresh) Attribution at once: each gets the
    results of the sequential calls."""
    case = spec.build()
    journal("concurrency", case)
    R = case.ref
    nt = data.draw(st.sampled_from([1, 2]), label="num_threads")
    sets = [pd_after_removal(case, draw_subset(data, case.n, 6, "set")) for _ in range(3)]
    V = _directions(data, case, "V").reshape(case.p, -1)
    retrain_ok = spec.regime == "ridge" and not spec.fit_intercept

    def queries(A):
        out = {"rif": A.rescaled_influence(), "if": A.influence([0]), "scores": A.scores(V),
               "ns": A.group_effect(sets, method="ns"), "grif": A.group_effect(sets),
               "solve": A.solve(V), "hessian": A.hessian(), "leverage": A.leverage}
        CALLS.add(7)
        if retrain_ok:
            out["retrain"] = A.retrain(sets[:1], max_iter=30).theta
            CALLS.add()
        return out

    seq = queries(call(rn.Attribution, case.X, case.y, case.theta, num_threads=nt, **case.kw))
    A = call(rn.Attribution, case.X, case.y, case.theta, num_threads=nt, **case.kw)
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def work(k):
        try:
            barrier.wait()
            results[k] = queries(A)
        except BaseException as exc:  # reported below
            results[k] = exc

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tol = max(1e-12, 50 * EPS * R.kappa * R.amp)
    for k, res in enumerate(results):
        if isinstance(res, BaseException):
            raise AssertionError(f"Python thread {k} raised {type(res).__name__}: {res}") from res
        _compare_results(res, seq, tol, f"Python thread {k} vs sequential")


# ----------------------------------------------------------------------------------------------
# 4. fit and retrain against Newton in NumPy
# ----------------------------------------------------------------------------------------------
def _live_weights(case: Case) -> np.ndarray:
    """The case's weights (ones where it has none)."""
    return np.ones(case.n) if case.w is None else np.asarray(case.w, dtype=np.float64)


def has_finite_minimiser(case: Case, w: np.ndarray) -> bool:
    """Structural: l2 > 0 bounds the coefficients; an unpenalised intercept also needs both labels
    (logistic) or a positive count (poisson) among the live samples; l2 = 0 only for squared
    loss with >= 4p + 4 live Gaussian rows."""
    live = w > 0
    fam = case.spec.family
    if case.l2 == 0:
        return fam == "squared" and live.sum() >= 4 * case.p + 4
    if not case.spec.fit_intercept:
        return True
    if fam == "logistic":
        return bool(np.any(case.y[live] == 0) and np.any(case.y[live] == 1))
    if fam == "poisson":
        return bool(np.any(case.y[live] > 0))
    return bool(live.any())


def minimiser_bound(R: Ref, theta_ref: np.ndarray, w: np.ndarray, grad_tol: float) -> float:
    """||theta - theta*|| for any theta whose gradient norm is <= grad_tol, to first order: the
    inverse of the smallest Hessian eigenvalue at the minimiser (strong convexity there), plus
    rounding."""
    lam = float(np.linalg.eigvalsh(R.hessian_at(theta_ref, w))[0])
    return 4.0 * grad_tol / lam + 1e-10 * float(norm(theta_ref)) + TINY


@examples(50)
@given(spec=specs(big_l2=False), data=st.data())
@surveyed
def test_fit_matches_reference(spec, data):
    case = spec.build()
    R = case.ref
    assume(has_finite_minimiser(case, R.w))
    journal("fit", case)
    theta0 = case.theta if data.draw(st.booleans(), label="theta0") else None
    nt = data.draw(st.sampled_from([None, 1, 2]), label="num_threads")
    args = (case.X, case.y, theta0, case.w)
    before = snapshot(*args)
    res = call(rn.fit, case.X, case.y, theta0=theta0, num_threads=nt, tol=1e-10, max_iter=100,
               **case.kw)
    unchanged(before, args, "fit")
    assert res.converged and 0 <= res.n_iter <= 100, f"fit: {res}"
    g0 = float(norm(R.gradient(np.zeros(case.p), R.w)))
    g = float(norm(R.gradient(res.theta, R.w)))
    gscale = float(np.abs(derivs(R.family, R.y, R.Xt @ res.theta, R.w)[0]) @ R.xnorm
                   + R.l2 * norm(res.theta))
    assert g <= 1e-10 * max(1.0, g0) + 1e-12 * gscale, f"fit: NumPy gradient norm {g:.3e}"
    assert abs(res.grad_norm - g) <= 1e-12 * gscale + 1e-10 * max(1.0, g0), \
        f"fit: grad_norm {res.grad_norm:.3e}, NumPy {g:.3e}"
    loss = R.objective(res.theta, R.w)
    assert abs(res.loss - loss) <= 1e-12 * (abs(loss) + 1.0) * (case.n + 1), \
        f"fit: loss {res.loss} vs {loss}"
    theta_ref = R.newton(np.zeros(case.p), R.w)
    err = float(norm(res.theta - theta_ref))
    bound = minimiser_bound(R, theta_ref, R.w, 2e-10 * max(1.0, g0) + 1e-12 * gscale)
    assert err <= bound, f"fit: ||theta - theta_numpy|| = {err:.3e} > {bound:.3e}"


@examples(40)
@given(spec=specs(regimes=("ridge",), big_l2=False), data=st.data())
@surveyed
def test_retrain_matches_reference(spec, data):
    case0 = spec.build()
    R0 = case0.ref
    assume(has_finite_minimiser(case0, R0.w))
    theta_hat = R0.newton(np.zeros(case0.p), R0.w)
    case = dataclasses.replace(case0, theta=theta_hat)
    journal("retrain", case)
    R = case.ref
    sets = []
    for k in range(data.draw(st.integers(1, 3), label="number of sets")):
        T = draw_subset(data, case.n, 8, f"set {k}")
        w = R.w.copy()
        w[T] = 0.0
        if has_finite_minimiser(case, w):
            sets.append(T)
    assume(sets)
    single = data.draw(st.booleans(), label="single") and len(sets) == 1
    arg = (sets[0] or np.array([], dtype=np.int64)) if single else sets  # [] means "no sets"
    A = call(rn.Attribution, case.X, case.y, case.theta, **case.kw)
    before = snapshot(arg)
    res = call(A.retrain, arg, tol=1e-10, max_iter=100)
    unchanged(before, (arg,), "retrain")
    fields = [f.name for f in dataclasses.fields(rn.RetrainResult)]
    if single:
        assert res.theta.shape == (case.p,), f"retrain single set: theta shape {res.theta.shape}"
        res = rn.RetrainResult(**{f: np.asarray(getattr(res, f))[None] for f in fields})
    assert res.theta.shape == (len(sets), case.p)
    for j, T in enumerate(sets):
        w = R.w.copy()
        w[T] = 0.0
        g0 = float(norm(R.gradient(np.zeros(case.p), w)))
        target = 1e-10 * max(1.0, g0)
        assert res.converged[j], f"retrain set {j}: not converged ({res.grad_norm[j]:.3e})"
        assert 0 <= res.n_iter[j] <= 100
        assert abs(res.tolerance[j] - target) <= 1e-9 * target, \
            f"retrain set {j}: tolerance {res.tolerance[j]:.6e}, expected {target:.6e}"
        th = res.theta[j]
        close_whole(res.effect[j], th - theta_hat, 1e-15, f"retrain set {j} effect",
                    scale=float(norm(th)))
        g = float(norm(R.gradient(th, w)))
        gscale = float(np.abs(derivs(R.family, R.y, R.Xt @ th, w)[0]) @ R.xnorm
                       + R.l2 * norm(th))
        assert g <= 1.5 * target + 1e-12 * gscale, f"retrain set {j}: NumPy gradient {g:.3e}"
        assert abs(res.grad_norm[j] - g) <= 1e-12 * gscale + 0.5 * target, \
            f"retrain set {j}: grad_norm {res.grad_norm[j]:.3e}, NumPy {g:.3e}"
        ref = R.newton(theta_hat, w)
        bound = minimiser_bound(R, ref, w, 2 * target + 1e-12 * gscale)
        err = float(norm(th - ref))
        assert err <= bound, f"retrain set {j}: ||theta - theta_numpy|| = {err:.3e} > {bound:.3e}"


# ----------------------------------------------------------------------------------------------
# 5. Structure: singular Hessians raise, leverage-one samples give inf
# ----------------------------------------------------------------------------------------------
SINGULAR_KINDS = ["duplicate column", "zero column", "constant column + intercept",
                  "fewer samples than parameters", "all-zero weights",
                  "all-zero weights + intercept, l2 > 0"]


def singular_case(kind: str, spec: Spec) -> tuple:
    """(X, y, theta, kw) whose Hessian is singular by construction."""
    case = spec.build()
    X, y, theta = case.X.copy(), case.y, case.theta
    kw = dict(case.kw, l2=0.0)
    d = X.shape[1]
    if kind == "duplicate column":
        X[:, -1] = X[:, 0] if d > 1 else X[:, 0]
        if d == 1:
            X = np.hstack([X, X])
            theta = np.r_[theta[:1], theta[:1] * 0.5, theta[1:]]
    elif kind == "zero column":
        X[:, 0] = 0.0
    elif kind == "constant column + intercept":
        X[:, 0] = 2.0 ** spec.scale_exp
        kw["fit_intercept"] = True
        if not spec.fit_intercept:
            theta = np.r_[theta, 0.1]
    elif kind == "fewer samples than parameters":
        rng = np.random.default_rng(spec.seed)
        extra = rng.standard_normal((X.shape[0], X.shape[0] + 1)).astype(np.float32)
        X = np.hstack([X, extra.astype(np.float64)])
        theta = np.r_[theta[:d], np.zeros(X.shape[0] + 1), theta[d:]]
    elif kind == "all-zero weights":
        kw["sample_weight"] = np.zeros(X.shape[0])
    elif kind == "all-zero weights + intercept, l2 > 0":
        kw.update(sample_weight=np.zeros(X.shape[0]), l2=case.l2 or 1.0, fit_intercept=True)
        if not spec.fit_intercept:
            theta = np.r_[theta, 0.1]
    return X, y, theta, kw


@examples(60)
@given(spec=specs(regimes=("ols",), max_d=5, min_d=1, weights=("none", "real")),
       kind=st.sampled_from(SINGULAR_KINDS),
       entry=st.sampled_from(["Attribution", "leverage", "influence", "rescaled_influence",
                              "newton_step", "_core"]))
@surveyed
def test_singular_hessian_raises(spec, kind, entry):
    X, y, theta, kw = singular_case(kind, spec)
    journal("singular", (spec, kind, entry))
    before = snapshot(X, y, theta, kw["sample_weight"])

    def fn():
        if entry == "_core":
            return _core.Attribution(X, y, theta, kw["l2"], kw["family"], kw["sample_weight"],
                                     kw["fit_intercept"], 0)
        if entry == "newton_step":
            return rn.newton_step(X, y, theta, [0], **kw)
        return getattr(rn, entry)(X, y, theta, **kw)

    exc = expect_error(fn, np.linalg.LinAlgError, r"\bl2\b", f"{kind} via {entry}")
    assert isinstance(exc, rn.NotPositiveDefiniteError), type(exc)
    unchanged(before, (X, y, theta, kw["sample_weight"]), f"{kind} via {entry}")


@examples(20)
@given(spec=specs(regimes=("ols",), max_d=5, weights=("none", "real")), data=st.data())
@surveyed
def test_leverage_one_gives_inf(spec, data):
    """l2 = 0 and a feature carried by one sample J only: h_J = 1 exactly, so RIF_J, scores_J
    and the Newton step of any set holding J are inf, with a SingularRemovalWarning naming J;
    everything else stays finite and right."""
    case = spec.build()
    J = int(case.positive[data.draw(st.integers(0, len(case.positive) - 1), label="J")])
    col = np.zeros((case.n, 1))
    col[J] = 1.25 * 2.0 ** spec.scale_exp
    d = case.X.shape[1]
    X = np.hstack([case.X, col])
    theta = np.r_[case.theta[:d], 0.3 / 2.0 ** spec.scale_exp, case.theta[d:]]
    journal("leverage one", (spec, J))
    R = Ref(X, case.y, theta, 0.0, spec.family, case.w, spec.fit_intercept)
    others = np.arange(case.n) != J
    R.rescale[J], R.amp = np.inf, float(np.max(R.rescale[others], initial=1.0))
    tol = 1e-12 + 1e3 * EPS * jacobi_cond(R.H) * R.amp
    pat = rf"\b{J}\b"
    with pytest.warns(rn.SingularRemovalWarning, match=pat):
        A = call(rn.Attribution, X, case.y, theta, **case.kw)
        rif = A.rescaled_influence()
    assert list(np.asarray(A.singular_samples)) == [J], f"singular_samples {A.singular_samples}"
    assert abs(A.leverage[J] - 1.0) <= 1e-10 and np.isposinf(A.rescale[J])
    assert np.isinf(rif[J]).all(), f"RIF row {J}: {rif[J]}"
    close_rows(rif[others], R.RIF[others], tol, "finite RIF rows", scale=R.rif_scale[others])
    close_rows(A.influence(), R.IF, tol, "IF rows (all finite)", scale=R.if_scale)
    v = np.linspace(-1.0, 1.0, R.p)
    with pytest.warns(rn.SingularRemovalWarning, match=pat):
        s = A.scores(v)
    assert np.isinf(s[J]), f"scores[{J}] = {s[J]}"
    T = [i for i in pd_after_removal(case, draw_subset(data, case.n, 5, "T")) if i != J]
    with pytest.warns(rn.SingularRemovalWarning):
        ns = A.group_effect([T + [J], T], method="ns")
    assert np.isinf(ns[0]).all(), f"NS of a set holding {J}: {ns[0]}"
    kt = tol * jacobi_cond(R.H_minus(T))
    close_rows(ns[1:], R.ns(T)[None], kt, "NS of a set without J",
               scale=[max(R.group_scale(T, "ns"), TINY)])


# ----------------------------------------------------------------------------------------------
# 6. Extremes: zero weights with any l2, scale covariance, huge directions
# ----------------------------------------------------------------------------------------------
@examples(50)
@given(spec=specs(regimes=("ridge",), intercept=False, weights=("none",)),
       l2_exp=st.floats(-330.0, 300.0), data=st.data())
@surveyed
def test_zero_weights_any_l2(spec, l2_exp, data):
    """All weights 0, no intercept: H = l2 I exactly, every estimate is 0, refits give 0.
    l2 in [1e-300, 1e300] must work; below (subnormal) a clean error naming l2 is allowed."""
    case = spec.build()
    l2 = 10.0**l2_exp
    assume(l2 > 0)
    journal("zero weights", (spec, l2))
    X, y, theta, w = case.X, case.y, case.theta, np.zeros(case.n)
    kw = dict(l2=l2, family=spec.family, sample_weight=w)
    try:
        A = call(rn.Attribution, X, y, theta, **kw)
    except (ValueError, np.linalg.LinAlgError) as exc:
        if l2 >= 1e-300:
            raise AssertionError(f"zero weights, l2={l2:.3e}: raised {type(exc).__name__}: "
                                 f"{exc}") from exc
        check_message(exc, r"\bl2\b", f"zero weights, l2={l2:.3e}")
        return
    p, n = case.p, case.n
    zeros_n, zeros_np = np.zeros(n), np.zeros((n, p))
    what = f"zero weights, l2={l2:.3e}"
    for name, got, ref in [("leverage", A.leverage, zeros_n), ("rescale", A.rescale, np.ones(n)),
                           ("residuals", A.residuals, zeros_n),
                           ("curvature", A.curvature, zeros_n),
                           ("influence", A.influence(), zeros_np),
                           ("rescaled_influence", A.rescaled_influence(), zeros_np),
                           ("scores", A.scores(np.ones(p)), zeros_n),
                           ("group rif", A.group_effect([[0], list(range(n))]), np.zeros((2, p))),
                           ("ns", A.group_effect([[0], list(range(n))], method="ns"),
                            np.zeros((2, p)))]:
        close_whole(got, ref, 0.0, f"{what}: {name}")
    close_whole(A.hessian(), l2 * np.eye(p), 1e-15, f"{what}: hessian")
    assert math.isclose(A.gradient_norm, l2 * norm(theta), rel_tol=1e-13), what
    if l2 >= 1e-300:
        close_whole(A.solve(np.ones(p)), np.ones(p) / l2, 1e-15, f"{what}: solve")
    CALLS.add(10)
    r = call(A.retrain, [0], max_iter=20)
    assert r.converged and norm(r.theta) <= 2e-10 / l2 + TINY, f"{what}: retrain {r}"
    f = call(rn.fit, X, y, max_iter=20, **kw)
    assert f.converged and norm(f.theta) <= 2e-10 / l2 + TINY, f"{what}: fit {f}"


@examples(80)
@given(spec=specs(regimes=("ridge", "ols"), big_l2=False), k=st.integers(-1100, 1100))
@surveyed
def test_scale_covariance(spec, k):
    """X -> X D, theta -> D^{-1} theta, l2 -> 4^k l2 with D = diag(2^k, ..., 2^k, 1) (exact):
    z, r, a and the leverages are unchanged, H -> D H D, IF -> D^{-1} IF. Where every scaled
    quantity stays well inside the float64 range ([2^-900, 2^900]) the package must give
    exactly that; beyond it (e.g. X entries near 1e300) a clean ValueError / LinAlgError is also
    allowed, and NaN never."""
    case = spec.build()
    R = case.ref
    d = case.X.shape[1]
    with np.errstate(over="ignore", under="ignore"):
        X = np.ldexp(case.X, k)
        theta = case.theta.copy()
        theta[:d] = np.ldexp(theta[:d], -k)
        l2 = float(np.ldexp(case.l2, 2 * k))
    journal("scale covariance", (spec, k))

    def lg(v) -> float:
        v = np.abs(np.asarray(v, dtype=np.float64))
        v = v[v > 0]
        return (math.log2(v.min()), math.log2(v.max())) if v.size else (0.0, 0.0)

    ranges = [(lg(case.X), k), (lg(case.theta[:d]), -k), (lg(R.H[:d, :d]), 2 * k),
              (lg(R.H[:d, d:]), k), (lg([case.l2]), 2 * k), (lg(R.IF[:, :d]), -k)]
    inside = all(-900 <= lo + sh and hi + sh <= 900 for (lo, hi), sh in ranges)
    if has_finite_minimiser(case, R.w):
        _scaled_fit(case, X, l2, k, inside)
    try:
        A = call(rn.Attribution, X, case.y, theta, **dict(case.kw, l2=l2))
        got = {"leverage": A.leverage, "rif": A.rescaled_influence(), "if": A.influence()}
        T = pd_after_removal(case, [0])
        got["ns"] = A.group_effect([T], method="ns")
        CALLS.add(3)
    except (ValueError, np.linalg.LinAlgError) as exc:
        if inside:
            raise AssertionError(f"scaled by 2^{k}: raised {type(exc).__name__}: {exc}") from exc
        check_message(exc, r"\bX\b|\btheta\b|\bl2\b", f"scaled by 2^{k}")
        return
    for key, v in got.items():
        assert not np.isnan(v).any(), f"scaled by 2^{k}: NaN in {key}"
    if not inside:
        return
    for key in ("rif", "if", "ns"):  # undo D^{-1}, exactly
        got[key] = got[key].copy()
        got[key][:, :d] = np.ldexp(got[key][:, :d], k)
    tol = R.tol()
    close_rows(got["leverage"], R.h, tol, f"2^{k}: leverage")
    close_rows(got["if"], R.IF, tol, f"2^{k}: IF", scale=R.if_scale)
    close_rows(got["rif"], R.RIF, tol, f"2^{k}: RIF", scale=R.rif_scale)
    if T:
        close_rows(got["ns"], R.ns(T)[None], tol * jacobi_cond(R.H_minus(T)), f"2^{k}: NS",
                   scale=[R.group_scale(T, "ns")])


def _scaled_fit(case: Case, X: np.ndarray, l2: float, k: int, inside: bool) -> None:
    """fit on the scaled data: inside the range it converges to a point where the NumPy gradient
    (of the scaled problem) is small; beyond it a clean error is also allowed, but never a
    non-finite theta nor "converged" with a non-finite gradient norm."""
    what = f"fit scaled by 2^{k}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rn.ConvergenceWarning)
            res = call(rn.fit, X, case.y, max_iter=50, **dict(case.kw, l2=l2))
    except (ValueError, np.linalg.LinAlgError) as exc:
        if inside:
            raise AssertionError(f"{what}: raised {type(exc).__name__}: {exc}") from exc
        check_message(exc, r"\bX\b|\btheta0?\b|\bl2\b", what)
        return
    assert np.isfinite(res.theta).all(), f"{what}: non-finite theta {res.theta}"
    assert math.isfinite(res.grad_norm) or not res.converged, \
        f"{what}: converged=True with grad_norm {res.grad_norm}"
    if inside:
        assert res.converged, f"{what}: not converged ({res.grad_norm:.3e})"
        Rs = Ref(X, case.y, res.theta, l2, case.spec.family, case.w, case.spec.fit_intercept)
        g0 = norm(Rs.gradient(np.zeros(case.p), Rs.w))
        gscale = float(np.abs(Rs.r) @ Rs.xnorm + Rs.l2 * norm(res.theta))
        g = norm(Rs.grad)
        assert g <= 1e-9 * max(1.0, g0) + 1e-12 * gscale, f"{what}: NumPy gradient norm {g:.3e}"


@examples(80)
@given(spec=specs(regimes=("ridge",), big_l2=False), k=st.integers(-1074, 1030), data=st.data())
@surveyed
def test_huge_and_tiny_directions(spec, k, data):
    """solve(2^k v) = 2^k H^{-1} v and scores(2^k v) = 2^k scores(v) (exact scaling): finite and
    right whenever 2^k v and the true result lie within [2^-900, 2^1020]; otherwise a clean
    ValueError naming the argument is also allowed, and never NaN."""
    case = spec.build()
    R = case.ref
    V = _directions(data, case, "V")
    with np.errstate(over="ignore", under="ignore"):
        Vk = np.ldexp(V, k)
    journal("directions", (spec, k))
    A = call(rn.Attribution, case.X, case.y, case.theta, **case.kw)
    method = data.draw(st.sampled_from(["rif", "if"]), label="method")
    est = R.RIF if method == "rif" else R.IF
    for name, fn, ref, scale, argname in [
            ("solve", lambda: A.solve(Vk), np.linalg.solve(R.H, V), None, r"\bv\b"),
            ("scores", lambda: A.scores(Vk, method=method), est @ V,
             R.score_scale(V, method == "rif"), r"\bdirection\b")]:
        nz = np.abs(ref[ref != 0])
        inside = (np.isfinite(Vk).all() and nz.size > 0
                  and math.log2(max(nz.max(), np.abs(V).max())) + k <= 1020
                  and math.log2(min(nz.min(), np.abs(V[V != 0]).min())) + k >= -900)
        what = f"{name}(2^{k} v)"
        try:
            got = call(fn)
        except ValueError as exc:
            if inside:
                raise AssertionError(f"{what}: raised ValueError: {exc}") from exc
            check_message(exc, argname, what)
            continue
        assert np.isfinite(Vk).all(), f"{what}: accepted a direction with inf entries"
        assert not np.isnan(got).any(), f"{what}: NaN in the result"
        if inside:
            with np.errstate(over="ignore", under="ignore"):
                back = np.ldexp(got, -k)  # exact: undo the scaling
            if scale is None:
                close_whole(back, ref, R.tol(), what)
            else:
                close_rows(back, ref, R.tol(), what, scale=scale)


# ----------------------------------------------------------------------------------------------
# 7. Invalid inputs to the public API: one-line ValueError / TypeError naming the argument
# ----------------------------------------------------------------------------------------------
def _put(a, idx, value, dtype=np.float64):
    a = np.array(a, dtype=dtype, copy=True)
    a[idx] = value
    return a


ARG = {"X": r"\bX\b", "y": r"\by\b|(?i:label)", "theta": r"\btheta0?\b",
       "sample_weight": r"\bsample_weight\b", "l2": r"\bl2\b", "family": r"\bfamily\b",
       "num_threads": r"\bnum_threads\b", "backend": r"\bbackend\b", "tol": r"\btol\b",
       "max_iter": r"\bmax_iter\b", "v": r"\bv\b", "direction": r"\bdirection\b",
       "method": r"\bmethod\b", "indices": r"\bindices\b", "sets": r"\bsets?\b|\bindex\b"}


class _Sparse:
    """Looks like a scipy.sparse matrix (tocsr + nnz)."""
    nnz = 3

    def tocsr(self):
        return self


def _ctor_corruptions(case: Case) -> list:
    """(label, argument, kwargs update) for the (X, y, theta, ...) entry points."""
    X, y, t, w = case.X, case.y, case.theta, case.w
    n, d, fam = case.n, X.shape[1], case.spec.family
    ww = np.ones(n) if w is None else w
    out = [
        ("X 1-D", "X", {"X": X[:, 0]}),
        ("X 3-D", "X", {"X": X[None]}),
        ("X empty", "X", {"X": X[:0], "y": y[:0], "sample_weight": None}),
        ("X NaN", "X", {"X": _put(X, (n // 2, d // 2), np.nan)}),
        ("X inf", "X", {"X": _put(X, (0, d - 1), np.inf)}),
        ("X -inf", "X", {"X": _put(X, (n - 1, 0), -np.inf)}),
        ("X complex", "X", {"X": X + 0j}),
        ("X object with None", "X", {"X": _put(X, (0, 0), None, dtype=object)}),
        ("X strings", "X", {"X": X.astype(str)}),
        ("X None", "X", {"X": None}),
        ("X ragged list", "X", {"X": [list(r) for r in X] + [[1.0] * (d + 1)]}),
        ("X sparse", "X", {"X": _Sparse()}),
        ("X datetime", "X", {"X": np.zeros(X.shape, dtype="datetime64[s]")}),
        ("y short", "y", {"y": y[:-1]}),
        ("y long", "y", {"y": np.r_[y, y[:1]]}),
        ("y 2-D", "y", {"y": y[:, None]}),
        ("y NaN", "y", {"y": _put(y, n // 2, np.nan)}),
        ("y inf", "y", {"y": _put(y, 0, np.inf)}),
        ("y complex", "y", {"y": y + 0j}),
        ("y strings", "y", {"y": y.astype(str)}),
        ("y None", "y", {"y": None}),
        ("theta short", "theta", {"theta": t[:-1]}),
        ("theta long", "theta", {"theta": np.r_[t, 0.5]}),
        ("theta 2-D", "theta", {"theta": t[None]}),
        ("theta NaN", "theta", {"theta": _put(t, 0, np.nan)}),
        ("theta inf", "theta", {"theta": _put(t, -1, -np.inf)}),
        ("theta None", "theta", {"theta": None}),
        ("theta strings", "theta", {"theta": t.astype(str)}),
        ("sample_weight short", "sample_weight", {"sample_weight": ww[:-1]}),
        ("sample_weight 2-D", "sample_weight", {"sample_weight": ww[:, None]}),
        ("sample_weight NaN", "sample_weight", {"sample_weight": _put(ww, 0, np.nan)}),
        ("sample_weight inf", "sample_weight", {"sample_weight": _put(ww, n - 1, np.inf)}),
        ("sample_weight negative", "sample_weight", {"sample_weight": _put(ww, n // 2, -0.5)}),
        ("sample_weight complex", "sample_weight", {"sample_weight": ww + 0j}),
        ("l2 negative", "l2", {"l2": -1.0}),
        ("l2 tiny negative", "l2", {"l2": -1e-300}),
        ("l2 NaN", "l2", {"l2": math.nan}),
        ("l2 inf", "l2", {"l2": math.inf}),
        ("l2 None", "l2", {"l2": None}),
        ("l2 word", "l2", {"l2": "lots"}),
        ("l2 list", "l2", {"l2": [1.0]}),
        ("l2 complex", "l2", {"l2": 1 + 1j}),
        ("family unknown", "family", {"family": "probit"}),
        ("family capitalised", "family", {"family": "Logistic"}),
        ("family None", "family", {"family": None}),
        ("family number", "family", {"family": 3}),
        ("num_threads 0", "num_threads", {"num_threads": 0}),
        ("num_threads -1", "num_threads", {"num_threads": -1}),
        ("num_threads float", "num_threads", {"num_threads": 1.5}),
        ("num_threads string", "num_threads", {"num_threads": "2"}),
        ("num_threads bool", "num_threads", {"num_threads": True}),
        ("backend unknown", "backend", {"backend": "gpu"}),
        ("backend number", "backend", {"backend": 3}),
    ]
    if fam == "logistic":
        out += [("y label 2", "y", {"y": _put(y, 0, 2.0)}), ("y label 0.5", "y",
                                                             {"y": _put(y, n - 1, 0.5)}),
                ("y label -1", "y", {"y": _put(y, 0, -1.0)})]
    if fam == "poisson":
        out += [("y negative count", "y", {"y": _put(y, 0, -1.0)})]
    if d >= 1 and not case.spec.fit_intercept:
        out += [("X no features", "X", {"X": X[:, :0], "theta": t[:0]})]
    return out


CTOR_ENTRIES = ["Attribution", "leverage", "influence", "rescaled_influence", "newton_step",
                "fit"]


def _ctor_call(entry: str, kw: dict) -> Callable:
    kw = dict(kw)
    X, y, theta = kw.pop("X"), kw.pop("y"), kw.pop("theta")
    if entry == "fit":
        kw.pop("backend", None)
        return lambda: rn.fit(X, y, theta0=theta, max_iter=20, **kw)
    if entry == "newton_step":
        return lambda: rn.newton_step(X, y, theta, [0], **kw)
    return lambda: getattr(rn, entry)(X, y, theta, **kw)


@examples(300)
@given(spec=specs(regimes=("ridge",), big_l2=False, max_n=12, max_d=4, min_d=1), data=st.data())
@surveyed
def test_invalid_constructor_inputs(spec, data):
    case = spec.build()
    cases = _ctor_corruptions(case)
    label, argname, update = data.draw(st.sampled_from(cases), label="corruption")
    entries = CTOR_ENTRIES if argname != "backend" else CTOR_ENTRIES[:-1]
    if label == "theta None":  # fit's theta0 is optional: None is valid there
        entries = [e for e in entries if e != "fit"]
    entry = data.draw(st.sampled_from(entries), label="entry")
    journal("invalid input", (spec, label, entry))
    kw = dict(X=case.X, y=case.y, theta=case.theta, **case.kw)
    kw.update(update)
    objs = tuple(kw.values())
    before = snapshot(*objs)
    expect_error(_ctor_call(entry, kw), (ValueError, TypeError),
                 ARG["theta" if entry == "fit" and argname == "theta" else argname],
                 f"{entry} with {label}")
    unchanged(before, objs, f"{entry} with {label}")


def _method_corruptions(case: Case) -> list:
    """(label, argument, call(A)) for the Attribution methods."""
    n, p = case.n, case.p
    v = np.ones(p)
    out = []
    for name, meth in (("v", "solve"), ("direction", "scores")):
        for label, bad in [("wrong length", np.ones(p + 1)), ("too short", np.ones(max(p - 1, 0))),
                           ("3-D", np.ones((p, 1, 1))), ("NaN", _put(v, 0, np.nan)),
                           ("inf", _put(v, p - 1, np.inf)), ("complex", v + 1j),
                           ("strings", v.astype(str)), ("None", None),
                           ("ragged", [[1.0, 2.0]] + [[1.0]] * max(p - 1, 1)),
                           ("wrong rows, 2-D", np.ones((p + 2, 2)))]:
            out.append((f"{meth} {name} {label}", name,
                        lambda A, m=meth, b=bad: getattr(A, m)(b)))
    out += [("scores method", "method", lambda A: A.scores(v, method="newton")),
            ("scores method ns", "method", lambda A: A.scores(v, method="ns")),
            ("scores method None", "method", lambda A: A.scores(v, method=None)),
            ("group_effect method", "method", lambda A: A.group_effect([0], method="exact")),
            ("group_effect method number", "method", lambda A: A.group_effect([0], method=2))]
    bad_idx = [("out of range", [0, n]), ("negative", [-1]), ("huge", [2**62]),
               ("floats", np.array([0.0, 1.0])), ("2-D", np.zeros((1, 1), dtype=int)),
               ("mask too long", np.ones(n + 1, dtype=bool)),
               ("mask too short", np.ones(max(n - 1, 0), dtype=bool)),
               ("strings", ["0"]), ("object", np.array([0, None], dtype=object))]
    for meth in ("influence", "rescaled_influence"):
        for label, bad in bad_idx:
            out.append((f"{meth} indices {label}", "indices",
                        lambda A, m=meth, b=bad: getattr(A, m)(b)))
    bad_sets = [b for b in bad_idx if b[0] != "2-D"] + [
        ("2-D floats", np.zeros((1, 1))), ("duplicate", [0, 0]),
        ("duplicate in a list", [[1], [0, 0]]), ("None", None), ("dict", {0: 1}),
        ("too deep", [[[0]]]), ("out of range in a list", [[0], [n]]), ("string", "0")]
    for meth, fn in (("group_effect if", lambda A, s: A.group_effect(s, method="if")),
                     ("group_effect rif", lambda A, s: A.group_effect(s, method="rif")),
                     ("group_effect ns", lambda A, s: A.group_effect(s, method="ns")),
                     ("retrain", lambda A, s: A.retrain(s, max_iter=5)),
                     ("newton_step()", None)):
        for label, bad in bad_sets:
            if fn is None:
                out.append((f"newton_step() sets {label}", "sets",
                            lambda A, b=bad: rn.newton_step(A._case.X, A._case.y, A._case.theta,
                                                            b, **A._case.kw)))
            else:
                out.append((f"{meth} sets {label}", "sets", lambda A, f=fn, b=bad: f(A, b)))
    for label, kw, arg in [("tol 0", {"tol": 0.0}, "tol"), ("tol negative", {"tol": -1e-3}, "tol"),
                           ("tol NaN", {"tol": math.nan}, "tol"), ("tol inf", {"tol": math.inf},
                                                                   "tol"),
                           ("tol string", {"tol": "small"}, "tol"), ("tol None", {"tol": None},
                                                                     "tol"),
                           ("max_iter -1", {"max_iter": -1}, "max_iter"),
                           ("max_iter float", {"max_iter": 2.5}, "max_iter"),
                           ("max_iter string", {"max_iter": "3"}, "max_iter"),
                           ("max_iter None", {"max_iter": None}, "max_iter")]:
        out.append((f"retrain {label}", arg, lambda A, k=kw: A.retrain([0], **k)))
        out.append((f"fit {label}", arg,
                    lambda A, k=kw: rn.fit(A._case.X, A._case.y, **dict(A._case.kw, **k))))
    return out


@examples(300)
@given(spec=specs(regimes=("ridge",), big_l2=False, max_n=12, max_d=4, intercept=False),
       data=st.data())
@surveyed
def test_invalid_method_inputs(spec, data):
    """Bad arguments to the Attribution methods (and to newton_step / fit's stopping rules) raise
    a one-line ValueError / TypeError naming the argument and leave the object working."""
    case = spec.build()
    A = call(rn.Attribution, case.X, case.y, case.theta, **case.kw)
    A._case = case
    label, argname, fn = data.draw(st.sampled_from(_method_corruptions(case)), label="corruption")
    journal("invalid method input", (spec, label))
    probe = A.influence([0]).copy()
    expect_error(lambda: fn(A), (ValueError, TypeError), ARG[argname], label)
    close_whole(A.influence([0]), probe, 0.0, f"{label}: object still answers the same")
    close_rows(A.leverage, case.ref.h, case.ref.tol(), f"{label}: leverage unchanged",
               scale=np.maximum(case.ref.h, TINY))


# ----------------------------------------------------------------------------------------------
# 8. Groups that may crash or hang a defective build: run in a subprocess
# ----------------------------------------------------------------------------------------------
_CHURN: list = []


def churn(nbytes: int) -> None:
    """Reuse freed memory: allocate and fill blocks of about `nbytes` (kept until the next call),
    so that a view into a freed temporary reads garbage instead of the old values."""
    _CHURN.clear()
    gc.collect()
    for k in range(8):
        _CHURN.append(np.full(max(nbytes // 8, 1), 1e300 * (-1) ** k))
        _CHURN.append(np.full(max(nbytes // 8, 1) + 4, math.nan))


def _core_answers(C, case: Case, sets) -> dict:
    """Every _core query, for comparison between two kernel objects of the same problem."""
    n, p = case.n, case.p
    idx = np.arange(n, dtype=np.int64)
    indices = np.array([i for T in sets for i in T], dtype=np.int64)
    offsets = np.r_[0, np.cumsum([len(T) for T in sets])].astype(np.int64)
    V = np.ascontiguousarray(np.linspace(-1.0, 1.0, 2 * p).reshape(2, p))
    out = {"leverage": C.leverage, "rescale": C.rescale, "residuals": C.residuals,
           "curvature": C.curvature, "theta": C.theta, "hessian": C.hessian(),
           "gradient_norm": np.array(C.gradient_norm), "solve": C.solve(V),
           "rows": C.influence_rows(idx, True, 1), "scores": C.scores(V, False, 1),
           "sums": C.group_sums(indices, offsets, True, 1),
           "ns": C.newton_step(indices, offsets, 1)[0]}
    if case.spec.regime == "ridge" and not case.spec.fit_intercept:
        out["retrain"] = C.retrain(indices, offsets, 1e-10, 20, 1)["theta"]
    CALLS.add(len(out))
    return out


def _same(got: dict, ref: dict, tol: float, what: str, atol: float = 0.0) -> None:
    for k, r in ref.items():
        g = np.asarray(got[k])
        r = np.asarray(r)
        assert g.shape == r.shape, f"{what}: {k} shape {g.shape} vs {r.shape}"
        assert np.isfinite(g).all() == np.isfinite(r).all(), f"{what}: {k} non-finite entries"
        with np.errstate(invalid="ignore", over="ignore"):
            err = float(norm(np.nan_to_num(g - r)))
        assert err <= tol * float(norm(np.nan_to_num(r))) + atol + TINY, \
            f"{what}: {k} differs from the canonical call by {err:.3e}"


# How each argument of _core.Attribution may be replaced: (label, object, verdict, canonical).
# verdict: "accept" (must work and equal the canonical call), "reject" (must raise a clean
# ValueError / TypeError naming the argument), "either" (a clean error, or equal results).
def _array_variants(name: str, c: Optional[np.ndarray], case: Case) -> list:
    if c is None:  # sample_weight None: all ones
        c = np.ones(case.n)
    out = [("C float64", c, "accept", c), ("list", c.tolist(), "either", c),
           ("big-endian", c.astype(">f8"), "either", c),
           ("complex", c + 0j, "reject", None), ("strings", c.astype(str), "reject", None),
           ("object", c.astype(object), "either", c),
           ("None", None, "accept" if name == "sample_weight" else "reject",
            np.ones(case.n) if name == "sample_weight" else None),
           ("dict", {}, "reject", None), ("empty", c[:0], "reject", None),
           ("scalar", 1.0, "reject", None)]
    if c.size:
        out += [("NaN", _put(c, (0,) * c.ndim, np.nan), "reject", None),
                ("inf", _put(c, (-1,) * c.ndim, np.inf), "reject", None)]
    ro = c.copy()
    ro.setflags(write=False)
    out.append(("read-only", ro, "accept", c))
    if np.array_equal(c, np.round(c)):
        out.append(("int64", c.astype(np.int64), "either", c))
    if c.ndim == 2:
        out += [("float32", c.astype(np.float32), "accept", c),
                ("Fortran", np.asfortranarray(c), "either", c),
                ("Fortran float32", np.asfortranarray(c.astype(np.float32)), "either", c),
                ("strided", np.repeat(c, 2, axis=0)[::2], "either", c),
                ("1-D", c.ravel(), "reject", None), ("3-D", c[None], "reject", None),
                ("huge values", c * 1e300, "either", c * 1e300),
                ("tuple of tuples", tuple(map(tuple, c.tolist())), "either", c)]
    else:
        out += [("tuple", tuple(c.tolist()), "either", c),
                ("strided", np.repeat(c, 2)[::2], "either", c),
                ("float32", c.astype(np.float32), "either", c.astype(np.float32).astype(float)),
                ("2-D", c[None], "reject", None), ("short", c[:-1], "reject", None),
                ("long", np.r_[c, c[:1]], "reject", None)]
        if name == "y" and case.spec.family == "logistic":
            out += [("bool", c.astype(bool), "either", c),
                    ("label 2", _put(c, 0, 2.0), "reject", None)]
        if name == "y" and case.spec.family == "poisson":
            out.append(("negative count", _put(c, 0, -1.0), "reject", None))
        if name == "sample_weight":
            out.append(("negative", _put(c, 0, -1.0), "reject", None))
    return out


def _scalar_variants(name: str, c: Any, case: Case) -> list:
    if name == "l2":
        out = [("float", c, "accept", c), ("numpy float32", np.float32(c), "either",
                                           float(np.float32(c))),
               ("negative", -1.0, "reject", None), ("tiny negative", -1e-300, "reject", None),
               ("NaN", math.nan, "reject", None), ("inf", math.inf, "reject", None),
               ("None", None, "reject", None), ("string", "1.0", "either", 1.0),
               ("word", "lots", "reject", None), ("complex", 1 + 1j, "reject", None),
               ("huge int", 10**400, "reject", None), ("1e300", 1e300, "either", 1e300)]
        if c == round(c):
            out.append(("int", int(c), "either", float(c)))
        return out
    if name == "family":
        return [("str", c, "accept", c), ("bytes", c.encode(), "either", c),
                ("numpy str", np.str_(c), "either", c), ("capitalised", c.title(), "reject", None),
                ("empty", "", "reject", None), ("None", None, "reject", None),
                ("number", 3, "reject", None), ("with NUL", c + "\0", "reject", None)]
    if name == "fit_intercept":
        out = [("bool", c, "accept", c), ("numpy bool", np.bool_(c), "either", c),
               ("int", int(c), "either", c),
               ("string", "yes", "reject" if not c else "either", True),
               ("None", None, "reject" if c else "either", False)]
        return out
    if name == "num_threads":
        return [("0 (all)", 0, "accept", 0), ("1", 1, "accept", 1), ("2", 2, "accept", 2),
                ("numpy int", np.int64(2), "either", 2), ("bool", True, "either", 1),
                ("-1", -1, "reject", None), ("-2^31", -2**31, "reject", None),
                ("2^31", 2**31, "either", 0), ("2^63", 2**63, "either", 0),
                ("10^30", 10**30, "either", 0), ("float", 1.5, "reject", None),
                ("string", "2", "reject", None), ("None", None, "reject", None)]
    raise AssertionError(name)


CORE_ARGS = ("X", "y", "theta", "l2", "family", "sample_weight", "fit_intercept", "num_threads")
CORE_NAMES = dict(ARG, fit_intercept=r"\bfit_intercept\b|\bintercept\b|\btheta0?\b",
                  rescaled=r"\brescaled\b",
                  direction=r"\bdirections?\b|\bV\b|\bvector\b", offsets=r"\boffsets?\b|\bsets?\b",
                  indices=r"\bindices\b|\bsets?\b")


def _outcome(fn: Callable, verdict: str, argname: str, what: str):
    """Run fn; return its result, or None after a clean rejection that the verdict allows."""
    try:
        return call(fn)
    except (ValueError, TypeError) as exc:
        if verdict == "accept":
            raise AssertionError(f"{what}: rejected a valid input: {type(exc).__name__}: "
                                 f"{str(exc)[:300]!r}") from exc
        check_message(exc, CORE_NAMES[argname], what)
        return None
    except BaseException as exc:
        raise AssertionError(f"{what}: raised {type(exc).__name__} ({str(exc)[:200]!r}); "
                             "expected a result or ValueError / TypeError") from exc


@examples(600)
@given(spec=specs(regimes=("ridge",), big_l2=False, max_n=16, max_d=4), data=st.data())
@surveyed
def iso_core_constructor(spec, data):
    """_core.Attribution and _core.fit fed arbitrary objects for one argument at a time."""
    case = spec.build()
    canon = dict(X=case.X, y=case.y, theta=case.theta, l2=case.l2, family=spec.family,
                 sample_weight=case.w, fit_intercept=spec.fit_intercept,
                 num_threads=2)  # a fixed count: 0 takes the cores idle at the call
    argname = data.draw(st.sampled_from(CORE_ARGS), label="argument")

    def variants():
        if argname in ("X", "y", "theta", "sample_weight"):
            return _array_variants(argname, canon[argname], case)
        return _scalar_variants(argname, canon[argname], case)

    label, obj, verdict, value = data.draw(st.sampled_from(variants()), label="variant")
    journal("core constructor", (spec, argname, label))
    watchdog()
    args = dict(canon, **{argname: obj})
    what = f"_core.Attribution({argname}={label})"
    sets = [pd_after_removal(case, [0, case.n - 1][: case.n])]
    before = snapshot(*args.values())
    C = _outcome(lambda: _core.Attribution(*args.values()), verdict, argname, what)
    unchanged(before, tuple(args.values()), what)
    if verdict == "reject":
        assert C is None, f"{what}: accepted an invalid input"
    if C is not None:
        # only the kernel object may keep the argument alive now
        args = before = obj = None
        churn(case.X.nbytes)
        got = _core_answers(C, case, sets)
        ref = _core_answers(_core.Attribution(*dict(canon, **{argname: value}).values()), case,
                            sets)
        if argname == "num_threads" and value == 0:
            # the thread count is chosen at each call (the cores idle then), and another count
            # rounds differently: compared to 1e-8 where 1 / (1 - h) does not amplify it
            keep = set(ref) - {"rescale", "rows", "sums", "ns", "retrain"}
            _same({k: got[k] for k in keep}, {k: ref[k] for k in keep}, 1e-8, what)
        else:
            _same(got, ref, 1e-12, what)
        obj = next(v[1] for v in variants() if v[0] == label)  # a fresh one, for fit

    # _core.fit: the same rules (theta is theta0)
    def fit_args(a: dict) -> list:
        return [a[k] for k in ("X", "y", "theta", "l2", "family", "sample_weight",
                               "fit_intercept")] + [1e-10, 20, a["num_threads"]]

    fargs = fit_args(dict(canon, **{argname: obj}))
    what = f"_core.fit({argname}={label})"
    before = snapshot(*fargs)
    out = _outcome(lambda: _core.fit(*fargs), verdict, argname, what)
    unchanged(before, tuple(fargs), what)
    if verdict == "reject":
        assert out is None, f"{what}: accepted an invalid input"
    if out is not None:
        assert np.isfinite(out["theta"]).all(), f"{what}: non-finite theta"
        assert math.isfinite(out["grad_norm"]) or not out["converged"], \
            f"{what}: converged=True with grad_norm {out['grad_norm']}"
        ref = _core.fit(*fit_args(dict(canon, **{argname: value})))
        # another thread count takes another path to fit's gradient tolerance: the minimisers
        # agree to that (relative 1e-7 here), not to rounding
        _same({"theta": out["theta"]}, {"theta": ref["theta"]}, 1e-7, what, 1e-9)


def _index_variants(c: np.ndarray, n: int, sets_api: bool) -> list:
    out = [("int64", c, "accept", c), ("list", c.tolist(), "either", c),
           ("tuple", tuple(c.tolist()), "either", c), ("int32", c.astype(np.int32), "either", c),
           ("strided", np.repeat(c, 2)[::2], "either", c), ("float", c.astype(float), "either", c),
           ("2-D", c[None], "reject", None), ("None", None, "reject", None),
           ("strings", c.astype(str), "reject", None), ("out of range", np.r_[c, n], "reject",
                                                        None),
           ("negative", np.r_[c, -1], "reject", None), ("huge", np.r_[c, 2**62], "reject", None),
           ("most negative", np.r_[c, -2**63], "reject", None)]
    if len(c):
        out.append(("duplicate", np.r_[c, c[:1]], "reject" if sets_api else "either",
                    np.r_[c, c[:1]]))
    return out


def with_offsets(args: dict, argname: str) -> dict:
    """A changed `indices` (one set) comes with offsets [0, len(indices)], so that the kernel
    judges the indices themselves, not the offsets that no longer match them."""
    obj = args.get("indices")
    if argname == "indices" and "offsets" in args and np.ndim(obj) == 1 and not isinstance(
            obj, str):
        args["offsets"] = np.array([0, len(obj)], dtype=np.int64)
    return args


@examples(600)
@given(spec=specs(regimes=("ridge",), big_l2=False, max_n=16, max_d=4, intercept=False),
       data=st.data())
@surveyed
def iso_core_methods(spec, data):
    """The _core.Attribution methods fed arbitrary objects for one argument at a time."""
    case = spec.build()
    n, p = case.n, case.p
    C = _core.Attribution(case.X, case.y, case.theta, case.l2, spec.family, case.w, False, 0)
    C2 = _core.Attribution(case.X, case.y, case.theta, case.l2, spec.family, case.w, False, 0)
    CALLS.add(2)
    T = np.asarray(data.draw(st.lists(st.integers(0, n - 1), unique=True, min_size=1,
                                      max_size=min(n, 4)), label="set"), dtype=np.int64)
    offsets = np.array([0, len(T)], dtype=np.int64)
    V = np.ascontiguousarray(np.linspace(-1.0, 1.0, 2 * p).reshape(2, p))
    method = data.draw(st.sampled_from(["influence_rows", "scores", "solve", "group_sums",
                                        "newton_step", "retrain", "attach_host"]), label="method")
    canon = {"influence_rows": dict(indices=T, rescaled=True, num_threads=1),
             "scores": dict(V=V, rescaled=False, num_threads=1), "solve": dict(V=V),
             "group_sums": dict(indices=T, offsets=offsets, rescaled=True, num_threads=1),
             "newton_step": dict(indices=T, offsets=offsets, num_threads=1),
             "retrain": dict(indices=T, offsets=offsets, tol=1e-10, max_iter=20, num_threads=1),
             "attach_host": dict(X=case.X.copy())}[method]
    argname = data.draw(st.sampled_from(list(canon)), label="argument")
    c = canon[argname]
    if argname == "indices":
        variants = _index_variants(c, n, method != "influence_rows")
    elif argname == "offsets":
        k = len(T)
        variants = [("int64", c, "accept", c), ("list", c.tolist(), "either", c),
                    ("not from 0", np.array([1, k]), "reject", None),
                    ("short end", np.array([0, max(k - 1, 0)]) if k else np.array([0, 1]),
                     "reject", None), ("past end", np.array([0, k + 1]), "reject", None),
                    ("decreasing", np.array([0, k, 0, k]), "reject" if k else "either", c),
                    ("empty", np.array([], dtype=np.int64), "reject", None),
                    ("2-D", c[None], "reject", None), ("None", None, "reject", None),
                    ("huge", np.array([0, 2**62]), "reject", None),
                    ("float", c.astype(float), "either", c)]
    elif argname == "V":
        variants = [("C", c, "accept", c), ("list", c.tolist(), "either", c),
                    ("Fortran", np.asfortranarray(c), "either", c),
                    ("no rows", c[:0], "either", c[:0]), ("1-D", c[0], "reject", None),
                    ("wrong p", np.ones((2, p + 1)), "reject", None),
                    ("NaN", _put(c, (0, 0), np.nan), "reject", None),
                    ("inf", _put(c, (1, p - 1), -np.inf), "reject", None),
                    ("complex", c + 0j, "reject", None), ("None", None, "reject", None),
                    ("3-D", c[None], "reject", None)]
    elif argname == "X":
        variants = [("copy", c, "either", c), ("list", c.tolist(), "either", c),
                    ("float32", c.astype(np.float32), "either", c),
                    ("wrong shape", c[:, :0] if p > 1 else c[:0], "reject", None),
                    ("more rows", np.vstack([c, c]), "reject", None),
                    ("None", None, "reject", None), ("1-D", c.ravel(), "reject", None)]
    elif argname == "rescaled":
        variants = [("bool", c, "accept", c), ("numpy bool", np.bool_(c), "either", c),
                    ("int", int(c), "either", c), ("string", "yes", "either", True),
                    ("None", None, "either", False)]
    elif argname == "num_threads":
        variants = [v for v in _scalar_variants("num_threads", 0, case)]
    elif argname == "tol":
        variants = [("1e-10", c, "accept", c), ("0", 0.0, "reject", None),
                    ("negative", -1e-3, "reject", None), ("NaN", math.nan, "reject", None),
                    ("inf", math.inf, "reject", None), ("None", None, "reject", None),
                    ("string", "x", "reject", None)]
    elif argname == "max_iter":
        variants = [("20", c, "accept", c), ("0", 0, "accept", 0), ("-1", -1, "reject", None),
                    ("-2^31", -2**31, "reject", None), ("float", 2.5, "reject", None),
                    ("None", None, "reject", None),
                    # beyond int: clamped (an iteration budget no call can spend)
                    ("2^40", 2**40, "either", c)]
    else:
        raise AssertionError(argname)
    label, obj, verdict, value = data.draw(st.sampled_from(variants), label="variant")
    journal("core method", (spec, method, argname, label))
    watchdog()
    what = f"_core.Attribution.{method}({argname}={label})"
    args = with_offsets(dict(canon, **{argname: obj}), argname)
    before = snapshot(*args.values())
    out = _outcome(lambda: getattr(C, method)(*args.values()), verdict,
                   "direction" if argname == "V" else argname, what)
    if verdict == "reject":
        assert out is None, f"{what}: accepted an invalid input"
    if out is None:
        unchanged(before, tuple(args.values()), what)
    else:
        del obj
        args[argname] = None
        churn(case.X.nbytes)
    if out is not None and method != "attach_host":
        cargs = with_offsets(dict(canon, **{argname: value}), argname)
        ref = call(getattr(C2, method), *cargs.values())
        tol, atol = 1e-12, 0.0
        if method == "retrain":
            # another thread count takes another path to the gradient tolerance (1e-10 of
            # its scale, here of order 1): the refits agree to that, not to rounding
            out, ref = out["theta"], ref["theta"]
            tol, atol = 1e-7, 1e-9
        elif method == "newton_step":
            out, ref = out[0], ref[0]
        _same({"out": out}, {"out": ref}, tol, what, atol)
    # the object still gives the canonical answers (attach_host: with the same values)
    _same(_core_answers(C, case, [T.tolist()]), _core_answers(C2, case, [T.tolist()]), 1e-12,
          f"{what}, then every query")


CASE_TIMEOUT = float(os.environ.get("RIF_PROPS_CASE_TIMEOUT", "10"))  # s per isolated case
SKIP_CASES = int(os.environ.get("RIF_PROPS_SKIP", "0"))  # resume a group after a crash / hang


def watchdog() -> None:
    """End this (isolated) process after CASE_TIMEOUT seconds unless re-armed by the next
    example: a hang then shows as a timeout naming the journal's example."""
    import faulthandler

    faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)


class Cases:
    """Runs the numbered cases of a fixed (non-hypothesis) group, each under a watchdog that ends
    the process after CASE_TIMEOUT seconds (faulthandler: works while C++ holds the GIL); the
    parent restarts the group after the case that crashed or hung (RIF_PROPS_SKIP). Failures
    are recorded (survey mode) or raised together at the end."""

    def __init__(self, name: str) -> None:
        self.name, self.failures, self.index = name, [], 0

    def run(self, label: str, fn: Callable) -> None:
        import faulthandler

        i, self.index = self.index, self.index + 1
        if i < SKIP_CASES:
            return
        journal(self.name, f"#{i} {label}")
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        try:
            fn()
        except Exception as exc:
            if SURVEY:
                record(self.name, exc)
            line = f"{label}: {type(exc).__name__}: {str(exc)[:300]!r}"
            self.failures.append(line)
            print(f"{FAILED} #{i} {line}", flush=True)  # at once: the parent may restart us
        finally:
            faulthandler.cancel_dump_traceback_later()

    def finish(self) -> None:
        if self.failures and not SURVEY:
            raise AssertionError(f"{len(self.failures)} failing case(s):\n" +
                                 "\n".join(self.failures))


def iso_threads_huge() -> None:
    """num_threads far beyond the machine, at p small and p >= 1024: a correct result (the same
    as one thread) or a clean error naming num_threads; never a crash."""
    cases = Cases("iso_threads_huge")
    rng = np.random.default_rng(5)
    for d in (4, 1100):
        n = 40
        X = (rng.standard_normal((n, d)) / math.sqrt(d)).astype(np.float32).astype(np.float64)
        y = (rng.random(n) < 0.5).astype(float)
        theta = 0.1 * rng.standard_normal(d)
        sets = [[0, 1], list(range(d // 2 + 3)) if d < n else [2, 3, 4]]
        V = np.ones((d, 2))
        ref_A = rn.Attribution(X, y, theta, l2=1.0, num_threads=1)
        ref = {"leverage": ref_A.leverage, "rif": ref_A.rescaled_influence(),
               "ns": ref_A.group_effect(sets, method="ns"), "scores": ref_A.scores(V),
               "fit": rn.fit(X, y, l2=1.0, max_iter=20, num_threads=1).theta}
        for nt in (10**5, 2**31 - 1, 2**31, 2**63 - 1, 2**64, 10**30, -2**31, -2**63):
            for entry in ("Attribution", "fit", "_core.Attribution", "_core.fit", "query"):
                cases.run(f"{entry} with num_threads={nt} at p={d}",
                          functools.partial(_huge_threads_case, entry, nt, X, y, theta, sets, V,
                                            ref))
    cases.finish()


def _huge_threads_case(entry, nt, X, y, theta, sets, V, ref) -> None:
    n, d = X.shape
    what = f"{entry} with num_threads={nt} at p={d}"
    try:
        if entry == "Attribution":
            A = call(rn.Attribution, X, y, theta, l2=1.0, num_threads=nt)
            got = {"leverage": A.leverage, "rif": A.rescaled_influence(),
                   "ns": A.group_effect(sets, method="ns"), "scores": A.scores(V)}
        elif entry == "fit":
            got = {"fit": call(rn.fit, X, y, l2=1.0, max_iter=20, num_threads=nt).theta}
        elif entry == "_core.Attribution":
            C = call(_core.Attribution, X, y, theta, 1.0, "logistic", None, False, nt)
            got = {"leverage": C.leverage}
        elif entry == "_core.fit":
            got = {"fit": call(_core.fit, X, y, np.zeros(d), 1.0, "logistic", None, False,
                               1e-10, 20, nt)["theta"]}
        else:
            C = _core.Attribution(X, y, theta, 1.0, "logistic", None, False, 1)
            got = {"rif": call(C.influence_rows, np.arange(n, dtype=np.int64), True, nt)}
    except (ValueError, TypeError) as exc:
        check_message(exc, ARG["num_threads"], what)
        return
    assert nt >= 1, f"{what}: accepted"
    _same(got, {k: ref[k] for k in got}, 1e-9, what)


# max_iter 2^31 - 1 cannot finish by iterating (any processor): the solver must notice that it
# makes no progress, or reject the tolerance; 10^12 does not fit the kernel's int.
HANG_CASES = ((1e-300, 2**31 - 1), (5e-324, 2**31 - 1), (1e-300, 10**12))


def _stopping_case(fn: Callable, what: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rn.ConvergenceWarning)
            res = call(fn)
    except (ValueError, TypeError) as exc:
        check_message(exc, r"\btol\b|\bmax_iter\b", what)
        return
    theta = res["theta"] if isinstance(res, dict) else res.theta
    assert np.isfinite(theta).all(), f"{what}: non-finite theta"


def iso_hang_fit() -> None:
    """fit with an unattainable tolerance and a huge max_iter returns (not converged, with a
    ConvergenceWarning) or rejects the tolerance / max_iter; it must not spin for ever."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 3))
    y = (rng.random(30) < 0.5).astype(float)
    cases = Cases("iso_hang_fit")
    for tol, max_iter in HANG_CASES:
        cases.run(f"fit(tol={tol}, max_iter={max_iter})", functools.partial(
            _stopping_case, lambda t=tol, m=max_iter: rn.fit(X, y, l2=1.0, tol=t, max_iter=m),
            f"fit(tol={tol}, max_iter={max_iter})"))
        m = min(max_iter, 2**31 - 1)
        cases.run(f"_core.fit(tol={tol}, max_iter={m})", functools.partial(
            _stopping_case, lambda t=tol, m=m: _core.fit(X, y, np.zeros(3), 1.0, "logistic", None,
                                                         False, t, m, 1),
            f"_core.fit(tol={tol}, max_iter={m})"))
    cases.finish()


def iso_hang_retrain() -> None:
    """retrain with an unattainable tolerance and a huge max_iter returns or rejects them."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 3))
    y = (rng.random(30) < 0.5).astype(float)
    theta = rn.fit(X, y, l2=1.0).theta
    A = rn.Attribution(X, y, theta, l2=1.0)
    cases = Cases("iso_hang_retrain")
    for tol, max_iter in HANG_CASES:
        what = f"retrain(tol={tol}, max_iter={max_iter})"
        cases.run(what, functools.partial(
            _stopping_case, lambda t=tol, m=max_iter: A.retrain([[0, 1], [2]], tol=t,
                                                                max_iter=m), what))
    cases.finish()


# group -> (function, seconds for the whole group in the ci profile, resumable by case)
ISOLATED = {"core_constructor": (iso_core_constructor, 150, False),
            "core_methods": (iso_core_methods, 150, False),
            "threads_huge": (iso_threads_huge, 120, True),
            "hang_fit": (iso_hang_fit, 60, True),
            "hang_retrain": (iso_hang_retrain, 60, True)}
RUNNER = Path(__file__).resolve().parent / "fuzz" / "isolated.py"
MAX_RESTARTS = int(os.environ.get("RIF_PROPS_MAX_RESTARTS", "6"))
DONE = "rif-props-calls"
FAILED = "rif-props-failed"


def _run_child(group: str, skip: int, timeout: float, jpath: str) -> tuple[int, str, str]:
    env = dict(os.environ, RIF_PROPS_JOURNAL=jpath, HYPOTHESIS_PROFILE=PROFILE,
               RIF_PROPS_SCALE=str(SCALE), RIF_PROPS_SKIP=str(skip), RIF_PROPS_CHILD="1")
    for var in ("RIF_PROPS_COUNT_FILE", "RIF_PROPS_FINDINGS"):  # reported on stdout instead
        env.pop(var, None)
    if os.path.exists(jpath):
        os.remove(jpath)
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", str(RUNNER), group],
                              env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        rc, out = 124, text(exc.stdout) + text(exc.stderr) + f"\n[timed out after {timeout} s]"
    last = Path(jpath).read_text().strip() if os.path.exists(jpath) else "(none)"
    m = re.findall(rf"^{DONE} (\d+)$", out, re.M)
    if m:
        CALLS.add(int(m[-1]))
    for line in re.findall(rf"^{FINDING} (.*)$", out, re.M):
        e = json.loads(line)
        with _FINDINGS_LOCK:
            if e["key"] not in FINDINGS:
                FINDINGS[e["key"]] = {k: e[k] for k in ("count", "message", "example")}
                if _FINDINGS_FILE:
                    with open(_FINDINGS_FILE, "a") as f:
                        f.write(line + "\n")
    return rc, out, last


def run_isolated(group: str) -> list:
    """Run one group in fresh interpreters, restarting after a case that crashed or hung; returns
    [(how, last example, output tail)] for every abnormal end and failure."""
    import tempfile
    _, seconds, resumable = ISOLATED[group]
    timeout = seconds * (SCALE if PROFILE == "long" else 1.0)
    problems, skip = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        jpath = os.path.join(tmp, "journal")
        for _ in range(MAX_RESTARTS + 1):
            rc, out, last = _run_child(group, skip, timeout, jpath)
            tail = "\n".join(out.strip().splitlines()[-40:])
            finished = re.search(rf"^{DONE} ", out, re.M) is not None
            problems += [("failed", line, "") for line in
                         re.findall(rf"^{FAILED} (.*)$", out, re.M)]
            if finished and rc == 0:
                break
            if finished:  # ordinary failures, reported by the child
                if not resumable:
                    problems.append((f"failed (exit {rc})", last, tail))
                break
            how = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else
                   "hung (subprocess timeout)" if rc == 124 else
                   f"hung (no answer within {CASE_TIMEOUT:g} s)" if "Timeout (" in out else
                   f"died (exit {rc})")
            problems.append((how, last, tail))
            m = re.search(r"#(\d+) ", last)
            if not (resumable and m):
                break
            skip = int(m.group(1)) + 1
        else:
            problems.append((f"stopped after {MAX_RESTARTS} restarts", "", ""))
    return problems


@pytest.mark.parametrize("group", list(ISOLATED))
def test_isolated(group):
    """The crash- and hang-prone groups, in subprocesses: no crash, no hang, no failure."""
    problems = run_isolated(group)
    if not problems:
        return
    if SURVEY:  # the child recorded its own failures; crashes and hangs are recorded here
        for how, last, _ in problems:
            if not how.startswith("failed"):
                _LAST["example"] = last
                record(f"isolated[{group}]", RuntimeError(f"subprocess {how}"))
        return
    report = "\n".join(f"- {last}" if how == "failed" else
                       f"- {how}; last example started: {last}" for how, last, _ in problems)
    tail = next((t for _, _, t in reversed(problems) if t), "")
    pytest.fail(f"isolated group {group!r}:\n{report}\n--- output tail of the last run ---\n"
                f"{tail}", pytrace=False)
