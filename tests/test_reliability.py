"""Defects found by fuzzing the public API and the `_core` bindings (issue 15): each test here
failed before its fix. Verdicts are structural (which error, which argument, finite or not),
never a borderline rounding comparison, so they do not depend on the processor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rif_native as rn
from rif_native import _core

from conftest import Reference, newton_fit, rel_err

EPS = np.finfo(np.float64).eps


def _one_line(exc: BaseException, limit: int = 300) -> str:
    msg = str(exc)
    assert "\n" not in msg.strip(), msg
    assert len(msg) < limit, f"{len(msg)} characters: {msg[:200]}..."
    return msg


def _logistic(rng, n, d):
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(float)
    return X, y


def _core_args(X, y, p, **over):
    kw = dict(X=X, y=y, theta0=np.zeros(p), l2=1.0, family="logistic", sample_weight=None,
              fit_intercept=False, tol=1e-10, max_iter=50, num_threads=1)
    kw.update(over)
    return kw


# ------------------------------------------------------------------ the binding owns what it reads


def test_core_attribution_owns_a_converted_list(rng):
    """X given to `_core.Attribution` as a list is converted once and that array kept: the
    leverages equal those of the array, bit for bit, however often memory is reused."""
    X, y = _logistic(rng, 200, 6)
    ref = _core.Attribution(X, y, np.zeros(6), 1.0, "logistic", None, False, 1).leverage
    for _ in range(5):
        A = _core.Attribution(X.tolist(), y.tolist(), [0.0] * 6, 1.0, "logistic", None, False, 1)
        _ = [np.ones(10_000) for _ in range(20)]  # reuse freed memory
        assert np.array_equal(A.influence_rows(np.arange(200), True, 1),
                              _core.Attribution(X, y, np.zeros(6), 1.0, "logistic", None,
                                                False, 1).influence_rows(np.arange(200), True, 1))
        assert np.array_equal(A.leverage, ref)


# ------------------------------------------------------------------------ arguments, one line each


@pytest.mark.parametrize("over, exc, name", [
    (dict(num_threads=-1), ValueError, "num_threads"),
    (dict(num_threads="2"), TypeError, "num_threads"),
    (dict(num_threads=None), TypeError, "num_threads"),
    (dict(l2=None), TypeError, "l2"),
    (dict(l2="1"), TypeError, "l2"),
    (dict(family=None), TypeError, "family"),
    (dict(fit_intercept=1), TypeError, "fit_intercept"),
    (dict(tol="x"), TypeError, "tol"),
    (dict(tol=1e-300), ValueError, "tol"),
    (dict(max_iter=1.5), TypeError, "max_iter"),
    (dict(max_iter=-1), ValueError, "max_iter"),
    (dict(y="abc"), TypeError, "y"),
    (dict(theta0=object()), TypeError, "theta0"),
    (dict(sample_weight=[None, 1.0]), TypeError, "sample_weight"),
    (dict(X=np.array([["a", "b"]])), TypeError, "X"),
])
def test_core_fit_argument_errors_are_one_line(rng, over, exc, name):
    X, y = _logistic(rng, 40, 3)
    with pytest.raises(exc) as info:
        _core.fit(**_core_args(X, y, 3, **over))
    assert name in _one_line(info.value)


def test_huge_thread_counts_are_clamped_not_dumped(rng):
    """num_threads=2**31 used to fail in pybind11 with every argument printed (12 kB)."""
    X, y = _logistic(rng, 40, 3)
    out = _core.fit(**_core_args(X, y, 3, num_threads=2**31))
    assert out["converged"]
    ref, _ = newton_fit(X, y, l2=1.0)
    assert rel_err(out["theta"], ref) < 1e-8
    A = rn.Attribution(X, y, out["theta"], l2=1.0, num_threads=2**40)
    assert np.all(np.isfinite(A.leverage))


def test_core_refuses_duplicates_within_a_set(rng):
    X, y = _logistic(rng, 30, 3)
    A = _core.Attribution(X, y, np.zeros(3), 1.0, "logistic", None, False, 1)
    for call in (lambda: A.group_sums(np.array([1, 1]), np.array([0, 2]), True, 1),
                 lambda: A.newton_step(np.array([4, 2, 4]), np.array([0, 3]), 1),
                 lambda: A.retrain(np.array([5, 5]), np.array([0, 2]), 1e-10, 10, 1)):
        with pytest.raises(ValueError, match="more than once"):
            call()
    # the same index in two different sets is fine
    out = A.group_sums(np.array([1, 2, 1]), np.array([0, 2, 3]), True, 1)
    assert np.all(np.isfinite(out))


def test_many_threads_at_large_p_do_not_crash():
    """10**5 threads at p >= 1024 was a SIGSEGV in GOMP (run in a child to survive a crash)."""
    code = textwrap.dedent("""
        import numpy as np, rif_native as rn
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 1024)); y = (rng.random(64) < .5).astype(float)
        h = rn.leverage(X, y, np.zeros(1024), l2=1.0, num_threads=10**5)
        f = rn.fit(X, y, l2=1.0, num_threads=10**9, max_iter=3)
        assert np.isfinite(h).all() and np.isfinite(f.theta).all()
        print("ok", rn.build_info()["max_threads"])
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1].startswith("ok")


