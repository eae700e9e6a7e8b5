"""The dual path for fewer samples than parameters (rif/dual.hpp): H inverted through the n x n
matrix G = Y Y^T + l2 I, the unpenalised intercept through its Schur complement. Every answer
against the primal path (H's own Cholesky factor) on the same data, and against an
independent float64 NumPy reference for the leverages."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import rif_native as rn

from conftest import assert_close, design, penalty_diag, sigmoid

# Both paths are backward stable: their answers differ by a small multiple of eps cond(H), H
# as they factor it (X centred when there is an intercept; see _resolved). Over 1000 draws of
# test_dual_equals_primal's problems cond(H) stays below 4e3 (logistic) and 1.6e4 (squared),
# and the largest difference was 4.6e-13, a margin of 200 under TOL. The Poisson family's
# curvature exp(x.theta) spreads it further (without an intercept median 1.3e4, largest 3.3e6
# over 1000 draws), and there the tolerance follows it: 2 eps cond(H) (measured at most 0.15
# eps cond for either path, 1.75 where rounding's floor of a few eps dominates at cond 50).
# Retraining stops at its own tolerance: up to 6.4e-11 apart, within TOL_RETRAIN or 20 eps
# cond(H).
TOL = 1e-10
TOL_RETRAIN = 1e-9


def _problem(rng, n, d, family="logistic", offset=0.5):
    X = rng.standard_normal((n, d)) / np.sqrt(d) + offset  # uncentred: the intercept matters
    if family == "logistic":
        y = (rng.random(n) < 0.4).astype(float)
    elif family == "poisson":
        y = rng.poisson(1.0, n).astype(float)
    else:
        y = rng.standard_normal(n)
    return X, y


def _pair(X, y, theta, **kw):
    P = rn.Attribution(X, y, theta, solver="primal", num_threads=1, **kw)
    D = rn.Attribution(X, y, theta, solver="dual", num_threads=1, **kw)
    assert P.solver == "primal" and D.solver == "dual"
    return P, D


def _hessian(X, a, l2, fit_intercept):
    """H = Xt^T diag(a) Xt + l2 P in the user's coordinates."""
    Xt = design(X, fit_intercept)
    return Xt.T @ (a[:, None] * Xt) + l2 * np.diag(penalty_diag(Xt.shape[1], fit_intercept))


def _resolved(X, a, l2, fit_intercept, w=None):
    """eps cond(H) of the Hessian both paths factor: with an intercept X is centred first (at
    its w-weighted mean), which changes no answer but H's conditioning (the uncentred H of
    these problems is about 5000x worse conditioned)."""
    if fit_intercept:
        w = np.ones(len(X)) if w is None else w
        X = X - w @ X / w.sum()
    return np.finfo(float).eps * np.linalg.cond(_hessian(X, a, l2, fit_intercept))


