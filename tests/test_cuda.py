"""The CUDA backend: the same answers as the CPU backend (float64 relative error <= 1e-10,
float32 X too), and clear errors where there is no GPU. GPU tests skip cleanly without one."""

import numpy as np
import pytest

import rif_native as rn
from conftest import rel_err as rel  # ||got - ref|| / ||ref||, shapes checked

needs_gpu = pytest.mark.skipif(not rn.cuda_available(), reason="no usable CUDA device")


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
    # solves with the factor kept on the device (potrs), for group sums and solve()
    assert rel(gpu.group_effect(sets, "rif"), cpu.group_effect(sets, "rif")) <= 1e-10
    V = rng.standard_normal((cpu.n_params, 4))
    assert rel(gpu.solve(V), cpu.solve(V)) <= 1e-10
    # retraining's passes and Woodbury solves on the device, refreshes on the CPU
    assert rel(gpu.retrain(sets).theta, cpu.retrain(sets).theta) <= 1e-9
    assert abs(gpu.gradient_norm - cpu.gradient_norm) <= 1e-8 * max(1.0, cpu.gradient_norm)


@needs_gpu
def test_gpu_reports_a_singular_hessian():
    X = np.zeros((20, 3))
    X[:, 0] = 1.0
    with pytest.raises(rn.NotPositiveDefiniteError, match="l2"):
        rn.Attribution(X, np.zeros(20), np.zeros(3), l2=0.0, family="squared", backend="cuda")


# ------------------------------------------------------------------ X already in GPU memory

from rif_native import _device  # noqa: E402


class FakeCudaArray:
    """Stands in for a CuPy / PyTorch device array: only __cuda_array_interface__."""

    def __init__(self, shape, typestr="<f8", strides=None, ptr=0x7F0000000000, mask=None):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "strides": strides,
                                         "data": (ptr, False), "version": 3, "mask": mask}


class FakeDlpack:
    """A DLPack producer that reports a CUDA device but exports a host array's capsule (enough
    to check how the capsule is read, without a GPU)."""

    def __init__(self, arr, device_type=2):
        self.arr, self.device_type = arr, device_type

    def __dlpack_device__(self):
        return (self.device_type, 0)

    def __dlpack__(self, stream=None):
        return self.arr.__dlpack__()