# ---------------------------------------------------------------------------- silent NaN, overflow


def test_no_silent_nan_with_vanishing_l2_and_no_weight(rng):
    """l2 below the smallest invertible scale with every weight zero: an error that says why."""
    X = rng.standard_normal((5, 3))
    y = np.array([0.0, 1, 2, 0, 3])
    for l2 in (5e-324, 1e-310):
        with pytest.raises(np.linalg.LinAlgError) as info:
            rn.Attribution(X, y, np.zeros(3), l2=l2, family="poisson", sample_weight=np.zeros(5))
        assert "l2" in _one_line(info.value)
    # a tiny but resolvable l2 with no weight: leverage exactly 0, finite estimates
    A = rn.Attribution(X, y, np.zeros(3), l2=1e-200, family="poisson", sample_weight=np.zeros(5))
    assert np.array_equal(A.leverage, np.zeros(5))
    for out in (A.rescaled_influence(), A.solve(np.ones(3)), A.group_effect([0, 1], "rif")):
        assert np.all(np.isfinite(out))


def test_huge_l2_is_not_refused(rng):
    """l2 = 1e300 with an (unpenalised) intercept is positive definite and resolvable; the
    intercept's pivot is judged against its own diagonal, not the penalty's scale."""
    n, d = 60, 35
    X, y = _logistic(rng, n, d)
    theta = np.zeros(d + 1)
    A = rn.Attribution(X, y, theta, l2=1e300, fit_intercept=True)
    ref = Reference(X, y, theta, l2=1e300, fit_intercept=True)
    assert rel_err(A.leverage, ref.h) < 1e-10
    assert rel_err(A.rescaled_influence(), ref.RIF) < 1e-10


def test_huge_feature_value_is_an_error_naming_it(rng):
    X, y = _logistic(rng, 30, 3)
    X[3, 1] = 1e200
    for call in (lambda: rn.Attribution(X, y, np.zeros(3), l2=1.0),
                 lambda: rn.fit(X, y, l2=1.0)):
        with pytest.raises(ValueError) as info:
            call()
        msg = _one_line(info.value)
        assert "1e+200" in msg and "overflow" in msg and "l2 > 0" not in msg


def test_overflowing_outputs_are_errors_not_inf(rng):
    X, y = _logistic(rng, 40, 3)
    theta, _ = newton_fit(X, y, l2=1.0)
    A = rn.Attribution(X, y, theta, l2=1.0)
    scores = A.scores(np.full(3, 1e300))  # large but representable: finite
    assert np.all(np.isfinite(scores))
    ref = Reference(X, y, theta, l2=1.0)
    assert rel_err(scores / 1e300, ref.scores(np.ones(3))) < 1e-10
    # (H^{-1})_kk >= 1 / H_kk, about 1 / l2 = 1000 for a feature of scale 1e-3: 1e308 overflows
    Xs = X.copy()
    Xs[:, 2] *= 1e-3
    S = rn.Attribution(Xs, y, np.zeros(3), l2=1e-3)
    with pytest.raises(ValueError, match="overflows float64"):
        S.solve(np.array([0.0, 0.0, 1e308]))
    # the scores r_i x_i . H^{-1} v are computed without overflowing on the way: finite and
    # equal to the reference's (computed at scale 1), or a named overflow, never inf or NaN
    ref_s = Reference(Xs, y, np.zeros(3), l2=1e-3).scores(np.array([0.0, 0.0, 1.0]))
    try:
        got = S.scores(np.array([0.0, 0.0, 1e308]))
        assert rel_err(got / 1e308, ref_s) < 1e-10
    except ValueError as exc:
        assert "overflows float64" in str(exc)
    # l2 = 1e308: the gradient norm is representable and reported as such
    B = rn.Attribution(X, y, np.ones(3), l2=1e308)
    assert np.isfinite(B.gradient_norm)
    assert B.gradient_norm == pytest.approx(np.sqrt(3) * 1e308, rel=1e-12)


