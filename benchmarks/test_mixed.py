"""precision="mixed" against the float64 path on the same float32 X, in one run each group.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_mixed.py

Groups: attribution (leverages + RIF scores on one metric) at the CatDog (9600 x 2048) and IMDB
(40000 x 512) shapes, and ``fit`` at the CatDog shape (l2 = 1, an intercept, tol 1e-10). The
extra_info of each mixed row holds its error against the float64 row (leverage and scores
relative to their largest value; the fit's distance in theta and both gradient norms). Accuracy
over a range of conditioning: ``python benchmarks/mixed_precision.py``.
"""

import functools

import numpy as np
import pytest

import rif_native as rn
from rif_native import benchmark as rb

PRECISIONS = ["double", "mixed"]


@functools.lru_cache(maxsize=2)
def float32_problem(shape):
    return rb.make_problem(*rb.SHAPES[shape], dtype=np.dtype(np.float32))


@functools.lru_cache(maxsize=4)
def attribute(shape, precision):
    p = float32_problem(shape)
    A = rn.Attribution(p.X, p.y, p.theta, l2=p.l2, precision=precision, num_threads=2)
    assert A.precision == precision
    return A.leverage, A.scores(p.v, method="rif")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", ["CatDog", "IMDB"])
def test_attribution(benchmark, shape, precision):
    benchmark.group = f"precision: attribution {shape} float32"
    attribute.cache_clear()
    h, s = benchmark.pedantic(attribute.__wrapped__, args=(shape, precision), rounds=3,
                              iterations=1, warmup_rounds=1)
    h64, s64 = attribute(shape, "double")
    benchmark.extra_info["leverage_error"] = float(np.abs(h - h64).max() / np.abs(h64).max())
    benchmark.extra_info["score_error"] = float(np.abs(s - s64).max() / np.abs(s64).max())


@functools.lru_cache(maxsize=1)
def labels(shape):
    """Labels from a planted model at a scale where the fit takes several Newton steps."""
    p = float32_problem(shape)
    rng = np.random.default_rng(1)
    w = rng.standard_normal(p.X.shape[1]) * 3
    return (rng.random(len(p.y)) < 1 / (1 + np.exp(-p.X @ w))).astype(np.float64)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_fit(benchmark, precision):
    benchmark.group = "precision: fit CatDog float32"
    p = float32_problem("CatDog")
    y = labels("CatDog")
    res = benchmark.pedantic(rn.fit, args=(p.X, y),
                             kwargs=dict(l2=1.0, fit_intercept=True, tol=1e-10, num_threads=2,
                                         precision=precision),
                             rounds=2, iterations=1, warmup_rounds=0)
    assert res.converged
    ref = rn.fit(p.X, y, l2=1.0, fit_intercept=True, tol=1e-10, num_threads=2)
    benchmark.extra_info.update(n_iter=res.n_iter, grad_norm=res.grad_norm,
                                theta_distance=float(np.linalg.norm(res.theta - ref.theta)),
                                float64_grad_norm=ref.grad_norm)
