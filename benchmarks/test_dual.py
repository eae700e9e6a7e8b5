"""The dual path for n < p (rif/dual.hpp) against the primal one and the SciPy pipeline, on
Table 2's unit of work (Attribution, the leverages and every sample's RIF score on one metric).
Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks/test_dual.py`` and
compare the rows of each group; the sweep at d = 2048 shows where the dual stops paying."""

import numpy as np
import pytest

from rif_native import Attribution
from rif_native import benchmark as rb

D = 2048


def _run(p, solver):
    A = Attribution(p.X, p.y, p.theta, l2=p.l2, solver=solver)
    return A.leverage, A.scores(p.v, method="rif")


def _bench(benchmark, p, row, rounds=3):
    fn = rb.scipy_pipeline if row == "scipy" else (lambda q: _run(q, row))
    got = benchmark.pedantic(fn, args=(p,), rounds=rounds, iterations=1, warmup_rounds=1)
    want = _run(p, "primal")
    for g, w in zip(got, want):
        assert np.abs(g - w).max() <= 1e-8 * max(1.0, np.abs(w).max())


@pytest.mark.parametrize("row", ["auto", "primal", "scipy"])
@pytest.mark.parametrize("n", [500, 1800], ids=["n500", "DogFish"])
def test_dual_goal_shapes(benchmark, n, row):
    benchmark.group = f"dual path: {n} x {D}"
    _bench(benchmark, rb.make_problem(n, D, seed=1), row)


@pytest.mark.parametrize("row", ["dual", "primal"])
@pytest.mark.parametrize("n", [256, 512, 1024, 1536, 2048, 4096, 8192])
def test_dual_sweep(benchmark, n, row):
    benchmark.group = f"dual sweep: n = {n}, d = {D}"
    _bench(benchmark, rb.make_problem(n, D, seed=2), row, rounds=1 if n >= 4096 else 3)


@pytest.mark.parametrize("row", ["dual", "primal"])
def test_dual_influence_rows(benchmark, row):
    """Every sample's IF row (n x p): on the dual path one triangular pair with G per sample
    and a product with Y (solve_samples), against H's factor and its p x p solves."""
    benchmark.group = f"influence rows: 1000 x {D}"
    p = rb.make_problem(1000, D, seed=3)
    A = Attribution(p.X, p.y, p.theta, l2=p.l2, solver=row)
    got = benchmark.pedantic(A.influence, rounds=3, iterations=1, warmup_rounds=1)
    want = Attribution(p.X, p.y, p.theta, l2=p.l2, solver="primal").influence()
    assert np.abs(got - want).max() <= 1e-8 * np.abs(want).max()
