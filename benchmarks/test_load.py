"""Speed on a busy machine: the default thread count (num_threads=None) against one thread and
against every core, while two competing processes keep the CPUs busy, and the same without
load. The default takes the cores that no other process keeps busy, so under load it should
be within 1.2x of one thread, and idle as fast as every core.

The load is started here: two local Python processes spinning for at most LOAD_SECONDS, ended
at the end of the module. Run: ``pytest benchmarks/test_load.py`` (the rows of each group side
by side; `rif_native._core.default_threads()` is recorded in extra_info)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import rif_native as rn
from rif_native import _core
from rif_native import benchmark as rb

LOAD_SECONDS = 300
N, D = 4000, 1500  # the main job's shape class (SMS Spam: 4136 x 1500)
CORES = int(rn.build_info()["max_threads"])


@pytest.fixture(scope="module")
def problem():
    return rb.make_problem(N, D, seed=5)


@pytest.fixture(scope="module")
def load():
    spin = (f"import time\nend = time.time() + {LOAD_SECONDS}\n"
            "while time.time() < end:\n    pass\n")
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(2)]
    time.sleep(1.0)  # let the scheduler see them
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _fit(problem, threads):
    return rn.fit(problem.X, problem.y, l2=problem.l2, fit_intercept=True, num_threads=threads)


def _run(benchmark, problem, group, threads):
    benchmark.group = group
    benchmark.extra_info["default_threads"] = int(_core.default_threads())
    benchmark.extra_info["load_per_core"] = os.getloadavg()[0] / CORES
    res = benchmark.pedantic(_fit, args=(problem, threads), rounds=3, iterations=1,
                             warmup_rounds=1)
    assert res.converged


@pytest.mark.parametrize("threads", [None, 1, CORES], ids=["default", "one", "all"])
def test_fit_idle(benchmark, problem, threads):
    _run(benchmark, problem, "fit, idle", threads)


@pytest.mark.parametrize("threads", [None, 1, CORES], ids=["default", "one", "all"])
def test_fit_under_load(benchmark, problem, load, threads):
    _run(benchmark, problem, "fit, two competing busy processes", threads)
    assert all(p.poll() is None for p in load), "the load ended during the measurement"
    if threads is None:
        assert np.isfinite(_fit(problem, None).theta).all()
