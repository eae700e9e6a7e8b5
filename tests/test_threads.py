"""Threading: num_threads=1 and 2 agree, and concurrent Python threads get the result of one.

Tolerance: norm-wise relative error <= 1e-12 (per row for (n, p) / (m, p) results, whole array
for leverage, scores and theta).  The problem is big enough (n = 10000) to span several row blocks,
so a parallel reduction really runs with 2 threads.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rif_native as rn
from conftest import Reference, assert_close, derivatives, make_problem

RTOL = 1e-12


@pytest.fixture
def problem(rng, seed):
    return make_problem(rng, "logistic", n=10000, d=20, fit_intercept=True, weighted=True, l2=1.0,
                        seed=seed)


def _sets(rng, n, p):
    return [rng.choice(n, size=k, replace=False) for k in (1, 4, p // 2 + 3, 3 * p, 500)]


def _everything(P, sets, V, num_threads):
    A = rn.Attribution(P.X, P.y, P.theta, num_threads=num_threads, **P.kw)
    return {
        "leverage": A.leverage,
        "leverage_fn": rn.leverage(P.X, P.y, P.theta, num_threads=num_threads, **P.kw),
        "rif": A.rescaled_influence(),
        "rif_fn": rn.rescaled_influence(P.X, P.y, P.theta, num_threads=num_threads, **P.kw),
        "scores": A.scores(V),
        "ns": A.group_effect(sets, method="ns"),
        "ns_fn": rn.newton_step(P.X, P.y, P.theta, sets, num_threads=num_threads, **P.kw),
        "hessian": A.hessian(),
        "fit": rn.fit(P.X, P.y, tol=1e-12, num_threads=num_threads, **P.kw).theta,
    }


ROWWISE = {"rif", "rif_fn", "ns", "ns_fn"}


def _compare(got, ref, seed, label):
    for key in ref:
        if key == "scores":
            assert_close(got[key].T, ref[key].T, RTOL, f"{label}: scores per column", seed)
        else:
            assert_close(got[key], ref[key], RTOL, f"{label}: {key}", seed,
                         rowwise=key in ROWWISE)


def test_one_vs_two_threads(problem, rng, seed):
    P = problem
    sets = _sets(rng, P.n, P.p)
    V = rng.standard_normal((P.p, 2))
    one = _everything(P, sets, V, 1)
    two = _everything(P, sets, V, 2)
    _compare(two, one, seed, "num_threads=2 vs 1")
    default = _everything(P, sets, V, None)
    _compare(default, one, seed, "num_threads=None vs 1")
    # the 1-thread results are right, not merely reproducible
    assert_close(one["leverage"], P.ref.h, 1e-9, "leverage vs reference", seed)


def test_concurrent_python_threads_functions(problem, rng, seed):
    """Two Python threads running the same calls at once (the GIL is released in the kernel)."""
    P = problem
    sets = _sets(rng, P.n, P.p)
    V = rng.standard_normal((P.p, 2))
    ref = _everything(P, sets, V, 2)
    barrier = threading.Barrier(2)

    def work(_):
        barrier.wait()
        return _everything(P, sets, V, 2)

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(work, range(2)))
    for k, res in enumerate(results):
        _compare(res, ref, seed, f"python thread {k}")


def test_concurrent_queries_on_one_attribution(problem, rng, seed):
    """One Attribution object queried from two Python threads at once."""
    P = problem
    A = rn.Attribution(P.X, P.y, P.theta, num_threads=1, **P.kw)
    sets = _sets(rng, P.n, P.p)
    V = rng.standard_normal((P.p, 3))
    idx = rng.choice(P.n, size=200, replace=False)

    def queries():
        return {
            "scores": A.scores(V),
            "ns": A.group_effect(sets, method="ns"),
            "rif": A.rescaled_influence(idx),
            "solve": A.solve(V).T,
            "leverage": A.leverage,
        }

    ref = queries()
    barrier = threading.Barrier(2)

    def work(_):
        barrier.wait()
        return [queries() for _ in range(3)]

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = [r for batch in ex.map(work, range(2)) for r in batch]
    for k, res in enumerate(results):
        for key in ref:
            rowwise = key in ("ns", "rif", "solve")
            got, want = (res[key].T, ref[key].T) if key == "scores" else (res[key], ref[key])
            assert_close(got, want, RTOL, f"shared Attribution, call {k}: {key}", seed,
                         rowwise=rowwise or key == "scores")


def test_one_set_with_wide_factor_splits_solves(rng, seed):
    """With one set and p >= 512, the Woodbury set-up and the triangular vector solves of NS,
    retrain and fit are split over the threads (panel by panel): same answers as one thread,
    and right against the dense NumPy reference (NS at 1e-9, retrain at the reference's
    stationarity)."""
    P = make_problem(rng, "logistic", n=1500, d=700, fit_intercept=True, l2=2.0, seed=seed)
    T = rng.choice(P.n, size=9, replace=False)
    out = {}
    for t in (1, 2):
        A = rn.Attribution(P.X, P.y, P.theta, num_threads=t, **P.kw)
        out[t] = {
            "ns": A.group_effect([T], method="ns"),
            "retrain": A.retrain(T, tol=1e-12).theta,
            "fit": rn.fit(P.X, P.y, tol=1e-12, num_threads=t, **P.kw).theta,
        }
    for key in ("ns", "retrain", "fit"):
        assert_close(out[2][key], out[1][key], 1e-11, f"one set, p = 701: {key}, 2 vs 1 threads",
                     seed, rowwise=False)
    assert_close(out[2]["ns"][0], P.ref.ns(T), 1e-9, "NS vs dense reference", seed)
    keep = np.setdiff1d(np.arange(P.n), T)
    ref = Reference(P.X[keep], P.y[keep], out[2]["retrain"], **P.kw)
    at_zero = Reference(P.X[keep], P.y[keep], np.zeros(P.p), **P.kw)
    assert np.linalg.norm(ref.grad) <= 1e-10 * max(1.0, np.linalg.norm(at_zero.grad))


@pytest.mark.parametrize("weighted", [False, True])
def test_repeated_calls_give_the_same_bits(weighted):
    """With a fixed thread count the same call gives the same bits every time: the sums over
    rows (the column means that centre X, the Hessian, the gradients) are kept per fixed range
    of row blocks, not per thread over blocks handed out as threads come free. n spans five
    row blocks at d = 50."""
    rng = np.random.default_rng(41)
    n, d = 20000, 50
    X = rng.standard_normal((n, d)) + rng.uniform(-3, 3, d)
    y = (rng.random(n) < 0.5).astype(float)
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    theta = rng.standard_normal(d + 1) * 0.1
    seen = set()
    for _ in range(8):
        A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, sample_weight=w,
                           num_threads=2)
        fitted = rn.fit(X, y, l2=1.0, fit_intercept=True, sample_weight=w, num_threads=2,
                        solver="newton", tol=1e-12)
        seen.add(A.residuals.tobytes() + A.leverage.tobytes() + A.scores(theta).tobytes() +
                 A.hessian().tobytes() + fitted.theta.tobytes())
        _ = [np.random.default_rng(k).random(5000) for k in range(4)]  # memory reused between
    assert len(seen) == 1


@pytest.mark.slow
@pytest.mark.skipif(rn.build_info()["max_threads"] < 2
                    or not rn.build_info()["blas"].startswith("OpenBLAS"),
                    reason="the two ways of threading need OpenBLAS and two cores")
@pytest.mark.parametrize("n", [32 * 1024 - 1, 32 * 1024])
def test_wide_passes_either_way_of_threading(rng, n, tmp_path):
    """p = 1024 with 2 threads: below n = 32 p each BLAS call is threaded inside OpenBLAS, from
    there each thread sums its own row blocks into a partial Hessian. Both against float64 NumPy
    (a Cholesky solve on the whole X), float64 X and, on the per-thread sums, float32 X in
    memory, as a memory-mapped .npy and through the direct reader (X from a source: its blocks
    go to the threads as they come free). H is well conditioned here (l2 = 1, cond below 3):
    1e-12 is about 5e3 eps."""
    from scipy.linalg import cho_solve, solve_triangular

    d = 1024
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    theta = 0.5 * rng.standard_normal(d)
    y = (rng.random(n) < 0.5).astype(float)
    v = rng.standard_normal(d)
    for Xs in (X, X.astype(np.float32)) if n >= 32 * d else (X,):
        Xd = np.asarray(Xs, dtype=np.float64)
        r, a = derivatives("logistic", y, Xd @ theta, np.ones(n))
        L = np.linalg.cholesky(Xd.T @ (a[:, None] * Xd) + np.eye(d))
        h = a * np.sum(solve_triangular(L, Xd.T, lower=True) ** 2, axis=0)
        if_scores = r * (Xd @ cho_solve((L, True), v))
        sources = [Xs]
        if Xs.dtype == np.float32:
            np.save(tmp_path / "x.npy", Xs)
            mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
            sources += [str(tmp_path / "x.npy"), rn.sources.Source([mapped], direct=True)]
            assert "read past the page cache" in repr(sources[-1])
        for src in sources:
            what = f"n = {n}, {Xs.dtype}, {type(src).__name__}"
            A = rn.Attribution(src, y, theta, l2=1.0, num_threads=2, progress=False)
            assert_close(A.leverage, h, 1e-12, f"leverage, {what}")
            assert_close(A.scores(v, method="if"), if_scores, 1e-12, f"IF scores, {what}",
                         rowwise=False)
            assert_close(A.scores(v), if_scores / (1.0 - h), 1e-12, f"RIF scores, {what}",
                         rowwise=False)
