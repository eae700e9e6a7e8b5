"""Input rules of the spec: every bad input raises the right exception type with a message that
names the argument; accepted conversions give the float64 C-contiguous result; h_i == 1 gives an
inf RIF row and a SingularRemovalWarning naming the sample; a Hessian that is not positive
definite raises NotPositiveDefiniteError (a numpy.linalg.LinAlgError).

Conversions are compared with the float64 C-contiguous call at norm-wise relative error <= 1e-12.
"""

import re
import warnings

import numpy as np
import pytest

import rif_native as rn
from conftest import Reference, assert_close, make_problem

N, D = 30, 4


def _base(family="logistic", fit_intercept=False, weighted=True):
    rng = np.random.default_rng(7)
    P = make_problem(rng, family, n=N, d=D, fit_intercept=fit_intercept, weighted=weighted, l2=0.5)
    return P


# Entry points that take (X, y, theta): each bad input is checked on all of them.
def _attribution(X, y, theta, **kw):
    return rn.Attribution(X, y, theta, **kw)


def _leverage(X, y, theta, **kw):
    return rn.leverage(X, y, theta, **kw)


def _rif(X, y, theta, **kw):
    return rn.rescaled_influence(X, y, theta, **kw)


def _influence(X, y, theta, **kw):
    return rn.influence(X, y, theta, **kw)


def _ns(X, y, theta, **kw):
    return rn.newton_step(X, y, theta, [0, 1], **kw)


def _fit(X, y, theta, **kw):  # fit has no theta: theta cases are skipped for it
    return rn.fit(X, y, **kw)


ENTRIES = {"Attribution": _attribution, "leverage": _leverage, "influence": _influence,
           "rescaled_influence": _rif, "newton_step": _ns, "fit": _fit}

ARG_X = r"\bX\b"
ARG_Y = r"\by\b"
ARG_THETA = r"\btheta\b"
ARG_W = r"\bsample_weight\b"
NONFINITE = r"(?i)nan|inf|finite"
ARG_X_DTYPE = r"\bX\b|(?i:dtype)"
LABEL = r"\by\b|(?i:label)"


def _set(a, idx, value):
    a = np.array(a, dtype=np.float64, copy=True)
    a[idx] = value
    return a


VE, TE = ValueError, TypeError

