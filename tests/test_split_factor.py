"""The factor and the inverse factor on two threads for 256 <= p < 1024 (each half on its own
thread, then the products that join them split between the threads): leverages and RIF rows
equal the float64 NumPy reference (conftest.Reference) on one thread and on two, on both
leverage paths (the inverse factor for n >= 3p, triangular solves below), and a singular H
names the failing column wherever it lies. On one thread, and from p = 1024 on two, the inverse
factor is built by halves (the products on the BLAS's threads), each half again by halves down
to 64 columns: leverages at p = 1100 (with OpenBLAS; Eigen's triangular solve otherwise)."""

import sys
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import Reference, assert_close, derivatives  # noqa: E402


@pytest.mark.parametrize("p", [256, 301, 513, 777])
@pytest.mark.parametrize("ratio", [2.0, 3.5])  # the triangular-solve and inverse-factor paths
@pytest.mark.parametrize("threads", [1, 2])
def test_leverage_and_rows_match_numpy(rng, p, ratio, threads):
    n = int(ratio * p)
    X = rng.standard_normal((n, p)) / np.sqrt(p) + rng.uniform(-1, 1, p)
    y = (rng.random(n) < 0.5).astype(float)
    theta = 0.3 * rng.standard_normal(p)
    ref = Reference(X, y, theta, l2=0.5)
    A = rn.Attribution(X, y, theta, l2=0.5, num_threads=threads)
    assert_close(A.leverage, ref.h, 1e-9, f"leverage p={p} n={n} threads={threads}")
    rows = rng.choice(n, 5, replace=False)
    assert_close(A.rescaled_influence(rows), ref.RIF[rows], 1e-8, "RIF rows")


@pytest.mark.parametrize("threads", [1, 2])
def test_inverse_factor_by_halves_above_1024(rng, threads):
    p = 1100
    n = int(3.5 * p)  # n >= 3p: the leverage pass multiplies by the inverse factor
    X = rng.standard_normal((n, p)) / np.sqrt(p) + rng.uniform(-1, 1, p)
    y = (rng.random(n) < 0.5).astype(float)
    theta = 0.3 * rng.standard_normal(p)
    _, a = derivatives("logistic", y, X @ theta, np.ones(n))
    H = X.T @ (a[:, None] * X) + 0.5 * np.eye(p)
    h = a * np.einsum("ij,ji->i", X, np.linalg.solve(H, X.T))
    A = rn.Attribution(X, y, theta, l2=0.5, num_threads=threads)
    assert_close(A.leverage, h, 1e-9, f"leverage p={p} n={n} threads={threads}")


@pytest.mark.parametrize("column", [7, 300, 598])  # in the first half, just past it, the last
def test_a_singular_hessian_names_its_column(rng, column):
    X = rng.standard_normal((1500, 600))
    X[:, column] = 0.0  # that pivot of H is exactly 0 in any order of summation
    y = rng.standard_normal(1500)
    for threads in (1, 2):
        with pytest.raises(rn.NotPositiveDefiniteError, match=rf"pivot of column {column} is 0"):
            rn.Attribution(X, y, np.zeros(600), l2=0.0, family="squared", num_threads=threads)
