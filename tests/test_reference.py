"""rif_native against the independent float64 NumPy reference of conftest.py.

Tolerances (see conftest.row_rel_err / rel_err):
  * float64 input: relative error <= 1e-9 per entry for per-sample vectors (leverage, r, a,
    1/(1-h)); norm-wise per row for IF/RIF rows, NS / group rows (one per set) and
    (p, m) solves (per column); norm-wise over the whole vector for a single parameter vector
    (p,), a score vector (per column of directions) and the Hessian (Frobenius).
  * float32 X: the same 1e-9 against the reference on X.astype(float64) (the spec says float32
    values are used exactly with float64 arithmetic), and a whole-array relative error <= 1e-4
    against the reference on the float64 X before rounding (well-conditioned: cond(H) < 1e3).
"""

import re

import numpy as np
import pytest

import rif_native as rn
from conftest import (
    FAMILIES,
    Reference,
    assert_close,
    make_problem,
    newton_fit,
    rel_err,
)

TOL64 = 1e-9
TOL32_EXACT = 1e-9   # float32 X vs reference on X.astype(float64)
TOL32_ORIG = 1e-4    # float32 X vs reference on the float64 X before rounding


def random_sets(rng, n, p):
    """Removal sets of several sizes: singletons, k < p/2, and k > p/2 (direct-solve path)."""
    sizes = [1, 2, max(1, p // 2 - 1), p // 2 + 1, p, 2 * p, min(n // 2, 3 * p)]
    return [np.sort(rng.choice(n, size=k, replace=False)) for k in sizes]


# ----------------------------------------------------------------------------------------------
# The reference itself: two independent identities, so a wrong reference cannot pass silently
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_reference_self_consistency(rng, seed, family):
    P = make_problem(rng, family, n=50, d=6, fit_intercept=True, weighted=True, l2=0.3)
    R = P.ref
    # RIF_i is the Newton step of leave-i-out computed with H_{-i} directly (Sherman-Morrison).
    for i in range(0, P.n, 7):
        assert rel_err(R.ns([i]), R.RIF[i]) <= 1e-12, f"seed={seed}"
    # h_i = a_i x_i^T H^{-1} x_i lies in [0, 1] and sum_i h_i = p - l2 tr(H^{-1} P).
    assert np.all(R.h >= 0) and np.all(R.h < 1)
    trace = P.p - P.kw["l2"] * np.trace(R.Hinv @ np.diag(R.P))
    assert abs(R.h.sum() - trace) <= 1e-12 * P.p


# ----------------------------------------------------------------------------------------------
# Functional API
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
@pytest.mark.parametrize("family", FAMILIES)
def test_functional_api(rng, seed, family, fit_intercept, weighted, l2):
    P = make_problem(rng, family, n=60, d=8, fit_intercept=fit_intercept, weighted=weighted, l2=l2)
    R = P.ref
    args = (P.X, P.y, P.theta)

    h = rn.leverage(*args, **P.kw)
    assert isinstance(h, np.ndarray) and h.dtype == np.float64 and h.shape == (P.n,)
    assert_close(h, R.h, TOL64, "leverage", seed)

    IF = rn.influence(*args, **P.kw)
    assert IF.dtype == np.float64 and IF.shape == (P.n, P.p)
    assert_close(IF, R.IF, TOL64, "influence rows", seed)

    RIF = rn.rescaled_influence(*args, **P.kw)
    assert RIF.dtype == np.float64 and RIF.shape == (P.n, P.p)
    assert_close(RIF, R.RIF, TOL64, "rescaled_influence rows", seed)

    sets = random_sets(rng, P.n, P.p)
    NS = rn.newton_step(*args, sets, **P.kw)
    assert NS.shape == (len(sets), P.p)
    assert_close(NS, np.array([R.ns(T) for T in sets]), TOL64, "newton_step rows", seed)

    # one set -> (p,), given as a plain list of ints
    big = sets[-1]
    one = rn.newton_step(*args, [int(i) for i in big], **P.kw)
    assert one.shape == (P.p,)
    assert_close(one, R.ns(big), TOL64, f"newton_step one set k={big.size}", seed, per="whole")


def test_newton_step_set_sizes_relative_to_p(rng, seed):
    """k from 1 to well above p (Woodbury while k is small, a direct solve once k > p/2)."""
    P = make_problem(rng, "logistic", n=120, d=10, fit_intercept=True, weighted=True, l2=0.5)
    R = P.ref
    for k in [1, 3, 5, 6, 7, 11, 12, 20, 40, 80]:
        T = rng.choice(P.n, size=k, replace=False)
        got = rn.newton_step(P.X, P.y, P.theta, T, **P.kw)
        assert_close(got, R.ns(T), TOL64, f"NS k={k} (p={P.p})", seed, per="whole")


@pytest.mark.parametrize("columns", ["1", "9", "1000000"])
def test_newton_step_batches_of_small_sets(rng, seed, monkeypatch, columns):
    """Sets up to woodbury_limit() are solved together in batches of about RIF_WOODBURY_COLUMNS
    panel columns (one set per batch, a few, or all), the larger ones one by one: every split,
    in any order of sizes, repeated samples across sets and empty sets, gives the reference."""
    monkeypatch.setenv("RIF_WOODBURY_COLUMNS", columns)
    P = make_problem(rng, "logistic", n=120, d=10, fit_intercept=True, weighted=True, l2=0.5)
    R = P.ref
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    limit = P.p // 2  # the largest Woodbury set (the core's woodbury_limit)
    sizes = [3, 0, 1, limit, 40, 2, limit + 1, 1, 4, 0, 7]
    sets = [rng.choice(P.n, size=k, replace=False) for k in sizes]
    sets[7] = sets[2].copy()  # the same sample in two sets
    got = A.group_effect(sets, method="ns")
    want = np.array([R.ns(T) if len(T) else np.zeros(P.p) for T in sets])
    assert np.all(got[[1, 9]] == 0), "an empty set's Newton step is zero"
    nonempty = [j for j, k in enumerate(sizes) if k]
    assert_close(got[nonempty], want[nonempty], TOL64, f"batched NS (columns={columns})", seed)
    # the functional form and one thread agree with the object to rounding
    one = rn.newton_step(P.X, P.y, P.theta, sets, num_threads=1, **P.kw)
    assert_close(one[nonempty], got[nonempty], 1e-12, "1 thread vs default", seed)
    assert A._core.device_panels == 0  # the CPU backend
    monkeypatch.setenv("RIF_WOODBURY_COLUMNS", "1e6")
    with pytest.raises(ValueError, match="RIF_WOODBURY_COLUMNS must be a positive integer"):
        A.group_effect(sets, method="ns")


# ----------------------------------------------------------------------------------------------
# Attribution object
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
@pytest.mark.parametrize("family", FAMILIES)
def test_attribution(rng, seed, family, fit_intercept, weighted, l2):
    n, d = 60, 8
    P = make_problem(rng, family, n=n, d=d, fit_intercept=fit_intercept, weighted=weighted, l2=l2)
    R = P.ref
    p = P.p
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)

    # attributes
    assert (A.n, A.n_features, A.n_params) == (n, d, p)
    assert A.family == family
    assert A.l2 == l2
    assert A.fit_intercept is fit_intercept
    np.testing.assert_array_equal(A.theta, P.theta)
    assert_close(A.residuals, R.r, TOL64, "residuals r", seed)
    assert_close(A.curvature, R.a, TOL64, "curvature a", seed)
    assert_close(A.leverage, R.h, TOL64, "leverage", seed)
    assert_close(A.rescale, R.rescale, TOL64, "rescale 1/(1-h)", seed)
    sing = np.asarray(A.singular_samples)
    assert sing.size == 0 and np.issubdtype(sing.dtype, np.integer)
    gn = np.linalg.norm(R.grad)
    assert abs(A.gradient_norm - gn) <= 1e-9 * gn, f"gradient_norm seed={seed}"

    # Hessian and solves
    H = A.hessian()
    assert H.shape == (p, p)
    assert_close(H, R.H, TOL64, "hessian (Frobenius)", seed, per="whole")
    v = rng.standard_normal(p)
    assert_close(A.solve(v), R.solve(v), TOL64, "solve (p,)", seed, per="whole")
    V = rng.standard_normal((p, 3))
    S = A.solve(V)
    assert S.shape == (p, 3)
    assert_close(S.T, R.solve(V).T, TOL64, "solve (p, m) per column", seed)

    # IF / RIF, all and by index (unsorted, order kept)
    assert_close(A.influence(), R.IF, TOL64, "influence()", seed)
    assert_close(A.rescaled_influence(), R.RIF, TOL64, "rescaled_influence()", seed)
    idx = np.array([17, 3, 42, 0])
    assert_close(A.influence(idx), R.IF[idx], TOL64, "influence(indices)", seed)
    assert_close(A.rescaled_influence(list(idx)), R.RIF[idx], TOL64, "rescaled_influence(list)",
                 seed)

    # scores: <direction, est_i> for (p,) and (p, m) directions
    for method in ("if", "rif"):
        s = A.scores(v, method=method)
        assert s.shape == (n,)
        assert_close(s, R.scores(v, method), TOL64, f"scores (p,) {method}", seed, per="whole")
        sm = A.scores(V, method=method)
        assert sm.shape == (n, 3)
        assert_close(sm.T, R.scores(V, method).T, TOL64, f"scores (p,m) {method} per column", seed)
    assert_close(A.scores(v), R.scores(v, "rif"), TOL64, "scores default = rif", seed,
                 per="whole")

    # group effects: if / rif sums and Newton steps, for several sizes including k > p/2
    sets = random_sets(rng, n, p)
    refs = {
        "if": np.array([R.group_if(T) for T in sets]),
        "rif": np.array([R.group_rif(T) for T in sets]),
        "ns": np.array([R.ns(T) for T in sets]),
    }
    for method, ref in refs.items():
        got = A.group_effect(sets, method=method)
        assert got.shape == (len(sets), p)
        assert_close(got, ref, TOL64, f"group_effect {method}", seed)
    assert_close(A.group_effect(sets), refs["rif"], TOL64, "group_effect default = rif", seed)


def test_group_effect_set_formats(rng, seed):
    P = make_problem(rng, "logistic", n=50, d=6, fit_intercept=True, weighted=True, l2=0.2)
    R = P.ref
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    T = np.sort(rng.choice(P.n, size=9, replace=False))
    mask = np.zeros(P.n, dtype=bool)
    mask[T] = True
    for method, ref in (("if", R.group_if(T)), ("rif", R.group_rif(T)), ("ns", R.ns(T))):
        for name, s in (("int array", T), ("int32 array", T.astype(np.int32)),
                        ("list of ints", [int(i) for i in T]), ("boolean mask", mask)):
            got = A.group_effect(s, method=method)
            assert got.shape == (P.p,), f"{name}: shape {got.shape}"
            assert_close(got, ref, TOL64, f"group_effect {method} given as {name}", seed,
                         per="whole")
        # a list of sets of different lengths, including a mask, gives one row each
        got = A.group_effect([T, [int(T[0])], mask], method=method)
        assert got.shape == (3, P.p)
        assert_close(got[0], ref, TOL64, f"{method} ragged list row 0", seed, per="whole")
        assert_close(got[2], ref, TOL64, f"{method} ragged list mask row", seed, per="whole")
    # the functional newton_step takes the same set formats
    got = rn.newton_step(P.X, P.y, P.theta, mask, **P.kw)
    assert got.shape == (P.p,)
    assert_close(got, R.ns(T), TOL64, "newton_step(boolean mask)", seed, per="whole")
    got = rn.newton_step(P.X, P.y, P.theta, [mask, T, [int(T[1])]], **P.kw)
    assert got.shape == (3, P.p)
    assert_close(got, np.array([R.ns(T), R.ns(T), R.ns([T[1]])]), TOL64,
                 "newton_step(mixed list)", seed)
    # single removals: NS, RIF and sum of one RIF agree (Sherman-Morrison)
    i = int(T[0])
    assert_close(A.group_effect([i], method="ns"), R.RIF[i], TOL64, "NS of {i} == RIF_i", seed,
                 per="whole")


def test_influence_of_removal_sign(rng, seed):
    """Removal-effect sign: for ridge (squared loss) the RIF of a sample equals the exact
    theta_{-i} - theta_hat, so its sign is checked against a refit, not against the code."""
    P = make_problem(rng, "squared", n=40, d=5, fit_intercept=True, l2=0.5, fitted=True)
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    i = 11
    keep = np.arange(P.n) != i
    theta_minus, _ = newton_fit(P.X[keep], P.y[keep], **P.kw)
    assert_close(A.rescaled_influence([i])[0], theta_minus - P.theta, 1e-9, "RIF vs refit", seed,
                 per="whole")


def test_theta_is_copied(rng, seed):
    P = make_problem(rng, "logistic", n=40, d=5, l2=0.5)
    theta = P.theta.copy()
    A = rn.Attribution(P.X, P.y, theta, **P.kw)
    got = A.theta
    assert not np.shares_memory(got, theta)
    theta[:] = 123.0  # mutating the caller's array after construction changes nothing
    np.testing.assert_array_equal(A.theta, P.theta)
    assert_close(A.leverage, P.ref.h, TOL64, "leverage after mutating input theta", seed)


def test_repr_mentions_shape_family_l2_and_max_leverage(rng):
    P = make_problem(rng, "poisson", n=37, d=5, l2=0.25)
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    text = repr(A)
    nums = [float(m) for m in re.findall(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?", text)]
    assert 37 in nums and 5 in nums and "poisson" in text, f"n, d or family missing from {text!r}"
    assert 0.25 in nums, f"l2 missing from {text!r}"
    hmax = float(P.ref.h.max())
    assert any(abs(x - hmax) <= 1e-2 for x in nums), f"max leverage {hmax:.4f} not in {text!r}"


def test_build_info():
    info = rn.build_info()
    for key, typ in (("version", str), ("compiler", str), ("flags", str), ("openmp", bool),
                     ("simd", str), ("eigen_version", str), ("cuda", bool), ("max_threads", int)):
        assert key in info, f"build_info lacks {key!r}: {sorted(info)}"
        assert isinstance(info[key], typ), f"build_info[{key!r}] = {info[key]!r}, not a {typ}"
    assert info["max_threads"] >= 1


# ----------------------------------------------------------------------------------------------
# float32 X
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_float32_X(rng, seed, family):
    P = make_problem(rng, family, n=80, d=7, fit_intercept=True, weighted=True, l2=0.5)
    X32 = np.ascontiguousarray(P.X.astype(np.float32))
    R_exact = Reference(X32.astype(np.float64), P.y, P.theta, **P.kw)  # what the spec promises
    R_orig = P.ref                                                      # before rounding
    assert np.linalg.cond(R_orig.H) < 1e3
    sets = random_sets(rng, P.n, P.p)

    A = rn.Attribution(X32, P.y, P.theta, **P.kw)
    got = {
        "leverage": (A.leverage, rn.leverage(X32, P.y, P.theta, **P.kw), "h"),
        "influence": (A.influence(), rn.influence(X32, P.y, P.theta, **P.kw), "IF"),
        "rescaled_influence": (A.rescaled_influence(),
                               rn.rescaled_influence(X32, P.y, P.theta, **P.kw), "RIF"),
    }
    for name, (g_obj, g_fun, attr) in got.items():
        assert g_obj.dtype == np.float64 and g_fun.dtype == np.float64
        for g, api in ((g_obj, "Attribution"), (g_fun, "function")):
            assert_close(g, getattr(R_exact, attr), TOL32_EXACT, f"float32 {api} {name} vs exact",
                         seed)
            # whole-array error: a row with a small residual r_i (z_i ~ y_i) is ill-conditioned
            # in X, so a per-row bound against the unrounded X would test the data, not the code
            err = rel_err(g, getattr(R_orig, attr))
            print(f"{family} {api} {name}: float32 vs original float64 X, rel err {err:.2e}")
            assert err <= TOL32_ORIG, f"{name} vs original X: {err:.3e} (seed={seed})"

    ns_exact = np.array([R_exact.ns(T) for T in sets])
    ns = A.group_effect(sets, method="ns")
    assert_close(ns, ns_exact, TOL32_EXACT, "float32 NS vs exact", seed)
    assert_close(rn.newton_step(X32, P.y, P.theta, sets, **P.kw), ns_exact, TOL32_EXACT,
                 "float32 newton_step vs exact", seed)
    assert rel_err(ns, np.array([R_orig.ns(T) for T in sets])) <= TOL32_ORIG
    v = rng.standard_normal(P.p)
    assert_close(A.scores(v), R_exact.scores(v), TOL32_EXACT, "float32 scores", seed, per="whole")
    assert_close(A.hessian(), R_exact.H, TOL32_EXACT, "float32 hessian", seed, per="whole")
    assert rel_err(A.hessian(), R_orig.H) <= TOL32_ORIG


# ----------------------------------------------------------------------------------------------
# Real data
# ----------------------------------------------------------------------------------------------
def test_arrhythmia_logistic(seed, rng, arrhythmia):
    """UCI arrhythmia (n=452, d=262 after dropping constant columns, n/d ~ 1.7), logistic with
    intercept and l2 = 1 at the reference optimum: max leverage ~0.9, cond(H) ~ 700."""
    X, y = arrhythmia
    kw = dict(l2=1.0, family="logistic", fit_intercept=True)
    theta, _ = newton_fit(X, y, **kw)
    R = Reference(X, y, theta, **kw)
    A = rn.Attribution(X, y, theta, **kw)
    assert_close(A.leverage, R.h, TOL64, "arrhythmia leverage", seed)
    assert_close(A.rescaled_influence(), R.RIF, TOL64, "arrhythmia RIF", seed)
    assert_close(A.influence(), R.IF, TOL64, "arrhythmia IF", seed)
    sets = [rng.choice(X.shape[0], size=k, replace=False) for k in (1, 5, 50, 200)]
    assert_close(A.group_effect(sets, method="ns"), np.array([R.ns(T) for T in sets]), TOL64,
                 "arrhythmia NS (k = 1, 5, 50, 200; p = 263)", seed)
    v = rng.standard_normal(A.n_params)
    assert_close(A.scores(v), R.scores(v), TOL64, "arrhythmia scores", seed, per="whole")
    # at the optimum the gradient is ~0: gradient_norm must be tiny too (same scale as ours)
    assert A.gradient_norm <= 1e-9 * max(1.0, np.linalg.norm(R.Xt.T @ np.abs(R.r)))


def test_madelon_leverage_and_scores(seed, rng, madelon):
    """MADELON training split (2000 x 500, standardised), logistic, l2 = 10, reference optimum."""
    X, y = madelon
    kw = dict(l2=10.0, family="logistic", fit_intercept=True)
    theta, _ = newton_fit(X, y, **kw)
    R = Reference(X, y, theta, **kw)
    A = rn.Attribution(X, y, theta, **kw)
    assert_close(A.leverage, R.h, TOL64, "madelon leverage", seed)
    V = rng.standard_normal((A.n_params, 2))
    assert_close(A.scores(V).T, R.scores(V).T, TOL64, "madelon scores per column", seed)
    T = rng.choice(X.shape[0], size=300, replace=False)
    assert_close(A.group_effect(T, method="ns"), R.ns(T), TOL64, "madelon NS k=300", seed,
                 per="whole")