# name -> (family, fit_intercept, make(X, y, theta, w) -> (X, y, theta, w), exception, patterns)
BAD = {
    "X 1-D": ("logistic", False, lambda X, y, t, w: (X[:, 0].copy(), y, t, w), VE, [ARG_X]),
    "X 3-D": ("logistic", False, lambda X, y, t, w: (X[None], y, t, w), VE, [ARG_X]),
    "X n=0": ("logistic", False, lambda X, y, t, w: (X[:0], y[:0], t, None), VE,
              [r"\bX\b|(?i:empty|sample)"]),
    "X d=0": ("logistic", False, lambda X, y, t, w: (X[:, :0], y, t[:0], w), VE,
              [r"\bX\b|(?i:feature|column)"]),
    "X NaN": ("logistic", False, lambda X, y, t, w: (_set(X, (3, 1), np.nan), y, t, w), VE,
              [ARG_X, NONFINITE]),
    "X inf": ("squared", False, lambda X, y, t, w: (_set(X, (0, 0), -np.inf), y, t, w), VE,
              [ARG_X, NONFINITE]),
    "X complex": ("logistic", False, lambda X, y, t, w: (X + 0j, y, t, w), TE, [ARG_X_DTYPE]),
    "X object": ("logistic", False, lambda X, y, t, w: (X.astype(object), y, t, w), TE,
                 [ARG_X_DTYPE]),
    "X string": ("logistic", False, lambda X, y, t, w: (X.astype(str), y, t, w), TE,
                 [ARG_X_DTYPE]),
    "y short": ("logistic", False, lambda X, y, t, w: (X, y[:-1], t, w), VE, [ARG_Y]),
    "y long": ("squared", False, lambda X, y, t, w: (X, np.append(y, 0.0), t, w), VE, [ARG_Y]),
    "y 2-D": ("logistic", False, lambda X, y, t, w: (X, y[:, None], t, w), VE, [ARG_Y]),
    "y NaN": ("squared", False, lambda X, y, t, w: (X, _set(y, 5, np.nan), t, w), VE,
              [ARG_Y, NONFINITE]),
    "y inf": ("poisson", False, lambda X, y, t, w: (X, _set(y, 2, np.inf), t, w), VE,
              [ARG_Y, NONFINITE]),
    "logistic label 2": ("logistic", False, lambda X, y, t, w: (X, _set(y, 4, 2.0), t, w), VE,
                         [LABEL]),
    "logistic label 0.5": ("logistic", False, lambda X, y, t, w: (X, _set(y, 0, 0.5), t, w), VE,
                           [LABEL]),
    "logistic label -1": ("logistic", True, lambda X, y, t, w: (X, _set(y, 9, -1.0), t, w), VE,
                          [LABEL]),
    "poisson label < 0": ("poisson", False, lambda X, y, t, w: (X, _set(y, 1, -1.0), t, w), VE,
                          [LABEL]),
    "theta short": ("logistic", False, lambda X, y, t, w: (X, y, t[:-1], w), VE, [ARG_THETA]),
    "theta long": ("logistic", False, lambda X, y, t, w: (X, y, np.append(t, 0.1), w), VE,
                   [ARG_THETA]),
    "theta without intercept entry": ("logistic", True, lambda X, y, t, w: (X, y, t[:-1], w), VE,
                                      [ARG_THETA]),
    "theta 2-D": ("logistic", False, lambda X, y, t, w: (X, y, t[:, None], w), VE, [ARG_THETA]),
    "theta NaN": ("logistic", False, lambda X, y, t, w: (X, y, _set(t, 0, np.nan), w), VE,
                  [ARG_THETA, NONFINITE]),
    "theta inf": ("squared", True, lambda X, y, t, w: (X, y, _set(t, -1, np.inf), w), VE,
                  [ARG_THETA, NONFINITE]),
    "sample_weight short": ("logistic", False, lambda X, y, t, w: (X, y, t, w[:-1]), VE, [ARG_W]),
    "sample_weight 2-D": ("logistic", False, lambda X, y, t, w: (X, y, t, w[:, None]), VE,
                          [ARG_W]),
    "sample_weight NaN": ("squared", False, lambda X, y, t, w: (X, y, t, _set(w, 3, np.nan)), VE,
                          [ARG_W, NONFINITE]),
    "sample_weight inf": ("logistic", False, lambda X, y, t, w: (X, y, t, _set(w, 3, np.inf)), VE,
                          [ARG_W, NONFINITE]),
    "sample_weight negative": ("poisson", False, lambda X, y, t, w: (X, y, t, _set(w, 6, -0.5)),
                               VE, [ARG_W]),
}


def _check(exc, patterns, call):
    with pytest.raises(exc) as info:
        call()
    msg = str(info.value)
    for pat in patterns:
        assert re.search(pat, msg), f"message {msg!r} does not match {pat!r}"
    return msg


@pytest.mark.parametrize(
    "case, entry",
    [(c, e) for c in BAD for e in ENTRIES if not (e == "fit" and c.startswith("theta"))],
)
def test_bad_input(case, entry):
    family, fit_intercept, make, exc, patterns = BAD[case]
    P = _base(family, fit_intercept)
    X, y, theta, w = make(P.X, P.y, P.theta, P.kw["sample_weight"])
    kw = dict(l2=0.5, family=family, fit_intercept=fit_intercept, sample_weight=w)
    _check(exc, patterns, lambda: ENTRIES[entry](X, y, theta, **kw))


@pytest.mark.parametrize("entry", list(ENTRIES))
def test_bad_family(entry):
    P = _base()
    kw = dict(P.kw, family="probit")
    _check(ValueError, [r"\bfamily\b"], lambda: ENTRIES[entry](P.X, P.y, P.theta, **kw))


@pytest.mark.parametrize("num_threads", [0, -1])
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_bad_num_threads(entry, num_threads):
    P = _base()
    _check(ValueError, [r"\bnum_threads\b"],
           lambda: ENTRIES[entry](P.X, P.y, P.theta, num_threads=num_threads, **P.kw))


