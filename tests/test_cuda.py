"""The CUDA backend: the same answers as the CPU backend (float64 relative error <= 1e-10,
float32 X too), and clear errors where there is no GPU. GPU tests skip cleanly without one."""

import numpy as np
import pytest

import rif_native as rn

needs_gpu = pytest.mark.skipif(not rn.cuda_available(), reason="no usable CUDA device")


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def test_backend_choice_without_a_gpu(monkeypatch):
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(float)
    assert rn.Attribution(X, y, np.zeros(3), l2=1.0, backend="cpu").backend == "cpu"
    expected = "cuda" if rn.cuda_available() else "cpu"
    assert rn.Attribution(X, y, np.zeros(3), l2=1.0, backend="auto").backend == expected
    monkeypatch.setenv("RIF_BACKEND", "cpu")
    assert rn.Attribution(X, y, np.zeros(3), l2=1.0).backend == "cpu"
    monkeypatch.setenv("RIF_BACKEND", "gpu")
    with pytest.raises(ValueError, match="RIF_BACKEND"):
        rn.Attribution(X, y, np.zeros(3), l2=1.0)
    with pytest.raises(ValueError, match="backend"):
        rn.Attribution(X, y, np.zeros(3), l2=1.0, backend="tpu")
    if not rn.cuda_available():
        with pytest.raises(RuntimeError, match="backend 'cuda' was asked for"):
            rn.Attribution(X, y, np.zeros(3), l2=1.0, backend="cuda")
    assert rn.build_info()["cuda"] in (True, False)


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("family, fit_intercept", [("logistic", True), ("poisson", False),
                                                   ("squared", True)])
def test_gpu_matches_cpu(dtype, family, fit_intercept):
    rng = np.random.default_rng(3)
    n, d = 3000, 200
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    z = X.astype(float) @ rng.standard_normal(d)
    y = {"logistic": (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float),
         "poisson": rng.poisson(np.exp(0.3 * z)).astype(float),
         "squared": z + rng.standard_normal(n)}[family]
    kw = dict(l2=0.5, family=family, fit_intercept=fit_intercept)
    theta = rn.fit(X, y, **kw).theta
    cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    gpu = rn.Attribution(X, y, theta, backend="cuda", **kw)
    assert gpu.backend == "cuda"
    assert rel(gpu.leverage, cpu.leverage) <= 1e-10
    assert rel(gpu.hessian(), cpu.hessian()) <= 1e-10
    v = rng.standard_normal(cpu.n_params)
    assert rel(gpu.scores(v), cpu.scores(v)) <= 1e-10
    assert rel(gpu.rescaled_influence([0, 5, 7]), cpu.rescaled_influence([0, 5, 7])) <= 1e-10
    sets = [rng.choice(n, 30, replace=False) for _ in range(3)]
    assert rel(gpu.group_effect(sets, "ns"), cpu.group_effect(sets, "ns")) <= 1e-10
    assert abs(gpu.gradient_norm - cpu.gradient_norm) <= 1e-8 * max(1.0, cpu.gradient_norm)


@needs_gpu
def test_gpu_reports_a_singular_hessian():
    X = np.zeros((20, 3))
    X[:, 0] = 1.0
    with pytest.raises(rn.NotPositiveDefiniteError, match="l2"):
        rn.Attribution(X, np.zeros(20), np.zeros(3), l2=0.0, family="squared", backend="cuda")
