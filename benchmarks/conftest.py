"""Benchmarks: pytest-benchmark, kept apart from the tests (run: pytest benchmarks).

For a fair NumPy/SciPy baseline run them with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in
that command only, e.g. ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks``.
Each group times rif-native and its baselines on the same data in the same process; compare
the rows of a group (pytest-benchmark prints them side by side). As in ``rif benchmark``, the
process keeps freed memory for its next call (rif_native.retain_freed_memory()), for every row
of a group alike: otherwise each call of any of them faults its large arrays in again.
"""

import functools

import pytest

import rif_native as rn
from rif_native import benchmark as rb


def pytest_configure(config):
    rn.retain_freed_memory()


@functools.lru_cache(maxsize=4)
def problem(n, d):
    return rb.make_problem(n, d)


def pytest_report_header(config):
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
                f"threads={i.get('num_threads')}" for i in threadpool_info()]
    except ImportError:  # pragma: no cover
        blas = ["threadpoolctl not installed"]
    return [f"machine: {rb.machine()}", "numpy/scipy BLAS: " + "; ".join(blas),
            f"freed memory retained: {rn.retain_freed_memory()}"]


@pytest.fixture(scope="session")
def gemm_peak():
    return rb.gemm_peak()