@pytest.mark.parametrize("num_threads", [1.5, "2"])
def test_num_threads_not_an_int(num_threads):
    P = _base()
    with pytest.raises((TypeError, ValueError)):
        rn.Attribution(P.X, P.y, P.theta, num_threads=num_threads, **P.kw)


def test_bad_method():
    P = _base()
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    v = np.ones(P.p)
    _check(ValueError, [r"\bmethod\b"], lambda: A.scores(v, method="newton"))
    _check(ValueError, [r"\bmethod\b"], lambda: A.group_effect([0, 1], method="exact"))
    _check(ValueError, [r"\bmethod\b"], lambda: A.group_effect([[0, 1], [2]], method="IFF"))


def test_bad_query_shapes_and_indices():
    """Not in the spec's list, but a wrong-length direction or an index out of range must never be
    accepted silently."""
    P = _base()
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    with pytest.raises(ValueError):
        A.scores(np.ones(P.p + 1))
    with pytest.raises(ValueError):
        A.solve(np.ones(P.p - 1))
    with pytest.raises(ValueError):
        A.solve(np.ones((P.p + 2, 3)))
    with pytest.raises((IndexError, ValueError)):
        A.influence([0, N])
    with pytest.raises((IndexError, ValueError)):
        A.rescaled_influence([N + 5])
    with pytest.raises((IndexError, ValueError)):
        A.group_effect([1, N], method="ns")
    with pytest.raises((IndexError, ValueError)):
        A.group_effect(np.ones(N + 1, dtype=bool))
    with pytest.raises((IndexError, ValueError)):
        rn.newton_step(P.X, P.y, P.theta, [[0], [N]], **P.kw)


# ----------------------------------------------------------------------------------------------
# Not positive definite
# ----------------------------------------------------------------------------------------------
def test_not_positive_definite():
    assert issubclass(rn.NotPositiveDefiniteError, np.linalg.LinAlgError)
    rng = np.random.default_rng(3)
    n, d = 10, 20  # l2 = 0 and d > n: X^T A X has rank <= n < d
    X = rng.standard_normal((n, d))
    y = (rng.random(n) < 0.5).astype(float)
    y[:2] = [0.0, 1.0]
    theta = 0.1 * rng.standard_normal(d)
    pats = [r"(?i)\bl2\b", r"(?i)pivot|positive definite"]
    for call in (lambda: rn.Attribution(X, y, theta, l2=0.0),
                 lambda: rn.leverage(X, y, theta, l2=0.0),
                 lambda: rn.rescaled_influence(X, y, theta, l2=0.0, family="squared"),
                 lambda: rn.newton_step(X, y, theta, [0], l2=0.0, family="poisson")):
        _check(rn.NotPositiveDefiniteError, pats, call)
    # also catchable as the numpy error
    with pytest.raises(np.linalg.LinAlgError):
        rn.Attribution(X, y, theta, l2=0.0, family="squared")
    # and l2 > 0 fixes it
    A = rn.Attribution(X, y, theta, l2=0.1)
    assert_close(A.leverage, Reference(X, y, theta, l2=0.1).h, 1e-9, "leverage once l2 > 0")


def test_zero_column_not_positive_definite():
    """l2 = 0 and a feature that is zero in every sample: a pivot of H is exactly 0 (n > d)."""
    P = _base("squared", weighted=False)
    X = P.X.copy()
    X[:, 2] = 0.0
    with pytest.raises(rn.NotPositiveDefiniteError, match=r"(?i)\bl2\b"):
        rn.Attribution(X, P.y, P.theta, l2=0.0, family="squared")
    with pytest.raises(rn.NotPositiveDefiniteError, match=r"(?i)\bl2\b"):
        rn.rescaled_influence(X, P.y, np.append(P.theta, 0.1), l2=0.0, family="squared",
                              fit_intercept=True)