def test_cuda_array_interface_is_read():
    m = _device.device_matrix(FakeCudaArray((7, 3), "<f4", ptr=1236))
    assert (m.ptr, m.rows, m.cols, m.f32) == (1236, 7, 3, True)
    m = _device.device_matrix(FakeCudaArray((7, 3), "<f8", strides=(24, 8)))
    assert (m.rows, m.cols, m.f32) == (7, 3, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _device.device_matrix(FakeCudaArray((7, 3), "<f8", strides=(8, 56)))
    with pytest.raises(TypeError, match="element type"):
        _device.device_matrix(FakeCudaArray((7, 3), "<i8"))
    with pytest.raises(ValueError, match="2-D"):
        _device.device_matrix(FakeCudaArray((7, 3, 2)))
    with pytest.raises(ValueError, match="mask"):
        _device.device_matrix(FakeCudaArray((7, 3), mask=(5, False)))
    # one row with a column stride (X[0:1, ::2]) is not contiguous; one column may have any
    # row stride only when it is the item size
    with pytest.raises(ValueError, match="C-contiguous"):
        _device.device_matrix(FakeCudaArray((1, 5), "<f8", strides=(80, 16)))
    assert _device.device_matrix(FakeCudaArray((1, 5), "<f8", strides=(800, 8))).cols == 5
    assert _device.device_matrix(FakeCudaArray((4, 1), "<f8", strides=(8, 64))).rows == 4
    with pytest.raises(ValueError, match="multiple of its element size"):
        _device.device_matrix(FakeCudaArray((7, 3), "<f8", ptr=1236))
    assert _device.device_matrix(np.zeros((3, 2))) is None
    assert _device.device_matrix([[1.0, 2.0]]) is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dlpack_capsule_is_read(dtype):
    arr = np.arange(12, dtype=dtype).reshape(3, 4)
    m, device_type = _device.dlpack_matrix(arr.__dlpack__(), arr)
    assert device_type == 1  # host memory: the CPU
    assert (m.ptr, m.rows, m.cols, m.f32) == (arr.ctypes.data, 3, 4, dtype == np.float32)
    m = _device.device_matrix(FakeDlpack(arr))
    assert (m.ptr, m.rows, m.cols) == (arr.ctypes.data, 3, 4)
    assert _device.device_matrix(FakeDlpack(arr, device_type=1)) is None
    with pytest.raises(ValueError, match="C-contiguous"):
        _device.device_matrix(FakeDlpack(np.asfortranarray(arr)))
    with pytest.raises(TypeError, match="element type"):
        _device.device_matrix(FakeDlpack(arr.astype(np.int32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        _device.device_matrix(FakeDlpack(arr[0:1, ::2]))
    m = _device.device_matrix(FakeDlpack(arr[1:]))  # a row offset keeps it contiguous
    assert (m.ptr, m.rows) == (arr[1:].ctypes.data, 2)


def test_device_inputs_without_a_gpu_give_clear_errors():
    X = FakeCudaArray((40, 3))
    y, theta = np.zeros(40), np.zeros(3)
    with pytest.raises(ValueError, match="CPU backend cannot read"):
        rn.Attribution(X, y, theta, l2=1.0, backend="cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        rn.Attribution(X, y, theta, l2=1.0, backend="gpu")
    if not rn.cuda_available():
        with pytest.raises(RuntimeError, match="backend 'cuda' was asked for"):
            rn.Attribution(X, y, theta, l2=1.0)
        with pytest.raises(RuntimeError, match="backend 'cuda' was asked for"):
            rn.leverage(X, y, theta, l2=1.0, backend="auto")
    with pytest.raises(TypeError, match="GPU memory"):
        rn.fit(X, y, l2=1.0)
    Xh = np.random.default_rng(0).standard_normal((40, 3))
    with pytest.raises(TypeError, match="y is in GPU memory"):
        rn.Attribution(Xh, FakeCudaArray((40,)), theta, l2=1.0)


def _device_libraries():
    """Device-array makers for the libraries present (CuPy, PyTorch), each with a DLPack-only
    variant, as (name, to_device) pairs."""
    makers = []
    try:
        import cupy as cp

        makers.append(("cupy", cp.asarray))
        makers.append(("cupy-dlpack", lambda a: _DlpackOnly(cp.asarray(a))))
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        pass
    try:
        import torch

        if torch.cuda.is_available():
            makers.append(("torch", lambda a: torch.as_tensor(a, device="cuda")))
            makers.append(("torch-dlpack", lambda a: _DlpackOnly(torch.as_tensor(a, device="cuda"))))
    except Exception:  # noqa: BLE001
        pass
    return makers


class _DlpackOnly:
    """Hides __cuda_array_interface__ so that the DLPack path is taken."""

    def __init__(self, inner):
        self.inner = inner

    def __dlpack__(self, stream=None):
        return self.inner.__dlpack__()

    def __dlpack_device__(self):
        return self.inner.__dlpack_device__()


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_device_x_matches_host_x(dtype):
    makers = _device_libraries()
    if not makers:
        pytest.skip("neither CuPy nor PyTorch with CUDA is installed")
    rng = np.random.default_rng(5)
    n, d = 2500, 150
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    y = (rng.random(n) < 0.4).astype(float)
    kw = dict(l2=0.7, fit_intercept=True)
    theta = rn.fit(X, y, **kw).theta
    cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    v = rng.standard_normal((cpu.n_params, 2))
    sets = [rng.choice(n, 20, replace=False) for _ in range(2)]
    for name, to_device in makers:
        gpu = rn.Attribution(to_device(X), y, theta, backend="cuda", **kw)
        assert rel(gpu.leverage, cpu.leverage) <= 1e-10, name
        assert rel(gpu.scores(v), cpu.scores(v)) <= 1e-10, name
        assert rel(gpu.hessian(), cpu.hessian()) <= 1e-10, name
        # IF / RIF rows on the device, from X in place: no host copy
        assert rel(gpu.rescaled_influence(), cpu.rescaled_influence()) <= 1e-10, name
        assert rel(gpu.influence([1, 2]), cpu.influence([1, 2])) <= 1e-10, name
        assert gpu._core.rows_on_device and not gpu._core.has_host_data, name
        # group effects and Newton steps gather their sets' rows on the device
        assert rel(gpu.group_effect(sets, "ns"), cpu.group_effect(sets, "ns")) <= 1e-10, name
        assert rel(gpu.group_effect(sets, "rif"), cpu.group_effect(sets, "rif")) <= 1e-10, name
        big = [rng.choice(n, cpu.n_params, replace=False)]  # k > p/2: a fresh factor of H_{-T}
        assert rel(gpu.group_effect(big, "ns"), cpu.group_effect(big, "ns")) <= 1e-10, name
        assert not gpu._core.has_host_data, name
        # retraining copies X to host memory once
        assert rel(gpu.retrain(sets[0]).theta, cpu.retrain(sets[0]).theta) <= 1e-9, name
        assert gpu._core.has_host_data, name


def test_cuda_backend_agrees_with_the_core_on_memory_layout():
    """Eigen objects cross between the CUDA file and the C++ files: both must be compiled for
    the same SIMD level (checked without a GPU, so CI's CUDA build checks it)."""
    assert rn._core.cuda_layout_matches()


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("keep", ["1", "0"])
def test_many_row_blocks_resident_or_streamed(monkeypatch, dtype, keep):
    """Seven row blocks, the last one partial (RIF_CUDA_BLOCK_ROWS=450, n = 3001): the
    double-buffered staging and its events, with X kept in device memory (keep=1) or streamed on
    every pass (RIF_CUDA_KEEP_X=0); same answers as the CPU."""
    rng = np.random.default_rng(6)
    n, d = 3001, 120
    X = (rng.standard_normal((n, d)) / np.sqrt(d)).astype(dtype)
    y = (rng.random(n) < 0.5).astype(float)
    w = rng.uniform(0.5, 2.0, n)
    w[rng.choice(n, 50, replace=False)] = 0.0  # removed samples: no residual, no curvature
    kw = dict(l2=1.0, sample_weight=w, fit_intercept=True)
    theta = rn.fit(X, y, **kw).theta
    v = rng.standard_normal((d + 1, 3))
    cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    monkeypatch.setenv("RIF_CUDA_BLOCK_ROWS", "450")
    monkeypatch.setenv("RIF_CUDA_GRADIENT_ROWS", "100")  # retraining's sub-blocks: 5 per block
    monkeypatch.setenv("RIF_CUDA_KEEP_X", keep)
    gpu = rn.Attribution(X, y, theta, backend="cuda", **kw)
    assert rel(gpu.leverage, cpu.leverage) <= 1e-10
    assert rel(gpu.scores(v), cpu.scores(v)) <= 1e-10
    assert abs(gpu.gradient_norm - cpu.gradient_norm) <= 1e-8 * max(1.0, cpu.gradient_norm)
    # rows and retraining's passes on the device when X is kept there, else on the CPU
    assert gpu._core.rows_on_device == (keep == "1")
    idx = rng.choice(n, 1000, replace=False)
    assert rel(gpu.rescaled_influence(idx), cpu.rescaled_influence(idx)) <= 1e-10
    sets = [rng.choice(n, k, replace=False) for k in (3, 40, 200)]
    ours, ref = gpu.retrain(sets, tol=1e-12), cpu.retrain(sets, tol=1e-12)
    assert ours.converged.all()
    assert rel(ours.theta, ref.theta) <= 1e-9
    for name, to_device in (_device_libraries()[:1] if keep == "1" else []):  # device X: once
        dev = rn.Attribution(to_device(X), y, theta, backend="cuda", **kw)
        assert rel(dev.leverage, cpu.leverage) <= 1e-10, name
        assert rel(dev.scores(v), cpu.scores(v)) <= 1e-10, name



@needs_gpu
def test_gpu_names_a_nan_row():
    X = np.random.default_rng(7).standard_normal((50, 4))
    X[17, 2] = np.nan
    with pytest.raises(ValueError, match="row 17"):
        rn.Attribution(X, np.zeros(50), np.zeros(4), l2=1.0, backend="cuda")


@needs_gpu
@pytest.mark.parametrize("hessian_kernel", ["syrk", "gemm", "panels"])
@pytest.mark.parametrize("leverage_kernel", ["gemm", "trmm", "trsm", "panels"])
def test_kernel_choices_agree(monkeypatch, hessian_kernel, leverage_kernel):
    """RIF_CUDA_HESSIAN / RIF_CUDA_LEVERAGE pick the device kernels (gpu_bench times them all):
    each gives the CPU's answers; an unknown choice is refused."""
    rng = np.random.default_rng(8)
    n, d = 2000, 600  # p = 601: three row / column panels of 256, the last one partial
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(float)
    kw = dict(l2=0.5, fit_intercept=True)
    theta = rn.fit(X, y, **kw).theta
    cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    monkeypatch.setenv("RIF_CUDA_HESSIAN", hessian_kernel)
    monkeypatch.setenv("RIF_CUDA_LEVERAGE", leverage_kernel)
    monkeypatch.setenv("RIF_CUDA_BLOCK_ROWS", "400")
    v = rng.standard_normal(d + 1)
    makers = [("host, kept", lambda a: a), ("host, streamed", None)] + _device_libraries()[:1]
    for name, to_device in makers:
        monkeypatch.setenv("RIF_CUDA_KEEP_X", "0" if to_device is None else "1")
        gpu = rn.Attribution(X if to_device is None else to_device(X), y, theta,
                             backend="cuda", **kw)
        assert rel(gpu.leverage, cpu.leverage) <= 1e-10, name
        assert rel(gpu.scores(v), cpu.scores(v)) <= 1e-10, name
        assert rel(gpu.rescaled_influence([3, 9]), cpu.rescaled_influence([3, 9])) <= 1e-10, name
        assert rel(gpu.hessian(), cpu.hessian()) <= 1e-10, name
        sets = [rng.choice(n, 5, replace=False) for _ in range(40)]  # >= threads: parallel NS
        assert rel(gpu.group_effect(sets, "ns"), cpu.group_effect(sets, "ns")) <= 1e-10, name
    monkeypatch.setenv("RIF_CUDA_LEVERAGE", "magic")
    with pytest.raises(ValueError, match="RIF_CUDA_LEVERAGE must be one of gemm, trmm, trsm"):
        rn.Attribution(X, y, theta, backend="cuda", **kw)


@needs_gpu
def test_large_sets_on_device_x(monkeypatch):
    """A set larger than a row block (600 > 450) on X in GPU memory: its rows gathered in two
    chunks for the direct Newton-step path (600 > p / 2), its sums in three chunks of 250."""
    makers = _device_libraries()
    if not makers:
        pytest.skip("neither CuPy nor PyTorch with CUDA is installed")
    rng = np.random.default_rng(9)
    n, d = 3001, 120
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(float)
    kw = dict(l2=1.0, fit_intercept=True)
    theta = rn.fit(X, y, **kw).theta
    cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    monkeypatch.setenv("RIF_CUDA_BLOCK_ROWS", "450")
    monkeypatch.setenv("RIF_CUDA_ACCUMULATE_ROWS", "250")
    big = [rng.choice(n, 600, replace=False), rng.choice(n, 7, replace=False)]
    for name, to_device in makers:
        dev = rn.Attribution(to_device(X), y, theta, backend="cuda", **kw)
        for method in ("ns", "if", "rif"):
            assert rel(dev.group_effect(big, method), cpu.group_effect(big, method)) <= 1e-10, \
                (name, method)
        assert not dev._core.has_host_data, name


@needs_gpu
@pytest.mark.parametrize("columns", ["1", "60", None])
def test_woodbury_batches_on_the_device(monkeypatch, columns):
    """Small sets' Newton steps and retraining steps through the Woodbury panel kept in device
    memory (X kept there): Newton steps in batches of one set, a few, or all
    (RIF_WOODBURY_COLUMNS; retraining takes all its sets in one), empty sets, a sample in two
    sets, and a set whose removal makes H singular (inf on both backends); the same answers as
    the CPU."""
    if columns:
        monkeypatch.setenv("RIF_WOODBURY_COLUMNS", columns)
    rng = np.random.default_rng(10)
    n, d = 1500, 80
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    X[:, -1] = 0.0
    J = 321
    X[J, -1] = 1.0  # the only sample with this feature: h_J = 1 without a penalty
    y = X[:, :5].sum(axis=1) + rng.standard_normal(n)
    kw = dict(l2=0.0, family="squared")
    theta = rn.fit(X, y, **kw).theta
    with pytest.warns(rn.SingularRemovalWarning):
        cpu = rn.Attribution(X, y, theta, backend="cpu", **kw)
    with pytest.warns(rn.SingularRemovalWarning):
        gpu = rn.Attribution(X, y, theta, backend="cuda", **kw)
    assert gpu._core.rows_on_device
    sets = [rng.choice(np.delete(np.arange(n), J), k, replace=False)
            for k in (5, 0, 1, 40, 17, 3, 0, 30)]
    sets[5] = sets[0][:3].copy()
    sets.append(np.array([J, 4, 9]))
    assert gpu._core.device_panels == 0
    with pytest.warns(rn.SingularRemovalWarning):
        ours = gpu.group_effect(sets, "ns")
    batches = {"1": len(sets), "60": 2, None: 1}[columns]  # 9 sets of 108 columns in all
    assert gpu._core.device_panels == batches, "the panels were built on the device"
    with pytest.warns(rn.SingularRemovalWarning):
        ref = cpu.group_effect(sets, "ns")
    assert np.all(np.isinf(ours[-1])) and np.all(np.isinf(ref[-1]))
    assert np.all(ours[[1, 6]] == 0)
    assert rel(ours[:-1], ref[:-1]) <= 1e-10
    finite = sets[:-1]
    a, b = gpu.retrain(finite, tol=1e-12), cpu.retrain(finite, tol=1e-12)
    assert gpu._core.device_panels == batches + 1
    assert a.converged.all()
    assert rel(a.theta, b.theta) <= 1e-9
