"""fit's L-BFGS steps: ``solver="auto"`` takes them first where a Hessian costs many passes
(dense X in memory, p >= 256, n < 512 p), ``"lbfgs"`` always, ``"newton"`` never. Only the steps
change. Every fit here must meet the gradient tolerance by its gradient recomputed in float64
NumPy, and land where the NumPy Newton reference (conftest.newton_fit) lands, within what the
two gradient norms certify: ||theta - theta*|| <= (||g|| + ||g_ref||) / lambda_min(H*), with a
factor 2 for H varying between the points."""

import sys
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn

sys.path.insert(0, str(Path(__file__).parent))
from conftest import gradient, hessian, make_problem, newton_fit  # noqa: E402


def check(res, X, y, tol, **kw):
    """res converged, meets tol by NumPy's gradient, and sits at the reference minimiser."""
    p = res.theta.size
    scale = max(1.0, np.linalg.norm(gradient(X, y, np.zeros(p), **kw)))
    g = np.linalg.norm(gradient(X, y, res.theta, **kw))
    assert res.converged
    # The kernel checked ||g|| <= tol * scale; NumPy's sum rounds differently, by far less than
    # half of these tolerances (>= 1e-9 of the scale).
    assert g <= 1.5 * tol * scale
    ref, ref_norm = newton_fit(X, y, rtol=1e-13, **kw)
    lam = np.linalg.eigvalsh(hessian(X, y, ref, **kw))[0]
    assert np.linalg.norm(res.theta - ref) <= 2 * (g + ref_norm) / lam


def wide(n, d, seed, intercept_shift=0.0):
    """Planted logistic data whose columns differ in scale (0.1 to 10), as embeddings' do."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * np.geomspace(0.1, 10, d) / np.sqrt(d)
    w = rng.standard_normal(d) / np.geomspace(0.1, 10, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w + intercept_shift)))).astype(float)
    return X, y


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("precision", ["double", "mixed"])
def test_auto_starts_with_lbfgs_where_a_hessian_costs_many_passes(intercept, precision):
    X, y = wide(1500, 600, seed=1, intercept_shift=1.0)  # p >= 256, n < 512 p
    kw = dict(l2=1.0, fit_intercept=intercept)
    res = rn.fit(X, y, tol=1e-9, precision=precision, **kw)
    assert res.lbfgs_steps >= 1
    check(res, X, y, 1e-9, **kw)
    newton = rn.fit(X, y, tol=1e-9, precision=precision, solver="newton", **kw)
    assert newton.lbfgs_steps == 0 and newton.hessians >= 1
    check(newton, X, y, 1e-9, **kw)


def test_a_loose_tolerance_is_met_without_a_hessian():
    X, y = wide(1500, 600, seed=2)
    res = rn.fit(X, y, l2=1.0, tol=1e-2)
    assert res.lbfgs_steps >= 1 and res.hessians == 0 and res.sampled_hessians == 0
    check(res, X, y, 1e-2, l2=1.0)


def test_the_spent_budget_hands_over_to_newton():
    """l2 = 1e-4 on strongly correlated columns: the condition number runs to about 1e6, and
    L-BFGS does not reach 1e-10 of the scale within the p / 32 = 18 passes of its budget."""
    rng = np.random.default_rng(3)
    n, d = 1500, 600
    X = rng.standard_normal((n, d)) @ (np.eye(d) + 0.9 * rng.standard_normal((d, d)) / np.sqrt(d))
    X /= np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(float)
    res = rn.fit(X, y, l2=1e-4)
    assert res.lbfgs_steps >= 1 and res.hessians >= 1
    check(res, X, y, 1e-10, l2=1e-4)


@pytest.mark.parametrize("family", ["logistic", "poisson", "squared"])
@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_forced_lbfgs_on_every_family(rng, family, intercept, weighted):
    prob = make_problem(rng, family, n=300, d=12, fit_intercept=intercept, weighted=weighted,
                        l2=0.5)
    kw = {k: v for k, v in prob.kw.items()}
    res = rn.fit(prob.X, prob.y, solver="lbfgs", **kw)
    assert res.lbfgs_steps >= 1
    check(res, prob.X, prob.y, 1e-10, **kw)


def test_forced_lbfgs_from_a_far_start(rng):
    """Poisson from theta0 = 3 per coefficient: z up to about 40 and F about e^40 at the start,
    the curvature (and the diagonal preconditioner taken there) as large: the steps cross many
    orders of magnitude of curvature on their way to the minimiser."""
    prob = make_problem(rng, "poisson", n=400, d=10, l2=1.0)
    theta0 = np.full(10, 3.0)
    res = rn.fit(prob.X, prob.y, solver="lbfgs", theta0=theta0, **prob.kw)
    assert res.lbfgs_steps >= 1
    check(res, prob.X, prob.y, 1e-10, **prob.kw)


def test_no_steps_with_max_iter_zero():
    X, y = wide(600, 520, seed=4)
    theta0 = np.full(520, 0.01)
    with pytest.warns(rn.ConvergenceWarning, match="raise max_iter"):
        res = rn.fit(X, y, l2=1.0, theta0=theta0, max_iter=0, solver="lbfgs")
    assert res.lbfgs_steps == 0 and np.array_equal(res.theta, theta0)


def test_threads_agree(rng):
    X, y = wide(1200, 560, seed=5)
    one = rn.fit(X, y, l2=1.0, num_threads=1)
    two = rn.fit(X, y, l2=1.0, num_threads=2)
    assert one.lbfgs_steps >= 1 and two.lbfgs_steps >= 1
    check(one, X, y, 1e-10, l2=1.0)
    check(two, X, y, 1e-10, l2=1.0)
    lam = np.linalg.eigvalsh(hessian(X, y, one.theta, l2=1.0))[0]
    assert np.linalg.norm(one.theta - two.theta) <= 2 * (one.grad_norm + two.grad_norm) / lam


@pytest.mark.parametrize("d", [300, 1100])  # per-thread BLAS calls; OpenBLAS threads (n < 32 p)
def test_repeated_fits_are_identical(d):
    """Each thread sums a fixed range of rows, added in order: L-BFGS, which amplifies rounding
    differences from step to step, gives the same bits on every run."""
    X, y = wide(2 * d, d, seed=8)
    kw = dict(l2=1.0, solver="lbfgs", num_threads=2, tol=1e-8)  # met before rounding stalls
    first = rn.fit(X, y, **kw)
    assert first.lbfgs_steps >= 1 and first.hessians == 0
    for _ in range(3):
        assert np.array_equal(rn.fit(X, y, **kw).theta, first.theta)


def test_auto_starts_at_p_256():
    """The budget is one Hessian's cost, p / 32 passes, and the phase needs at least 8."""
    X, y = wide(1000, 256, seed=9)
    assert rn.fit(X[:, :255], y, l2=1.0).lbfgs_steps == 0
    assert rn.fit(X, y, l2=1.0).lbfgs_steps >= 1
    assert rn.fit(X[:, :255], y, l2=1.0, fit_intercept=True).lbfgs_steps >= 1  # p = 256