# ----------------------------------------------------------------------------------------------
# Leverage exactly one
# ----------------------------------------------------------------------------------------------
def _singular_problem():
    """squared, l2 = 0, a feature nonzero only in sample J: h_J = 1 exactly."""
    rng = np.random.default_rng(11)
    n, J = 31, 13
    X = np.hstack([rng.standard_normal((n, 4)), np.zeros((n, 1))])
    X[J, -1] = 1.7
    y = rng.standard_normal(n)
    theta = rng.standard_normal(5)  # not the optimum, so r_J != 0 and IF_J != 0
    return X, y, theta, J


def test_singular_removal_attribution():
    assert issubclass(rn.SingularRemovalWarning, RuntimeWarning)
    X, y, theta, J = _singular_problem()
    kw = dict(l2=0.0, family="squared")
    R = Reference(X, y, theta, **kw)
    assert abs(R.h[J] - 1.0) < 1e-12
    with pytest.warns(rn.SingularRemovalWarning, match=rf"\b{J}\b"):
        A = rn.Attribution(X, y, theta, **kw)
        rif = A.rescaled_influence()
    assert abs(A.leverage[J] - 1.0) <= 1e-12
    np.testing.assert_array_equal(np.asarray(A.singular_samples), [J])
    assert np.isposinf(A.rescale[J])
    assert np.all(np.isinf(rif[J])), f"RIF row {J} should be inf: {rif[J]}"
    others = np.arange(X.shape[0]) != J
    assert_close(rif[others], R.RIF[others], 1e-9, "other RIF rows")
    assert_close(A.leverage[others], R.h[others], 1e-9, "other leverages")
    # IF is still finite for every sample
    assert_close(A.influence(), R.IF, 1e-9, "IF with a singular sample")

    # the functional API warns too, naming the sample
    with pytest.warns(rn.SingularRemovalWarning, match=rf"\b{J}\b"):
        rif_fn = rn.rescaled_influence(X, y, theta, **kw)
    assert np.all(np.isinf(rif_fn[J]))
    assert_close(rif_fn[others], R.RIF[others], 1e-9, "functional other RIF rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rn.SingularRemovalWarning)  # leverage itself may warn
        h = rn.leverage(X, y, theta, **kw)
    assert abs(h[J] - 1.0) <= 1e-12


@pytest.mark.parametrize("columns", [None, "1"], ids=["one-batch", "batch-per-set"])
def test_singular_removal_newton_step(monkeypatch, columns):
    if columns:  # Woodbury batches of one set each, or all sets in one
        monkeypatch.setenv("RIF_WOODBURY_COLUMNS", columns)
    X, y, theta, J = _singular_problem()
    kw = dict(l2=0.0, family="squared")
    R = Reference(X, y, theta, **kw)
    sets = [[0, 1], [J, 2], [3]]
    # the warning names the set: by its position in the list or by the offending sample
    with pytest.warns(rn.SingularRemovalWarning, match=rf"\b1\b|\b{J}\b"):
        ns = rn.newton_step(X, y, theta, sets, **kw)
    assert np.all(np.isinf(ns[1])), f"NS of a set containing {J} should be inf: {ns[1]}"
    assert_close(ns[[0, 2]], np.array([R.ns(sets[0]), R.ns(sets[2])]), 1e-9, "finite NS rows")
    with pytest.warns(rn.SingularRemovalWarning):
        A = rn.Attribution(X, y, theta, **kw)
        ns_obj = A.group_effect(sets, method="ns")
    assert np.all(np.isinf(ns_obj[1]))
    assert_close(ns_obj[[0, 2]], ns[[0, 2]], 1e-12, "Attribution NS == functional NS")
    # sums of RIFs and RIF scores that involve the singular sample are inf as well
    with pytest.warns(rn.SingularRemovalWarning, match=rf"\b{J}\b"):
        grif = A.group_effect(sets, method="rif")
    assert np.all(np.isinf(grif[1]))
    assert_close(grif[[0, 2]], np.array([R.group_rif(sets[0]), R.group_rif(sets[2])]), 1e-9,
                 "finite group RIF rows")
    v = np.linspace(-1.0, 1.0, X.shape[1])
    with pytest.warns(rn.SingularRemovalWarning, match=rf"\b{J}\b"):
        s = A.scores(v)
    assert np.isinf(s[J])
    others = np.arange(X.shape[0]) != J
    assert_close(s[others], R.RIF[others] @ v, 1e-9, "finite scores", per="whole")
    # IF-based answers do not involve 1/(1-h): finite, and no warning
    assert_close(A.group_effect(sets, method="if"), np.array([R.group_if(T) for T in sets]), 1e-9,
                 "group IF with a singular sample")
    assert_close(A.scores(v, method="if"), R.IF @ v, 1e-9, "IF scores", per="whole")


def test_no_warning_without_singular_samples():
    """filterwarnings = error: an ordinary problem must not warn anywhere."""
    P = _base("logistic", True)
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    A.rescaled_influence()
    A.group_effect([[0, 1, 2], list(range(20))], method="ns")
    assert np.asarray(A.singular_samples).size == 0
    assert np.all(np.isfinite(A.rescale))


# ----------------------------------------------------------------------------------------------
# Accepted conversions
# ----------------------------------------------------------------------------------------------
def _results(X, y, theta, **kw):
    A = rn.Attribution(X, y, theta, **kw)
    return {
        "leverage": A.leverage,
        "rif": A.rescaled_influence(),
        "ns": A.group_effect([[0, 3, 5], [7]], method="ns"),
        "leverage_fn": rn.leverage(X, y, theta, **kw),
        "influence_fn": rn.influence(X, y, theta, **kw),
        "fit": rn.fit(X, y, **kw).theta,
    }


def _compare(got, ref, what):
    for key in ref:
        assert_close(got[key], ref[key], 1e-12, f"{what}: {key}", per="whole")


def _conversion_cases(X, y, theta, w):
    wide = np.zeros((X.shape[0], 2 * X.shape[1]))
    wide[:, ::2] = X
    tall = np.zeros((2 * X.shape[0], X.shape[1]))
    tall[::2] = X
    ro = X.copy()
    ro.setflags(write=False)
    yro = y.copy()
    yro.setflags(write=False)
    return {
        "Fortran X": (np.asfortranarray(X), y, theta, w),
        "column-strided X": (wide[:, ::2], y, theta, w),
        "row-strided X": (tall[::2], y, theta, w),
        "read-only X, y": (ro, yro, theta, w),
        "lists": (X.tolist(), y.tolist(), theta.tolist(), None if w is None else w.tolist()),
        "strided y, theta, w": (X, np.repeat(y, 2)[::2], np.repeat(theta, 2)[::2],
                                None if w is None else np.repeat(w, 2)[::2]),
    }


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_conversions_float(family):
    P = _base(family, fit_intercept=True)
    w = P.kw["sample_weight"]
    kw = {k: v for k, v in P.kw.items() if k != "sample_weight"}
    ref = _results(P.X, P.y, P.theta, sample_weight=w, **kw)
    for name, (X, y, theta, ww) in _conversion_cases(P.X, P.y, P.theta, w).items():
        _compare(_results(X, y, theta, sample_weight=ww, **kw), ref, name)


def test_conversions_int_and_bool():
    rng = np.random.default_rng(5)
    n, d = 40, 5
    Xi = rng.integers(-3, 4, size=(n, d))
    Xb = rng.random((n, d)) < 0.5
    y = (rng.random(n) < 0.5).astype(np.int64)
    theta = 0.2 * rng.standard_normal(d + 1)
    w = rng.integers(1, 4, size=n)
    kw = dict(l2=0.5, family="logistic", fit_intercept=True)
    for name, Xc in (("int64 X", Xi), ("int32 X", Xi.astype(np.int32)), ("bool X", Xb)):
        ref = _results(Xc.astype(np.float64), y.astype(np.float64), theta,
                       sample_weight=w.astype(np.float64), **kw)
        _compare(_results(Xc, y, theta, sample_weight=w, **kw), ref, f"{name}, int y, int w")
        _compare(_results(Xc, y.astype(bool), theta, sample_weight=w, **kw), ref, f"{name}, bool y")
    # and the converted call is right, not merely self-consistent
    A = rn.Attribution(Xi, y, theta, sample_weight=w, **kw)
    R = Reference(Xi, y, theta, sample_weight=w, **kw)
    assert_close(A.leverage, R.h, 1e-9, "int X leverage")


def test_float32_noncontiguous_X():
    """float32 that is not C-contiguous is converted once; values still used exactly."""
    P = _base("squared", fit_intercept=True)
    X32 = np.asfortranarray(P.X.astype(np.float32))
    R = Reference(X32.astype(np.float64), P.y, P.theta, **P.kw)
    A = rn.Attribution(X32, P.y, P.theta, **P.kw)
    assert_close(A.leverage, R.h, 1e-9, "Fortran float32 leverage")
    assert_close(A.rescaled_influence(), R.RIF, 1e-9, "Fortran float32 RIF")


def test_inputs_not_modified():
    P = _base("poisson", fit_intercept=True)
    X, y, theta, w = P.X.copy(), P.y.copy(), P.theta.copy(), P.kw["sample_weight"].copy()
    A = rn.Attribution(P.X, P.y, P.theta, **P.kw)
    A.rescaled_influence()
    A.group_effect([0, 1, 2], method="ns")
    rn.fit(P.X, P.y, **P.kw)
    np.testing.assert_array_equal(P.X, X)
    np.testing.assert_array_equal(P.y, y)
    np.testing.assert_array_equal(P.theta, theta)
    np.testing.assert_array_equal(P.kw["sample_weight"], w)


@pytest.mark.parametrize("value", ["False", 0, 1, None])
def test_fit_intercept_must_be_a_bool(value):
    """The string "False" counted as True (fit_intercept = bool(value)): now a TypeError."""
    X = np.random.default_rng(0).standard_normal((20, 2))
    y = (X[:, 0] > 0).astype(float)
    for call in (lambda: rn.fit(X, y, l2=1.0, fit_intercept=value),
                 lambda: rn.Attribution(X, y, np.zeros(3), l2=1.0, fit_intercept=value),
                 lambda: rn.fit(X, y, l2=1.0, family="multinomial", fit_intercept=value),
                 lambda: rn.metrics.TestPrediction(X, fit_intercept=value),
                 lambda: rn.metrics.Logit(X[0], fit_intercept=value),
                 lambda: rn.multiclass_metrics.TestLoss(X, y, fit_intercept=value)):
        with pytest.raises(TypeError, match="fit_intercept must be True or False"):
            call()
    assert rn.fit(X, y, l2=1.0, fit_intercept=np.bool_(True)).converged


def test_fit_with_every_weight_zero():
    """The intercept (or, with l2 = 0, every parameter) has no data: refused, where theta = 0
    came back as converged. With l2 > 0 and no intercept theta = 0 is the minimiser."""
    X = np.random.default_rng(0).standard_normal((20, 2))
    y = (X[:, 0] > 0).astype(float)
    for kw in (dict(l2=1.0, fit_intercept=True), dict(l2=0.0)):
        with pytest.raises(ValueError, match="sample_weight is 0 for every sample"):
            rn.fit(X, y, sample_weight=np.zeros(20), **kw)
    res = rn.fit(X, y, l2=1.0, sample_weight=np.zeros(20))
    assert res.converged and not np.any(res.theta)


def test_a_path_to_x_that_is_not_npy_says_what_it_is(tmp_path):
    """An HDF5 file, an .npz or a text file given as X's path: named for what it is (NumPy's
    "pickled data, allow_pickle" message, or "several arrays" for a one-array .npz, before)."""
    h5py = pytest.importorskip("h5py")
    X = np.random.default_rng(0).standard_normal((10, 2))
    y = (X[:, 0] > 0).astype(float)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("X", data=X)
    np.savez(tmp_path / "x.npz", X=X)
    (tmp_path / "x.csv").write_text("1,2\n")
    for name, what in (("x.h5", "an HDF5 file"), ("x.npz", r"an \.npz"),
                       ("x.csv", r"not a \.npy file")):
        with pytest.raises(ValueError, match=what):
            rn.Attribution(str(tmp_path / name), y, np.zeros(3), l2=1.0, fit_intercept=True)
    np.save(tmp_path / "x.npy", X)
    A = rn.Attribution(str(tmp_path / "x.npy"), y, np.zeros(2), l2=1.0)
    assert np.allclose(A.leverage, rn.Attribution(X, y, np.zeros(2), l2=1.0).leverage)


def test_memory_refusal_names_the_store_chunks_when_they_dominate(tmp_path):
    """An HDF5 X chunked in whole 2 MiB chunks at p = 65: the readers' chunks are most of the
    need, so the refusal says so (it said "use fewer features ... the p x p factors dominate")."""
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40000, 64))
    y = (X[:, 0] > 0).astype(float)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(4096, 64))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        S = rn.sources.open_source(f["X"])
        need = rn._memory.attribution_bytes(40000, 65, 1) + rn._memory.source_bytes(S)
        assert rn._memory.source_bytes(S) > 0.5 * need  # the case this test is for
        with pytest.raises(MemoryError, match="read in whole chunks"):
            rn.Attribution(f["X"], y, np.zeros(65), l2=1.0, fit_intercept=True,
                           num_threads=1, max_memory=need / 2)
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(MemoryError, match="per-sample vectors"):  # 8 n doubles: most of it
        rn.Attribution(str(tmp_path / "x.npy"), y, np.zeros(65), l2=1.0, fit_intercept=True,
                       num_threads=1, max_memory=1e5)


