"""rif_native.sklearn: fitted scikit-learn estimators -> Attribution.

The mappings under test (derived in python/rif_native/sklearn.py, restated here independently):

  LogisticRegression  sklearn minimises C sum_i s_i loss_i + 1/2 ||w||^2   ->  l2 = 1 / C
                      (s_i = sample_weight_i x class_weight[y_i]; C = inf / no penalty -> l2 = 0)
  Ridge               sum_i s_i (y_i - z_i)^2 + alpha ||w||^2 = 2 F          ->  l2 = alpha
  LinearRegression                                                          ->  l2 = 0
  PoissonRegressor    1/(2S) sum_i s_i deviance_i + alpha/2 ||w||^2          ->  l2 = alpha * S
                      (S = sum of sample weights, n without them)

For each: the estimator's coefficients must be a stationary point of our F with that l2
(checked with the NumPy gradient of conftest, independently of the package, and with
Attribution.gradient_norm), rif_native.fit with the mapped (family, l2, fit_intercept) must
reproduce them, and the Attribution's leverage / RIF must match the float64 NumPy reference.

Tolerances: relative gradient ||grad F(theta)|| / ||grad F(0)|| <= 1e-9 for Newton-type sklearn
solvers and exact solvers (1e-6 for lbfgs); coefficients: norm-wise relative error <= 1e-6
(1e-5 for lbfgs); leverage and RIF rows: per-row relative error <= 1e-9 against the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rif_native as rn
from conftest import Reference, assert_close, gradient, rel_err, sigmoid

sklearn = pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning  # noqa: E402
from sklearn.linear_model import (  # noqa: E402
    LinearRegression,
    LogisticRegression,
    LogisticRegressionCV,
    PoissonRegressor,
    Ridge,
)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import LinearSVC  # noqa: E402

from rif_native.sklearn import SUPPORTED_ESTIMATORS, from_estimator, to_l2  # noqa: E402

LABELS = np.array(["cat", "dog"])  # classes_[1] = "dog" is the positive class
N, D = 150, 6


# --------------------------------------------------------------------------------------------
# Data and cases
# --------------------------------------------------------------------------------------------
def make_data(rng, family, n=N, d=D):
    """Features and targets in sklearn's form (string labels for the logistic family)."""
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    z = X @ rng.standard_normal(d) + 0.3
    if family == "logistic":
        y = LABELS[(rng.random(n) < sigmoid(z)).astype(int)]
    elif family == "squared":
        y = z + 0.5 * rng.standard_normal(n)
    else:
        y = rng.poisson(np.exp(z)).astype(np.float64)
    return X, y


def ours(y, family):
    """The targets of rif_native's objective: logistic labels as 0/1 with "dog" (classes_[1]) 1."""
    return (y == LABELS[1]).astype(np.float64) if family == "logistic" else y


# name -> (estimator factory, family, expected l2 as a function of the sample weights' sum S,
#          relative gradient tolerance, coefficient tolerance)
CASES = {
    "logistic-newton": (
        lambda: LogisticRegression(C=0.7, tol=1e-12, max_iter=1000, solver="newton-cholesky"),
        "logistic", lambda S: 1 / 0.7, 1e-9, 1e-6),
    "logistic-lbfgs": (
        lambda: LogisticRegression(C=0.3, tol=1e-12, max_iter=10000),
        "logistic", lambda S: 1 / 0.3, 1e-6, 1e-5),
    "logistic-unpenalised": (
        lambda: LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000, solver="newton-cholesky"),
        "logistic", lambda S: 0.0, 1e-9, 1e-6),
    "logistic-no-intercept": (
        lambda: LogisticRegression(C=2.0, fit_intercept=False, tol=1e-12, max_iter=1000,
                                   solver="newton-cholesky"),
        "logistic", lambda S: 0.5, 1e-9, 1e-6),
    "ridge": (lambda: Ridge(alpha=2.5), "squared", lambda S: 2.5, 1e-9, 1e-6),
    "ridge-no-intercept": (lambda: Ridge(alpha=0.4, fit_intercept=False), "squared",
                           lambda S: 0.4, 1e-9, 1e-6),
    "ols": (lambda: LinearRegression(), "squared", lambda S: 0.0, 1e-9, 1e-6),
    "poisson-newton": (
        lambda: PoissonRegressor(alpha=0.05, tol=1e-12, max_iter=1000, solver="newton-cholesky"),
        "poisson", lambda S: 0.05 * S, 1e-9, 1e-6),
    "poisson-lbfgs": (
        lambda: PoissonRegressor(alpha=0.02, fit_intercept=False, tol=1e-12, max_iter=10000),
        "poisson", lambda S: 0.02 * S, 1e-6, 1e-5),
}