def test_a_singular_problem_at_a_loose_tolerance():
    """l2 = 0 and a duplicated column: minimisers exist but none is unique, and H is singular.
    L-BFGS steps may meet a loose tolerance at one of them without a Hessian; Newton's steps
    raise NotPositiveDefiniteError, as does any Hessian built there."""
    X, y = wide(1500, 600, seed=10)
    X[:, 1] = X[:, 0]
    res = rn.fit(X, y, l2=0.0, tol=1e-2, solver="lbfgs")
    assert res.hessians == 0
    check_gradient_only = np.linalg.norm(gradient(X, y, res.theta))
    assert res.converged and check_gradient_only <= 1.5e-2 * np.linalg.norm(
        gradient(X, y, np.zeros(600)))
    with pytest.raises(rn.NotPositiveDefiniteError):
        rn.fit(X, y, l2=0.0, tol=1e-2, solver="newton")


def test_a_source_is_fitted_by_newton_unless_asked(tmp_path):
    """Passes over a file cost reading it; a Hessian little more: auto takes Newton steps there,
    and "lbfgs" still lands at the same minimiser."""
    X, y = wide(1200, 560, seed=6)
    path = tmp_path / "X.npy"
    np.save(path, X)
    auto = rn.fit(str(path), y, l2=1.0, fit_intercept=True)
    assert auto.lbfgs_steps == 0 and auto.passes >= 1
    check(auto, X, y, 1e-10, l2=1.0, fit_intercept=True)
    forced = rn.fit(str(path), y, l2=1.0, fit_intercept=True, solver="lbfgs")
    assert forced.lbfgs_steps >= 1
    check(forced, X, y, 1e-10, l2=1.0, fit_intercept=True)


def test_solver_is_checked():
    X, y = wide(50, 3, seed=7)
    with pytest.raises(ValueError, match="solver must be 'auto', 'newton' or 'lbfgs'"):
        rn.fit(X, y, l2=1.0, solver="bfgs")
    with pytest.raises(ValueError, match="solver='lbfgs' is for the binary GLM families"):
        rn.fit(X, (np.arange(50) % 3).astype(float), family="multinomial", l2=1.0,
               solver="lbfgs")