@pytest.mark.parametrize("entry", ["fit", "Attribution"])
def test_unknown_family_lists_multinomial(entry):
    """fit and Attribution take family='multinomial' too; an unknown family's message listed
    only 'logistic', 'squared' or 'poisson' (the compiled core's three)."""
    P = _base()
    kw = dict(P.kw, family="gaussian")
    _check(ValueError, [r"'multinomial'", r"'gaussian'"],
           lambda: ENTRIES[entry](P.X, P.y, P.theta, **kw))


def test_n_classes_is_refused_outside_the_multinomial_family():
    """fit(..., n_classes=3) with a binary family was silently ignored; 2 with logistic is
    consistent and accepted (equal to the fit without it)."""
    P = _base()
    with pytest.raises(ValueError, match="n_classes is for family='multinomial'"):
        rn.fit(P.X, P.y, n_classes=3)
    with pytest.raises(ValueError, match="n_classes is for family='multinomial'"):
        rn.fit(P.X, P.y, family="poisson", n_classes=2)
    with pytest.raises(ValueError, match="n_classes is for family='multinomial'"):
        rn.fit(P.X, P.y, n_classes=2.0)
    with pytest.raises(ValueError, match="family must be .*got 'gaussian'"):
        rn.fit(P.X, P.y, family="gaussian", n_classes=3)
    a = rn.fit(P.X, P.y, n_classes=2, l2=1.0)
    np.testing.assert_array_equal(a.theta, rn.fit(P.X, P.y, l2=1.0).theta)