def theta_of(est):
    coef = np.ravel(est.coef_)
    return np.append(coef, np.ravel(est.intercept_)[0]) if est.fit_intercept else coef.copy()


def relative_gradient(X, y, theta, **kw):
    g = np.linalg.norm(gradient(X, y, theta, **kw))
    g0 = np.linalg.norm(gradient(X, y, np.zeros_like(theta), **kw))
    return g / g0


# --------------------------------------------------------------------------------------------
# The mappings, estimator by estimator, with and without sample weights
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("case", list(CASES))
def test_mapping_matches_sklearn(case, weighted, rng, seed):
    factory, family, expected_l2, grad_tol, coef_tol = CASES[case]
    X, y = make_data(rng, family)
    sw = None
    if weighted:
        sw = rng.uniform(0.25, 3.0, N)  # sum far from n: PoissonRegressor's l2 depends on it
        sw[rng.integers(N)] = 0.0
    with warnings.catch_warnings():
        # At tol=1e-12 the newton-cholesky line search can stall in rounding and hand over to
        # lbfgs with a ConvergenceWarning (seen with PoissonRegressor): scikit-learn's business.
        # Whether its result is a minimiser of our F is checked below, on the gradient.
        warnings.simplefilter("ignore", SkConvergenceWarning)
        est = factory().fit(X, y, sample_weight=sw)
    S = N if sw is None else sw.sum()

    family_got, l2, fit_intercept = to_l2(est, N, sw)
    assert family_got == family
    assert l2 == pytest.approx(expected_l2(S), rel=1e-15)
    assert fit_intercept == est.fit_intercept

    yt = ours(y, family)
    kw = dict(l2=l2, family=family, sample_weight=sw, fit_intercept=fit_intercept)
    theta = theta_of(est)

    # 1. the mapping: sklearn's coefficients minimise our F (NumPy gradient, package-free)
    rg = relative_gradient(X, yt, theta, **kw)
    assert rg <= grad_tol, f"{case}: relative gradient {rg:.2e} (seed={seed})"

    # 2. the Attribution: same theta, stationary, leverage and RIF as the float64 reference
    A = from_estimator(est, X, y, sample_weight=sw)  # would raise on any warning
    assert (A.family, A.l2, A.fit_intercept) == (family, l2, fit_intercept)
    np.testing.assert_array_equal(A.theta, theta)
    g0 = np.linalg.norm(gradient(X, yt, np.zeros_like(theta), **kw))
    assert A.gradient_norm / g0 <= grad_tol
    ref = Reference(X, yt, theta, **kw)
    assert_close(A.leverage, ref.h, 1e-9, f"{case} leverage", seed)
    assert_close(A.rescaled_influence(), ref.RIF, 1e-9, f"{case} RIF", seed)

    # 3. rif_native.fit with the mapped objective reproduces sklearn's coefficients
    fr = rn.fit(X, yt, tol=1e-13, **kw)
    assert fr.converged
    err = rel_err(fr.theta, theta)
    assert err <= coef_tol, f"{case}: fit vs sklearn coefficients {err:.2e} (seed={seed})"


