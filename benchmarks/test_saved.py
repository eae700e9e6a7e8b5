"""Loading a saved Attribution (rif_native.saved) against building it: the load reads X once
(z = X theta, to check the data) instead of the Hessian pass, the factorisation and the leverage
pass. Run: ``pytest benchmarks/test_saved.py`` and compare the rows of the group."""

import pytest

import rif_native as rn
from rif_native import benchmark as rb

N, D = 20_000, 1_000


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    p = rb.make_problem(N, D, seed=2)
    path = tmp_path_factory.mktemp("saved") / "attribution.npz"
    rn.Attribution(p.X, p.y, p.theta, l2=p.l2).save(path, include_x=False)
    return p, path


@pytest.mark.parametrize("how", ["build", "load"])
def test_build_or_load(benchmark, saved, how):
    p, path = saved
    benchmark.group = f"Attribution of {N} x {D}: built, or loaded from its file"
    if how == "build":
        fn = lambda: rn.Attribution(p.X, p.y, p.theta, l2=p.l2)  # noqa: E731
    else:
        fn = lambda: rn.Attribution.load(path, p.X)  # noqa: E731
    A = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
    assert A.n == N