def test_l2_none_names_l2(rng):
    X, y = _logistic(rng, 20, 2)
    for call in (lambda: rn.Attribution(X, y, np.zeros(2), l2=None),
                 lambda: rn.fit(X, y, l2=None)):
        with pytest.raises(TypeError) as info:
            call()
        assert "l2" in _one_line(info.value)


# ---------------------------------------------------------------------------------------- hangs


def test_unmeetable_tolerance_is_refused(rng):
    X, y = _logistic(rng, 40, 3)
    with pytest.raises(ValueError, match="tol"):
        rn.fit(X, y, l2=1.0, tol=1e-300, max_iter=2**31 - 1)
    A = rn.Attribution(X, y, newton_fit(X, y, l2=1.0)[0], l2=1.0)
    with pytest.raises(ValueError, match="tol"):
        A.retrain([1, 2], tol=1e-300, max_iter=2**31 - 1)


def test_fit_stops_when_the_gradient_stalls(rng):
    """At tol = machine epsilon the gradient norm reaches its rounding noise and wanders: fit
    must stop on its own (converged or stalled), in a handful of iterations, however large
    max_iter is."""
    n, d = 3000, 40
    X = rng.standard_normal((n, d)) * 30 + 100
    y = (rng.random(n) < 0.5).astype(float)
    start = time.perf_counter()
    with np.errstate(all="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rn.ConvergenceWarning)
            res = rn.fit(X, y, l2=1.0, fit_intercept=True, tol=EPS, max_iter=2**31 - 1)
    assert res.n_iter < 60, res
    assert res.converged or res.stalled
    assert time.perf_counter() - start < 60
    A = rn.Attribution(X, y, res.theta, l2=1.0, fit_intercept=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rn.ConvergenceWarning)
        r = A.retrain([np.arange(10), np.arange(20, 50)], tol=EPS, max_iter=2**31 - 1)
    assert np.all(r.n_iter < 200), r.n_iter


# ------------------------------------------------------------------ structural singularity


def _fitted(X, y, l2, fit_intercept):
    theta, _ = newton_fit(X, y, l2=l2, fit_intercept=fit_intercept)
    return rn.Attribution(X, y, theta, l2=l2, fit_intercept=fit_intercept)


def test_removing_every_sample_leaves_the_intercept_without_data(rng):
    """Decided by counting, not by pivots (which rounding decided differently on AMD and
    Intel): not converged, flagged singular, the Newton step inf."""
    X, y = _logistic(rng, 40, 5)
    A = _fitted(X, y, 1.0, True)
    with pytest.warns(rn.ConvergenceWarning, match="without data"):
        res = A.retrain([np.arange(40), np.arange(5)])
    assert list(res.converged) == [False, True]
    assert list(res.singular) == [True, False]
    with pytest.warns(rn.SingularRemovalWarning):
        ns = A.group_effect([np.arange(40), np.arange(5)], method="ns")
    assert np.all(np.isinf(ns[0])) and np.all(np.isfinite(ns[1]))
    # zero weights count as no data: removing the only weighted samples is the same
    w = np.zeros(40)
    w[:6] = 1.0
    Aw = rn.Attribution(X, y, np.zeros(6), l2=1.0, fit_intercept=True, sample_weight=w)
    with pytest.warns(rn.ConvergenceWarning, match="without data"):
        assert bool(Aw.retrain(np.arange(6)).singular)


def test_unpenalised_feature_without_data(rng):
    """With l2 = 0, a feature that is zero on every sample left is unidentified."""
    X, y = _logistic(rng, 80, 3)
    X[:, 2] = 0.0
    X[:10, 2] = rng.standard_normal(10)
    y = (rng.random(80) < 0.5).astype(float)
    A = _fitted(X, y, 0.0, False)
    with pytest.warns(rn.ConvergenceWarning, match="without data"):
        res = A.retrain([np.arange(10), np.arange(10, 20)])
    assert list(res.singular) == [True, False]
    assert bool(res.converged[1])


# ------------------------------------------------------------------------------------- memory


def test_memory_is_checked_before_it_is_asked_for(rng, monkeypatch):
    X, y = _logistic(rng, 2000, 500)
    with pytest.raises(MemoryError) as info:
        rn.Attribution(X, y, np.zeros(500), l2=1.0, max_memory="2M")
    msg = _one_line(info.value)
    assert "needs about" in msg and "max_memory" in msg
    with pytest.raises(MemoryError):
        rn.fit(X, y, l2=1.0, max_memory=1e6)
    monkeypatch.setenv("RIF_MAX_MEMORY", "3MiB")
    with pytest.raises(MemoryError, match="RIF_MAX_MEMORY"):
        rn.leverage(X, y, np.zeros(500), l2=1.0)
    monkeypatch.setenv("RIF_MAX_MEMORY", "1G")
    A = rn.Attribution(X, y, np.zeros(500), l2=1.0)
    ref = Reference(X, y, np.zeros(500), l2=1.0)
    assert rel_err(A.leverage, ref.h) < 1e-10
    # sets are checked per call: 300 sets of 100 at p = 500 need a 145 MB Woodbury panel
    A = rn.Attribution(X, y, np.zeros(500), l2=1.0, max_memory="100M")
    sets = [rng.choice(2000, 100, replace=False) for _ in range(300)]
    with pytest.raises(MemoryError, match="fewer or smaller sets"):
        A.group_effect(sets, method="ns")
    for bad in ("lots", -5, "0G"):
        with pytest.raises(ValueError, match="max_memory"):
            rn.Attribution(X, y, np.zeros(500), l2=1.0, max_memory=bad)


def test_multinomial_retraining_is_checked(rng, monkeypatch):
    """Retraining a multinomial set may take a Hessian pass and an inverse beyond what the
    attribution holds: checked before it starts, against the cap in force then."""
    monkeypatch.delenv("RIF_MAX_MEMORY", raising=False)
    X = rng.standard_normal((600, 40))
    y = rng.integers(0, 3, 600)
    A = rn.MultinomialAttribution(X, y, np.zeros((3, 41)), l2=1.0, fit_intercept=True)
    monkeypatch.setenv("RIF_MAX_MEMORY", "100K")
    with pytest.raises(MemoryError, match="retraining sets of up to 30 samples"):
        A.retrain([np.arange(30), np.arange(5)])
    monkeypatch.setenv("RIF_MAX_MEMORY", "1G")
    assert bool(A.retrain([np.arange(30)]).converged[0])



def test_small_needs_do_not_ask_the_system(rng, monkeypatch):
    """Up to 64 MiB a call does not read /proc (0.18 ms a call); above, and under any cap the
    caller sets, it does."""
    from rif_native import _memory

    monkeypatch.delenv("RIF_MAX_MEMORY", raising=False)
    asked = []
    monkeypatch.setattr(_memory, "available",
                        lambda: asked.append(1) or (2**20, "available memory"))
    X, y = _logistic(rng, 400, 50)  # about 1 MB
    A = rn.Attribution(X, y, np.zeros(50), l2=1.0)
    assert rel_err(A.leverage, Reference(X, y, np.zeros(50), l2=1.0).h) < 1e-10
    assert asked == []
    with pytest.raises(MemoryError, match="available memory allows 1 MiB"):
        _memory.require(65 * 2**20, "this", "less")
    assert asked == [1]
    with pytest.raises(MemoryError, match="max_memory"):
        rn.Attribution(X, y, np.zeros(50), l2=1.0, max_memory="100K")

@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer reserves terabytes of address space for its shadow")
def test_memory_error_comes_first_under_an_address_space_limit():
    """d = 20,000 under a 4 GB ulimit -v: two 3.2 GB p x p matrices do not fit. A MemoryError
    that says so comes at once, not after seconds of work or as std::bad_alloc."""
    code = textwrap.dedent("""
        import resource, time, numpy as np, rif_native as rn
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, resource.RLIM_INFINITY))
        X = np.ones((100, 20000), dtype=np.float32); y = np.zeros(100)
        t = time.perf_counter()
        try:
            rn.Attribution(X, y, np.zeros(20000), l2=1.0)
        except MemoryError as e:
            print("MemoryError", round(time.perf_counter() - t, 3), e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-2000:]
    assert last.startswith("MemoryError"), last
    assert float(last.split()[1]) < 1.0, last
    assert "ulimit -v" in last and "GiB" in last


class _BadInterface:
    __cuda_array_interface__ = "abc"


class _PartialInterface:
    __cuda_array_interface__ = {"shape": (3, 2)}


class _BadDlpack:
    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self):
        return "not a capsule"


@pytest.mark.parametrize("fake", [_BadInterface, _PartialInterface, _BadDlpack])
def test_fake_gpu_arrays_get_a_clear_error(fake):
    with pytest.raises(TypeError) as info:
        rn.Attribution(fake(), np.zeros(3), np.zeros(2), l2=1.0)
    msg = _one_line(info.value)
    assert fake.__name__ in msg and ("__cuda_array_interface__" in msg or "DLPack" in msg)