@pytest.mark.parametrize("class_weight", ["dict", "balanced"])
def test_logistic_class_weight_enters_the_weights(class_weight, rng, seed):
    """class_weight multiplies the sample weights, as in sklearn's fit."""
    X, y = make_data(rng, "logistic")
    yt = ours(y, "logistic")
    if class_weight == "dict":
        sw = rng.uniform(0.5, 2.0, N)
        cw = {"cat": 0.5, "dog": 3.0}
        w = sw * np.where(yt == 1, 3.0, 0.5)
    else:  # "balanced" without sample weights: n / (2 * count of the class)
        sw, cw = None, "balanced"
        counts = np.bincount(yt.astype(int), minlength=2)
        w = (N / (2.0 * counts))[yt.astype(int)]
    est = LogisticRegression(C=1.5, class_weight=cw, tol=1e-12, max_iter=1000,
                             solver="newton-cholesky").fit(X, y, sample_weight=sw)
    theta = theta_of(est)
    kw = dict(l2=1 / 1.5, family="logistic", sample_weight=w, fit_intercept=True)
    assert relative_gradient(X, yt, theta, **kw) <= 1e-9

    A = from_estimator(est, X, y, sample_weight=sw)
    ref = Reference(X, yt, theta, **kw)
    assert_close(A.curvature, ref.a, 1e-12, "curvature with class weights", seed)
    assert_close(A.residuals, ref.r, 1e-12, "residuals with class weights", seed, rowwise=False)
    assert_close(A.rescaled_influence(), ref.RIF, 1e-9, "RIF with class weights", seed)


def test_labels_map_classes_1_to_one(rng):
    """Integer labels -1/+1 and swapped string labels: classes_[1] is always the 1."""
    X, y = make_data(rng, "logistic")
    for labels in (np.array([-1, 1]), np.array(["b", "a"])):
        y_alt = labels[(y == LABELS[1]).astype(int)]
        est = LogisticRegression(C=1.0, tol=1e-12, solver="newton-cholesky").fit(X, y_alt)
        A = from_estimator(est, X, y_alt)
        r = A.residuals  # sigma(z) - y: negative exactly where y == 1 == classes_[1]
        assert np.array_equal(r < 0, y_alt == est.classes_[1])


def test_float32_and_column_vector_inputs(rng):
    X, y = make_data(rng, "squared")
    est = Ridge(alpha=1.0).fit(X, y)
    A64 = from_estimator(est, X, y)
    A32 = from_estimator(est, X.astype(np.float32), y[:, None], check_stationary=False)
    ref = Reference(X.astype(np.float32), y, theta_of(est), l2=1.0, family="squared",
                    fit_intercept=True)
    assert_close(A32.leverage, ref.h, 1e-9, "float32 leverage")
    assert rel_err(A32.leverage, A64.leverage) < 1e-5


def test_solver_and_precision_reach_the_attribution(rng):
    """from_estimator passes Attribution's solver and precision through: the dual path and
    float32 products give the primal float64 leverages (to 1e-10 and, for float32 products on
    this well-conditioned problem, 1e-4), and say which ran."""
    X = rng.standard_normal((60, 90)) / np.sqrt(90)  # n < p: the dual path applies
    y = (rng.random(60) < 0.5).astype(float)
    est = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X, y)
    ref = from_estimator(est, X, y, solver="primal")
    dual = from_estimator(est, X, y, solver="dual")
    assert (ref.solver, dual.solver) == ("primal", "dual")
    assert rel_err(dual.leverage, ref.leverage) < 1e-10
    X2 = rng.standard_normal((400, 20)).astype(np.float32)
    y2 = (rng.random(400) < 0.5).astype(float)
    # (fitted on the same values in float64: scikit-learn fits float32 data in float32)
    est2 = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X2.astype(float), y2)
    mixed = from_estimator(est2, X2, y2, precision="mixed")
    assert mixed.precision == "mixed"
    assert rel_err(mixed.leverage, from_estimator(est2, X2, y2).leverage) < 1e-4
    y3 = np.arange(60) % 3
    est3 = LogisticRegression(C=1.0, max_iter=10_000).fit(X[:, :5], y3)
    with pytest.raises(ValueError, match="leave solver='auto' and precision='double'"):
        from_estimator(est3, X[:, :5], y3, precision="mixed")