@pytest.mark.parametrize("call", ["attribution", "fit"])
def test_memory_refusal_names_what_dominates_the_need(call):
    """'use fewer features ... the p x p factors dominate' was said for every shape. A tall X
    (n = 200,000, p = 9) needs its per-sample vectors, 2,000 x 500 on two threads its row
    blocks (per thread), and only a wide X (p = 400, n = 500) its p x p factors."""
    rng = np.random.default_rng(3)
    for (n, d), threads, said in (((200000, 8), 1, "per-sample vectors"),
                                  ((2000, 499), 2, "fewer threads"),
                                  ((500, 399), 1, "factors dominate")):
        if threads > rn._core.build_info()["max_threads"]:
            continue  # (one core: a pass holds one thread's row blocks, the least it can)
        X = rng.standard_normal((n, d))
        y = (X[:, 0] > 0).astype(float)
        kw = dict(l2=1.0, fit_intercept=True, num_threads=threads, max_memory=1e5)
        with pytest.raises(MemoryError) as info:
            if call == "fit":
                rn.fit(X, y, **kw)
            else:
                rn.Attribution(X, y, np.zeros(d + 1), **kw)
        msg = str(info.value)
        assert said in msg and len(msg) < 300, msg
        others = {"per-sample vectors", "fewer threads", "factors dominate"} - {said}
        assert not any(other in msg for other in others), msg