@pytest.mark.parametrize("family", ["logistic", "squared", "poisson"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_equals_primal(rng, seed, family, fit_intercept):
    n, d = 120, 300
    X, y = _problem(rng, n, d, family)
    w = rng.uniform(0.5, 2.0, n)
    w[[4, 9]] = 0.0
    kw = dict(l2=0.8, family=family, fit_intercept=fit_intercept, sample_weight=w)
    theta = 0.2 * rng.standard_normal(d + fit_intercept)
    P, D = _pair(X, y, theta, **kw)
    resolved = _resolved(X, P.curvature, 0.8, fit_intercept, w)
    tol, tol_retrain = max(TOL, 2 * resolved), max(TOL_RETRAIN, 20 * resolved)
    assert D.leverage[4] == 0 and D.leverage[9] == 0
    assert_close(D.leverage, P.leverage, tol, "leverage", seed)
    assert_close(1 - D.leverage, 1 - P.leverage, tol, "1 - leverage", seed)
    V = rng.standard_normal((d + fit_intercept, 3))
    for method in ("if", "rif"):
        assert_close(D.scores(V, method=method), P.scores(V, method=method), tol,
                     f"{method} scores", seed, per="whole")
    assert_close(D.rescaled_influence([0, 7, n - 1]), P.rescaled_influence([0, 7, n - 1]), tol,
                 "RIF rows", seed)
    assert_close(D.influence([3]), P.influence([3]), tol, "IF rows", seed)
    assert_close(D.solve(V), P.solve(V), tol, "solve", seed, per="whole")
    sets = [[1, 2, 3], list(range(10, 100))]  # both by Woodbury (up to p / 2 = 150 samples)
    for method in ("if", "rif", "ns"):
        assert_close(D.group_effect(sets, method=method), P.group_effect(sets, method=method),
                     tol, f"{method} group effects", seed)
    assert_close(D.retrain(sets).theta, P.retrain(sets).theta, tol_retrain, "retraining", seed)
    assert_close(D.hessian(), P.hessian(), 1e-12, "hessian", seed, per="whole")



def test_dual_sets_above_the_woodbury_limit(rng, seed):
    """A set of more than p / 2 samples (possible on the dual path only when n > p / 2) takes
    H_{-T} factored afresh, which builds the primal H on demand: Newton steps and retraining
    equal the primal path's."""
    n, d = 120, 100
    X, y = _problem(rng, n, d)
    theta = 0.2 * rng.standard_normal(d + 1)
    P, D = _pair(X, y, theta, l2=0.8, fit_intercept=True)
    sets = [list(range(10, 100)), [1, 2, 3]]  # 90 samples > p / 2 = 50.5, and a small one
    tol = max(TOL, 2 * _resolved(X, P.curvature, 0.8, True))
    for method in ("if", "rif", "ns"):
        assert_close(D.group_effect(sets, method=method), P.group_effect(sets, method=method),
                     tol, f"{method} group effects", seed)
    assert_close(D.retrain(sets).theta, P.retrain(sets).theta, TOL_RETRAIN, "retraining", seed)


def _refined_solve(H, V):
    """H^{-1} V to float64's last bits: NumPy's solve and one step of refinement with the
    residual in extended precision."""
    x = np.linalg.solve(H, V)
    r = V.astype(np.longdouble) - H.astype(np.longdouble) @ x.astype(np.longdouble)
    return x + np.linalg.solve(H, r.astype(np.float64))


def _check_solves(P, D, H, V, resolved, seed):
    """Both paths within eps cond(H) of the reference (resolved: eps cond of the Hessian they
    factor), a column at a time and as a panel: measured at most 0.21 for either over 60 draws
    of the problem below, and 0.12 in the recorded case, where the Woodbury form before its
    refinement reached 2.0 (and 4.7 on a group effect); below it stayed within 0.53."""
    ref = _refined_solve(H, V)
    for A in (P, D):
        for j in range(V.shape[1]):
            assert_close(A.solve(V[:, [j]]), ref[:, [j]], resolved, f"{A.solver} solve {j}",
                         seed, per="whole")
        assert_close(A.solve(V).T, ref.T, resolved, f"{A.solver} solve, as a panel", seed)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_solves_as_accurately_as_the_factor(rng, seed, fit_intercept):
    """At cond(H) near 1e6 the Woodbury form (v - Y^T G^{-1} Y v) / l2 cancels along H's large
    eigenvalues; the dual refines it once. Sums of samples (what group effects solve) and random
    vectors, against an extended-precision reference."""
    n, d, l2 = 120, 300, 0.005
    X, y = _problem(rng, n, d, "squared")
    X += 0.5 * rng.standard_normal((n, 1))  # spread along (1, ..., 1), which centring keeps
    w = rng.uniform(0.5, 2.0, n)
    kw = dict(l2=l2, family="squared", fit_intercept=fit_intercept, sample_weight=w)
    P, D = _pair(X, y, 0.2 * rng.standard_normal(d + fit_intercept), **kw)
    Xt, H = design(X, fit_intercept), _hessian(X, w, l2, fit_intercept)
    V = np.hstack([Xt.T @ rng.standard_normal((n, 4)), rng.standard_normal((d + fit_intercept, 2))])
    resolved = _resolved(X, w, l2, fit_intercept, w)
    assert resolved > 1e-11  # cond(H) > 4.5e4: the regime this test is for (median 2e6)
    _check_solves(P, D, H, V, resolved, seed)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_dual_influence_rows_from_the_samples(rng, seed, fit_intercept):
    """Every sample's IF and RIF row on the dual path (solve_samples: B^{-1} x_i through
    Y^T G^{-1} e_i / sqrt(a_i)) against the extended-precision reference and the primal, with
    a sample of weight 0 (a zero row) and one whose curvature underflows to 0 while its
    residual does not (the general solve)."""
    n, d, l2 = 60, 150, 0.01
    X, y = _problem(rng, n, d)
    w = rng.uniform(0.5, 2.0, n)
    w[7] = 0.0
    theta = 0.3 * rng.standard_normal(d + fit_intercept)
    X[11] *= 2000.0 / abs(X[11] @ theta[:d])  # x.theta = +-2000: p is 0 or 1, a = 0
    y[11] = 1.0 if X[11] @ theta[:d] < 0 else 0.0  # ... and |r| = w
    w[11] = 1e-12  # (so that this row, 2000 / |x.theta| times the others, leaves the centre be)
    P, D = _pair(X, y, theta, l2=l2, fit_intercept=fit_intercept, sample_weight=w)
    assert D.curvature[11] == 0 and abs(D.residuals[11]) == w[11]
    Xt, H = design(X, fit_intercept), _hessian(X, D.curvature, l2, fit_intercept)
    # Rows in the user's coordinates carry the un-centring's rounding too: with an intercept up
    # to 105 eps cond of the centred H, on either path (0.05 of the uncentred H's, used here).
    bound = 2 * np.finfo(float).eps * np.linalg.cond(H)
    ref = _refined_solve(H, (Xt * D.residuals[:, None]).T).T
    rows = D.influence()
    assert np.all(rows[7] == 0)
    assert_close(rows, ref, bound, "dual IF rows", seed)
    assert_close(P.influence(), ref, bound, "primal IF rows", seed)
    rescaled = ref / (1 - D.leverage)[:, None]
    assert_close(D.rescaled_influence(), rescaled, 2 * bound, "dual RIF rows", seed)
    assert_close(D.rescaled_influence([11, 3, 0]), rescaled[[11, 3, 0]], 2 * bound,
                 "dual RIF rows, chosen", seed)


def test_dual_group_effects_in_the_recorded_case():
    """The fresh seed on which test_dual_equals_primal failed before the refinement (Poisson,
    cond(H) = 1.1e6): the dual's IF group effect of 90 samples was 1.2e-9 from the reference,
    4.7 eps cond(H), where the primal's was 2.8e-11."""
    seed = 8921115237625152095
    rng = np.random.default_rng(seed)
    n, d = 120, 300
    X, y = _problem(rng, n, d, "poisson")
    w = rng.uniform(0.5, 2.0, n)
    w[[4, 9]] = 0.0
    theta = 0.2 * rng.standard_normal(d)
    P, D = _pair(X, y, theta, l2=0.8, family="poisson", sample_weight=w)
    mu = np.exp(X @ theta)
    H = _hessian(X, w * mu, 0.8, False)
    r = w * (mu - y)
    sets = [[1, 2, 3], list(range(10, 100))]
    G = np.column_stack([X[s].T @ r[s] for s in sets])
    resolved = np.finfo(float).eps * np.linalg.cond(H)
    _check_solves(P, D, H, G, resolved, seed)
    ref = _refined_solve(H, G).T
    for A in (P, D):
        assert_close(A.group_effect(sets, method="if"), ref, resolved, f"{A.solver} IF", seed)


def test_leverage_against_numpy(rng, seed):
    """h_i = a_i x~_i^T H^{-1} x~_i from NumPy's own solve, including tiny leverages (a large
    l2), whose relative accuracy the dual keeps."""
    n, d = 60, 200
    X, y = _problem(rng, n, d)
    for l2 in (0.5, 1e4):
        theta = 0.3 * rng.standard_normal(d + 1)
        D = rn.Attribution(X, y, theta, l2=l2, fit_intercept=True, solver="dual")
        Xt = np.hstack([X, np.ones((n, 1))])
        p = sigmoid(Xt @ theta)
        a = p * (1 - p)
        H = Xt.T @ (a[:, None] * Xt) + l2 * np.diag(np.r_[np.ones(d), 0.0])
        h = a * np.einsum("ij,ji->i", Xt, np.linalg.solve(H, Xt.T))
        assert_close(D.leverage, h, 1e-10, f"leverage l2={l2}", seed)


def test_auto_picks_by_cost(rng):
    X, y = _problem(rng, 100, 400)
    A = rn.Attribution(X, y, np.zeros(401), l2=1.0, fit_intercept=True)
    assert A.solver == "dual" and "solver='dual'" in repr(A)
    X, y = _problem(rng, 1000, 50)
    assert rn.Attribution(X, y, np.zeros(51), l2=1.0, fit_intercept=True).solver == "primal"
    X, y = _problem(rng, 100, 400)  # no penalty: H is singular for n < p, only primal can say
    with pytest.raises(ValueError, match="needs a ridge penalty"):
        rn.Attribution(X, y, np.zeros(400), solver="dual")
    with pytest.raises(ValueError, match="solver must be"):
        rn.Attribution(X, y, np.zeros(400), l2=1.0, solver="fast")


def test_dual_object_saves_and_pickles(rng, tmp_path):
    import pickle

    X, y = _problem(rng, 80, 200)
    theta = 0.1 * rng.standard_normal(201)
    D = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    assert D.solver == "dual"
    B = pickle.loads(pickle.dumps(D))
    assert B.solver == "dual"
    np.testing.assert_array_equal(B.leverage, D.leverage)
    D.save(tmp_path / "d.npz")  # builds H and its factor for the file
    C = rn.Attribution.load(tmp_path / "d.npz", num_threads=1)
    assert_close(C.leverage, D.leverage, TOL, "loaded leverage")


def test_intercept_without_curvature_is_refused(rng):
    X, y = _problem(rng, 50, 120)
    with pytest.raises(rn.NotPositiveDefiniteError):
        rn.Attribution(X, y, np.zeros(121), l2=1.0, fit_intercept=True, solver="dual",
                       sample_weight=np.zeros(50))


@pytest.mark.parametrize("l2", [1e-5, 1e-6])
def test_dual_intercept_near_interpolation(rng, seed, l2):
    """n < p with an intercept and l2 small against X: Y B^{-1} Y^T nears I, and the intercept's
    Schur complement sum(a) - b^T B^{-1} b and the leverage gaps t_i - sqrt(a_i) cancel when
    taken as differences (the dual's RIF was 1.8e-4 relative from the primal's at l2 = 1e-5,
    9.7e-3 at 1e-6, where eps cond(H) is 5.7e-9 and 5.7e-8). Both paths within 4 eps cond(H)
    of each other, the gaps 1 - h included (measured at most 0.93 eps cond over 120 draws)."""
    n, d = 40, 120
    X = rng.standard_normal((n, d))
    y = X[:, 0] + 0.1 * rng.standard_normal(n)
    theta = 0.1 * rng.standard_normal(d + 1)
    kw = dict(l2=l2, family="squared", fit_intercept=True)
    P, D = _pair(X, y, theta, **kw)
    tol = 4 * _resolved(X, P.curvature, l2, True)
    assert tol > 2e-9  # the regime this test is for
    assert_close(1 - D.leverage, 1 - P.leverage, tol, "1 - leverage", seed)
    rows = [0, 7, n - 1]
    assert_close(D.rescaled_influence(rows), P.rescaled_influence(rows), tol, "RIF rows", seed)
    V = rng.standard_normal((d + 1, 2))
    assert_close(D.solve(V), P.solve(V), tol, "solve", seed, per="whole")


@pytest.mark.parametrize("family", ["logistic", "squared", "poisson"])
@pytest.mark.parametrize("weights", ["none", "positive", "some zero"])
def test_dual_intercept_gaps_where_sqrt_a_nears_the_null_space(rng, family, weights):
    """Few samples with curvature and l2 down to 1e-8: sqrt(a) lies near the null space of K, and
    the intercept's leverage gaps 1 - h, taken as l2 [G^{-1} - G^{-1} r r^T G^{-1} / r^T G^{-1}
    r]_ii, cancelled (a review found h > 1 and RIF 100% wrong, up to 5e5 eps cond(H) from the
    primal's). Taken through the projection off sqrt(a), both paths within 4 eps cond(H), the
    centred H's (measured at most 0.48 over 240 draws of these problems)."""
    for _ in range(6):
        n = int(rng.integers(5, 40))
        d = int(rng.integers(n + 1, 2 * n + 10))
        X = rng.standard_normal((n, d)) + 0.5
        y = {"logistic": (rng.random(n) < 0.4).astype(float), "squared": rng.standard_normal(n),
             "poisson": rng.poisson(1.0, n).astype(float)}[family]
        w = None if weights == "none" else rng.exponential(size=n)
        if weights == "some zero":
            w[rng.random(n) < 0.2] = 0.0
            w[0] = 1.0
        l2 = float(rng.choice([1e-8, 1e-6, 1e-4]))
        theta = 0.3 * rng.standard_normal(d + 1) / np.sqrt(d)
        kw = dict(l2=l2, family=family, sample_weight=w, fit_intercept=True)
        if family == "logistic" and len(np.unique(y[(w if w is not None else np.ones(n)) > 0])) < 2:
            continue
        with warnings.catch_warnings():  # (gaps within 1e-10 of 0: RIF inf, said by both)
            warnings.simplefilter("ignore", rn.SingularRemovalWarning)
            P, D = _pair(X, y, theta, **kw)
            rows = np.arange(n)
            got, ref = D.rescaled_influence(rows), P.rescaled_influence(rows)
        tol = 4 * _resolved(X, P.curvature, l2, True, w)
        assert np.all(D.leverage <= 1.0)
        both = np.isfinite(got).all(axis=1) & np.isfinite(ref).all(axis=1)
        assert both.sum() >= n // 2
        assert_close(got[both], ref[both], tol, "RIF rows", per="whole")


def test_dual_intercept_gaps_in_the_recorded_case():
    """Two samples, 15 features, squared loss, l2 = 1e-8, intercept (a review's case): 1 - h is
    3.2517e-10 for both (the primal agrees); the dual's difference form gave 1.25e-8 and
    -2.6e-9 (h > 1). The gap's absolute accuracy is about eps, as for any h stored near 1."""
    X = (np.random.default_rng(0).standard_normal((5, 15)) + 0.5)[3:]
    kw = dict(l2=1e-8, family="squared", fit_intercept=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rn.SingularRemovalWarning)
        P, D = _pair(X, np.array([1.0, 0.0]), np.zeros(16), **kw)
    assert np.all(np.abs((1 - D.leverage) - (1 - P.leverage)) <= 4 * np.finfo(float).eps)
    assert np.all(np.abs(1 - D.leverage - 3.2517e-10) <= 1e-13)


@pytest.mark.parametrize("family", ["logistic", "squared"])
def test_dual_one_sample_with_intercept(rng, tmp_path, family):
    """n = 1 with an intercept: removing the sample leaves the intercept without data (h = 1
    exactly, RIF inf). The leverage gap is a projection onto the (n - 1) = 0 dimensional
    complement; LAPACK was handed that empty matrix with leading dimension 0 and printed
    "On entry to DPOTRF parameter number 4 had an illegal value" (OpenBLAS prints it on C's
    stdout, seen whole only when the process ends: hence a child process; a LAPACK that stops
    on such errors would end it)."""
    d = 6
    X = rng.standard_normal((1, d))
    theta = 0.1 * rng.standard_normal(d + 1)
    code = (
        "import sys, numpy as np, rif_native as rn\n"
        "X = np.array(eval(sys.argv[1])); theta = np.array(eval(sys.argv[2]))\n"
        f"D = rn.Attribution(X, np.array([1.0]), theta, l2=1.0, family={family!r}, "
        "fit_intercept=True, solver='dual')\n"
        "assert D.solver == 'dual'\n"
        "np.save(sys.argv[3], np.concatenate([D.leverage, D.solve(np.eye(X.shape[1] + 1))"
        ".ravel()]))\n")
    path = tmp_path / "out.npy"
    run = subprocess.run([sys.executable, "-c", code, repr(X.tolist()), repr(theta.tolist()),
                          str(path)], capture_output=True, text=True, check=True)
    assert "illegal" not in run.stdout + run.stderr, run.stdout + run.stderr
    out = np.load(path)
    assert out[0] == 1.0  # leverage, exactly
    s = sigmoid(X @ theta[:d] + theta[d])
    a = np.ones(1) if family == "squared" else s * (1 - s)
    H = _hessian(X, a, 1.0, True)
    assert_close(out[1:].reshape(d + 1, d + 1), np.linalg.inv(H),
                 10 * np.finfo(float).eps * np.linalg.cond(H), "H^{-1}", per="whole")