# --------------------------------------------------------------------------------------------
# Penalties that cannot be represented, and other errors
# --------------------------------------------------------------------------------------------
def _hyper(**attrs):
    """An unfitted LogisticRegression with hyperparameters set as attributes (no validation), so
    both the scikit-learn < 1.8 (penalty=...) and >= 1.8 (penalty deprecated) spellings are
    exercised whatever version is installed."""
    est = LogisticRegression()
    for k, v in attrs.items():
        setattr(est, k, v)
    return est


@pytest.mark.parametrize("attrs, l2", [
    (dict(penalty="l2", C=0.25), 4.0),
    (dict(penalty=None, C=0.25), 0.0),
    (dict(penalty="none", C=0.25), 0.0),
    (dict(penalty="l2", C=np.inf), 0.0),
    (dict(penalty="elasticnet", l1_ratio=0.0, C=0.5), 2.0),
    (dict(penalty="deprecated", l1_ratio=0.0, C=0.25), 4.0),
    (dict(penalty="deprecated", l1_ratio=None, C=0.25), 4.0),
    (dict(penalty="deprecated", l1_ratio=0.0, C=np.inf), 0.0),
    (dict(penalty="deprecated", l1_ratio=1.0, C=np.inf), 0.0),  # sklearn: C = inf, no penalty
])
def test_logistic_penalty_spellings(attrs, l2):
    assert to_l2(_hyper(**attrs), 10) == ("logistic", l2, True)


@pytest.mark.parametrize("attrs, match", [
    (dict(penalty="l1"), "penalty='l1'"),
    (dict(penalty="elasticnet", l1_ratio=0.5), "elasticnet"),
    (dict(penalty="deprecated", l1_ratio=1.0, C=1.0), r"L1 penalty \(l1_ratio=1\)"),
    (dict(penalty="deprecated", l1_ratio=0.3, C=1.0), "elastic-net"),
])
def test_l1_penalties_rejected(attrs, match):
    with pytest.raises(ValueError, match=match) as info:
        to_l2(_hyper(**attrs), 10)
    assert "cannot be represented" in str(info.value)
    assert "only an L2 penalty" in str(info.value)


def test_l1_fitted_estimator_rejected(rng):
    X, y = make_data(rng, "logistic")
    new_api = LogisticRegression().get_params()["penalty"] == "deprecated"
    params = dict(l1_ratio=1.0) if new_api else dict(penalty="l1")
    est = LogisticRegression(solver="liblinear", fit_intercept=False, **params).fit(X, y)
    with pytest.raises(ValueError, match="L1 .*cannot be represented|cannot be represented"):
        from_estimator(est, X, y)


def test_multiclass_is_multinomial(rng):
    """A multinomial LogisticRegression on 3 classes becomes a MultinomialAttribution whose
    probabilities are the estimator's; labels are mapped through classes_."""
    X = rng.standard_normal((90, 3))
    labels = np.array(["a", "b", "c"])[np.repeat([0, 1, 2], 30)]
    est = LogisticRegression(C=2.0, tol=1e-12, max_iter=10000).fit(X, labels)
    A = from_estimator(est, X, labels)
    assert isinstance(A, rn.MultinomialAttribution)
    assert A.n_classes == 3 and A.l2 == 0.5
    np.testing.assert_allclose(A.probabilities, est.predict_proba(X), rtol=0, atol=1e-12)


def test_one_vs_rest_rejected(rng):
    X = rng.standard_normal((90, 3))
    y = np.repeat([0, 1, 2], 30)
    est = LogisticRegression(max_iter=1000).fit(X, y)
    est.multi_class = "ovr"  # what older scikit-learn versions fit on request
    with pytest.raises(ValueError, match=r"one-vs-rest"):
        from_estimator(est, X, y)


@pytest.mark.parametrize("make", [
    lambda: LinearSVC(),
    lambda: LogisticRegressionCV(),
    lambda: make_pipeline(StandardScaler(), LinearSVC()),
    lambda: object(),
])
def test_unsupported_estimators(make):
    est = make()
    with pytest.raises(TypeError, match="unsupported estimator") as info:
        from_estimator(est, np.zeros((3, 2)), np.zeros(3))
    for name in SUPPORTED_ESTIMATORS:
        assert name in str(info.value)
    with pytest.raises(TypeError, match="unsupported estimator"):
        to_l2(est, 3)


def test_subclass_of_supported_estimator_accepted(rng):
    class MyRidge(Ridge):
        pass

    X, y = make_data(rng, "squared")
    A = from_estimator(MyRidge(alpha=3.0).fit(X, y), X, y)
    assert A.l2 == 3.0


def test_data_and_model_errors(rng):
    X, y = make_data(rng, "logistic")
    est = LogisticRegression(tol=1e-10, solver="newton-cholesky").fit(X, y)
    with pytest.raises(ValueError, match=r"X has 5 columns .*fitted on 6 features"):
        from_estimator(est, X[:, :5], y)
    with pytest.raises(ValueError, match="not among the estimator's classes_"):
        from_estimator(est, X, np.where(y == "cat", "cow", y))
    with pytest.raises(ValueError, match="y must have shape"):
        from_estimator(est, X, y[:-1])
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        from_estimator(est, X, y, sample_weight=np.ones(N - 1))
    with pytest.raises(ValueError, match="not fitted"):
        from_estimator(LogisticRegression(), X, y)

    lib = LogisticRegression(solver="liblinear").fit(X, y)
    with pytest.raises(ValueError, match="liblinear.*penalises the intercept"):
        from_estimator(lib, X, y)

    Xr, yr = make_data(rng, "squared")
    pos = Ridge(alpha=1.0, positive=True).fit(Xr, yr)
    with pytest.raises(ValueError, match="positive=True"):
        from_estimator(pos, Xr, yr)
    two = Ridge(alpha=1.0).fit(Xr, np.column_stack([yr, -yr]))
    with pytest.raises(ValueError, match="single output"):
        from_estimator(two, Xr, yr)
    with pytest.raises(ValueError, match="one alpha|alphas"):
        to_l2(Ridge(alpha=np.array([1.0, 2.0])), N)
    with pytest.raises(ValueError, match="n_samples"):
        to_l2(Ridge(), 0)


# --------------------------------------------------------------------------------------------
# Stationarity check
# --------------------------------------------------------------------------------------------
def test_unconverged_estimator_warns(rng):
    X, y = make_data(rng, "logistic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)  # sklearn's own, expected here
        est = LogisticRegression(C=1.0, max_iter=1).fit(X, y)
    with pytest.warns(rn.ConvergenceWarning, match="not a stationary point") as rec:
        A = from_estimator(est, X, y)
    msg = str(rec[0].message)
    assert "max_iter" in msg and "rif_native.fit" in msg and "l2=1" in msg
    assert A.gradient_norm > 0
    # the check can be switched off, or loosened
    from_estimator(est, X, y, check_stationary=False)
    from_estimator(est, X, y, rtol=np.inf)


def test_wrong_data_warns(rng):
    """Weights the estimator was not fitted with move the optimum: the check notices."""
    X, y = make_data(rng, "poisson")
    est = PoissonRegressor(alpha=0.1, tol=1e-12, solver="newton-cholesky").fit(X, y)
    from_estimator(est, X, y)  # no warning
    with pytest.warns(rn.ConvergenceWarning, match="sample_weight are the data"):
        from_estimator(est, X, y, sample_weight=rng.uniform(0.1, 5.0, N))
