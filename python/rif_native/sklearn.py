"""Build an :class:`~rif_native.Attribution` from a fitted scikit-learn estimator.

scikit-learn is not imported when this module is imported: estimators are recognised by the
name of their scikit-learn class (the first class of their MRO that lives in ``sklearn``), and
scikit-learn itself is imported only where a helper of its own is needed (``class_weight``).

Each supported estimator minimises a multiple of this package's objective

    F(theta) = sum_i w_i loss(y_i, z_i) + (l2 / 2) ||theta||_P^2     (a sum; intercept unpenalised)

so its coefficients are the minimiser of F for one ``l2``, given by :func:`to_l2`:

==========================  ==========  ===========================================================
estimator                   family      l2 (S = sum of sample weights, n when there are none)
==========================  ==========  ===========================================================
LogisticRegression          logistic    1 / C; 0 for C = inf or no penalty. sklearn minimises
                                        C sum_i s_i loss_i + 1/2 ||w||^2 with s_i = sample_weight
                                        x class_weight, i.e. F / C with w_i = s_i.
Ridge                       squared     alpha. sklearn minimises sum_i s_i (y_i - z_i)^2
                                        + alpha ||w||^2 = 2 F.
LinearRegression            squared     0
PoissonRegressor            poisson     alpha * S. sklearn minimises 1/(2S) sum_i s_i dev_i
                                        + alpha/2 ||w||^2 with half deviance dev_i / 2 =
                                        e^z - y z + const(y), i.e. (F + const) / S.
==========================  ==========  ===========================================================

``theta`` is ``coef_`` followed by ``intercept_`` (last) when the estimator fitted one.
Every estimate of the resulting object is a removal effect ``theta_{-T} - theta_hat``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Optional

import numpy as np

from . import _frames
from ._api import Attribution, ConvergenceWarning

__all__ = ["SUPPORTED_ESTIMATORS", "from_estimator", "to_l2"]

#: scikit-learn estimators (class names) that map exactly onto rif_native's objective.
SUPPORTED_ESTIMATORS = ("LogisticRegression", "Ridge", "LinearRegression", "PoissonRegressor")

_FAMILY = {
    "LogisticRegression": "logistic",
    "Ridge": "squared",
    "LinearRegression": "squared",
    "PoissonRegressor": "poisson",
}


# ----------------------------------------------------------------------------- recognising


def _sklearn_class_name(estimator: Any) -> Optional[str]:
    """Name of the first class in the estimator's MRO defined inside scikit-learn, or None.

    A user's subclass of ``LogisticRegression`` is a ``LogisticRegression``; scikit-learn's own
    ``LogisticRegressionCV`` (a subclass too) is not, because its first sklearn class is itself.
    """
    for cls in type(estimator).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if module == "sklearn" or module.startswith("sklearn."):
            return cls.__name__
    return None


def _kind(estimator: Any) -> str:
    """The supported estimator's class name; TypeError naming the supported ones otherwise."""
    name = _sklearn_class_name(estimator)
    if name in SUPPORTED_ESTIMATORS:
        return name
    what = type(estimator).__name__
    supported = ", ".join(SUPPORTED_ESTIMATORS)
    if name is None:
        hint = " Only scikit-learn estimators are recognised."
    else:
        hint = (" Its objective has no exact equivalent here; fit the model with rif_native.fit "
                "and build rif_native.Attribution from its theta instead.")
    raise TypeError(f"unsupported estimator {what}: from_estimator supports the scikit-learn "
                    f"estimators {supported}.{hint}")


# ----------------------------------------------------------------------------- penalties


def _is_inf(value: Any) -> bool:
    try:
        return math.isinf(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


def _l1_error(detail: str) -> ValueError:
    return ValueError(
        f"LogisticRegression with {detail} cannot be represented: rif_native's objective has "
        "only an L2 penalty (l2/2)||theta||^2, and an L1 term is not twice differentiable, so "
        "leverages, influence and Newton steps are undefined for it. Refit with an L2 penalty "
        "(l1_ratio=0, or penalty='l2' on scikit-learn < 1.8) or without a penalty (C=np.inf).")


def _logistic_l2(estimator: Any) -> float:
    """l2 = 1 / C for LogisticRegression's L2 penalty, 0 when it has none.

    Handles scikit-learn >= 1.8 (``penalty`` deprecated: ``l1_ratio`` picks the penalty and
    ``C = inf`` means none) and older versions (``penalty`` in "l2", "l1", "elasticnet",
    None, "none").
    """
    C = getattr(estimator, "C", 1.0)
    penalty = getattr(estimator, "penalty", "l2")
    l1_ratio = getattr(estimator, "l1_ratio", None)
    if penalty == "deprecated":                 # scikit-learn >= 1.8
        if _is_inf(C):
            return 0.0                          # sklearn: C = inf means no penalty at all
        if l1_ratio is not None and float(l1_ratio) != 0.0:
            detail = ("an L1 penalty (l1_ratio=1)" if float(l1_ratio) == 1.0
                      else f"an elastic-net penalty (l1_ratio={l1_ratio})")
            raise _l1_error(detail)
        penalty = "l2"
    if penalty is None or penalty == "none":
        return 0.0                              # sklearn ignores C here
    if penalty == "l1":
        raise _l1_error("penalty='l1'")
    if penalty == "elasticnet":
        if l1_ratio is None or float(l1_ratio) != 0.0:
            raise _l1_error(f"penalty='elasticnet' (l1_ratio={l1_ratio})")
        penalty = "l2"                          # elastic net with l1_ratio = 0 is pure L2
    if penalty != "l2":
        raise ValueError(f"LogisticRegression has penalty={penalty!r}, which rif_native does not "
                         "know; only an L2 penalty or none can be represented")
    C = float(C)
    if not C > 0:
        raise ValueError(f"LogisticRegression has C={C}; C must be > 0")
    return 0.0 if math.isinf(C) else 1.0 / C


def _single_alpha(estimator: Any) -> float:
    alpha = np.asarray(getattr(estimator, "alpha", 1.0), dtype=np.float64)
    if alpha.size != 1:
        raise ValueError(f"Ridge has {alpha.size} alphas (one per target); rif_native handles one "
                         "target: fit one Ridge per target column")
    value = float(alpha.reshape(-1)[0])
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"Ridge has alpha={value}; it must be finite and >= 0")
    return value


def _weight_sum(n_samples: int, sample_weight: Optional[Any]) -> float:
    if sample_weight is None:
        return float(n_samples)
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 0:                            # sklearn accepts a scalar weight for all samples
        return float(sw) * n_samples
    if sw.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {sw.shape}")
    return float(sw.sum())


def to_l2(estimator: Any, n_samples: int, sample_weight: Optional[Any] = None
          ) -> tuple[str, float, bool]:
    """(family, l2, fit_intercept): the rif_native objective a scikit-learn estimator minimises.

    The estimator need not be fitted: only its hyperparameters are read.

    * LogisticRegression: "logistic", ``l2 = 1 / C`` (0 for ``C = inf`` or no penalty; its weights
      are ``sample_weight`` times ``class_weight``, see :func:`from_estimator`). L1 and elastic
      net penalties raise ValueError.
    * Ridge: "squared", ``l2 = alpha``.
    * LinearRegression: "squared", ``l2 = 0``.
    * PoissonRegressor: "poisson", ``l2 = alpha * S`` with S = ``sum(sample_weight)`` (n_samples
      when None): scikit-learn normalises the deviance by the sum of the weights.

    Args:
        estimator: a scikit-learn estimator of a supported class (TypeError otherwise).
        n_samples: number of training samples (only PoissonRegressor's l2 depends on it).
        sample_weight: the weights passed to ``estimator.fit``, if any.
    """
    kind = _kind(estimator)
    n_samples = int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    fit_intercept = bool(getattr(estimator, "fit_intercept", True))
    if kind == "LogisticRegression":
        l2 = _logistic_l2(estimator)
    elif kind == "Ridge":
        l2 = _single_alpha(estimator)
    elif kind == "LinearRegression":
        l2 = 0.0
    else:  # PoissonRegressor
        alpha = float(getattr(estimator, "alpha", 1.0))
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"PoissonRegressor has alpha={alpha}; it must be finite and >= 0")
        l2 = alpha * _weight_sum(n_samples, sample_weight)
    return _FAMILY[kind], float(l2), fit_intercept


# ----------------------------------------------------------------------------- data


def _design(X: Any, estimator: Any, kind: str) -> Any:
    """X as a 2-D float64/float32 C-contiguous array (or a SciPy CSR matrix, which the passes
    read sparsely) with the estimator's number of columns."""
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):
        return _sparse_design(X, estimator, kind)
    names = getattr(estimator, "feature_names_in_", None)
    columns = getattr(X, "columns", None)
    if names is not None and columns is not None:
        got = [str(c) for c in columns]
        if got != [str(c) for c in names]:
            raise ValueError(f"X's columns {got[:5]}... differ from the feature names the "
                             f"{kind} was fitted with {list(names)[:5]}...; pass the training "
                             "data with the same columns in the same order")
    # a DataFrame's columns of several dtypes (bool, nullable Int64) as one float array
    arr = _frames._frame_array(X) if columns is not None and _frames.is_pandas(X) \
        else np.asarray(X)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (n samples x d features), got shape {arr.shape}")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and arr.shape[1] != int(expected):
        raise ValueError(f"X has {arr.shape[1]} columns but the {kind} was fitted on "
                         f"{int(expected)} features (n_features_in_): pass its training data")
    if arr.dtype not in (np.float64, np.float32) or not arr.dtype.isnative:
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _sparse_design(X: Any, estimator: Any, kind: str) -> Any:
    if len(X.shape) != 2:
        raise ValueError(f"X must be 2-D (n samples x d features), got shape {X.shape}")
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and X.shape[1] != int(expected):
        raise ValueError(f"X has {X.shape[1]} columns but the {kind} was fitted on "
                         f"{int(expected)} features (n_features_in_): pass its training data")
    if np.dtype(X.dtype).kind not in "biuf":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    X = X.tocsr()
    return X if X.dtype in (np.float64, np.float32) else X.astype(np.float64)


def _labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]                         # a column vector, as scikit-learn ravels it
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"y must have shape ({n},), one label per row of X, got {arr.shape}")
    return arr


def _weights(sample_weight: Optional[Any], n: int) -> Optional[np.ndarray]:
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 0:
        return np.full(n, float(sw))
    if sw.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), one weight per row of X, "
                         f"got {sw.shape}")
    return sw


def _class_weights(estimator: Any, y: np.ndarray, sample_weight: Optional[np.ndarray]
                   ) -> Optional[np.ndarray]:
    """Per-sample class weights of a LogisticRegression, as its fit multiplies them in."""
    class_weight = getattr(estimator, "class_weight", None)
    if class_weight is None:
        return None
    from sklearn.utils.class_weight import compute_class_weight  # only with scikit-learn at hand

    classes = estimator.classes_
    try:
        per_class = compute_class_weight(class_weight, classes=classes, y=y,
                                         sample_weight=sample_weight)
    except TypeError:                           # scikit-learn without weighted "balanced"
        per_class = compute_class_weight(class_weight, classes=classes, y=y)
    return np.asarray(per_class, dtype=np.float64)[np.searchsorted(classes, y)]


def _logistic_targets(estimator: Any, y: np.ndarray) -> np.ndarray:
    classes = np.asarray(estimator.classes_)
    if classes.shape[0] != 2:
        raise ValueError(f"LogisticRegression was fitted on {classes.shape[0]} classes "
                         f"({list(classes)[:10]}); a binary model needs two classes "
                         "(classes_[1] as 1), a multinomial one three or more.")
    if getattr(estimator, "multi_class", None) == "multinomial":
        raise ValueError("LogisticRegression(multi_class='multinomial') on two classes uses a "
                         "symmetric softmax parameterisation, not binary logistic regression; "
                         "refit with the default multi_class")
    _check_known(y, classes)
    return (y == classes[1]).astype(np.float64)


def _check_known(y: np.ndarray, classes: np.ndarray) -> None:
    known = np.isin(y, classes)
    if not known.all():
        raise ValueError(f"y holds label {y[~known][0]!r}, not among the estimator's classes_ "
                         f"{list(classes)[:10]}: pass the labels it was fitted on")


def _multinomial(estimator: Any, X: np.ndarray, y: np.ndarray, sw: Optional[np.ndarray],
                 l2: float, fit_intercept: bool, num_threads: Optional[int],
                 check_stationary: bool, rtol: float) -> Any:
    """A multinomial LogisticRegression (K >= 3 classes) as a MultinomialAttribution, y mapped
    to the indices of classes_; theta = [coef_, intercept_] (K, p)."""
    from .multinomial import MultinomialAttribution

    classes = np.asarray(estimator.classes_)
    if getattr(estimator, "multi_class", "auto") == "ovr" or \
            getattr(estimator, "solver", None) == "liblinear":
        raise ValueError("this LogisticRegression fits one-vs-rest binary models (multi_class="
                         "'ovr' or solver='liblinear'), not a multinomial model: attribute each "
                         "binary model on its own, or refit with solver='lbfgs'")
    _check_known(y, classes)
    labels = np.searchsorted(classes, y)
    cw = _class_weights(estimator, y, sw)
    w = sw if cw is None else (cw if sw is None else sw * cw)
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.shape != (len(classes), X.shape[1]):
        raise ValueError(f"LogisticRegression has coef_ of shape {coef.shape}; expected "
                         f"({len(classes)}, {X.shape[1]}) for a multinomial model on this X")
    theta = coef
    if fit_intercept:
        theta = np.column_stack([coef, np.asarray(estimator.intercept_, dtype=np.float64)])
    A = MultinomialAttribution(X, labels, theta, l2=l2, sample_weight=w,
                               fit_intercept=fit_intercept, num_threads=num_threads,
                               n_classes=len(classes))
    if check_stationary:
        # grad F(0) = sum_i w_i (1/K - e_{y_i}) x_i^T
        K = len(classes)
        R = np.full((len(y), K), 1.0 / K)
        R[np.arange(len(y)), labels] -= 1.0
        if w is not None:
            R *= w[:, None]
        G = np.asarray(R.T @ X)  # X dense or sparse
        if fit_intercept:
            G = np.column_stack([G, R.sum(axis=0)])
        scale = float(np.linalg.norm(G))
        relative = A.gradient_norm / scale if scale > 0 else A.gradient_norm
        if not relative <= rtol:
            warnings.warn(
                f"the LogisticRegression's coefficients are not a stationary point of the "
                f"multinomial objective (l2={l2:g}, fit_intercept={fit_intercept}): "
                f"||grad F(theta)|| = {A.gradient_norm:.3g}, {relative:.3g} times ||grad F(0)|| "
                f"(rtol={rtol:g}). Refit with a lower tol and a higher max_iter, or with "
                f"rif_native.fit(X, y, family='multinomial', l2={l2:g}, "
                f"fit_intercept={fit_intercept}).", ConvergenceWarning, stacklevel=3)
    return A


def _theta(estimator: Any, kind: str, d: int, fit_intercept: bool) -> np.ndarray:
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] != 1:
        what = "classes" if kind == "LogisticRegression" else "targets"
        raise ValueError(f"{kind} has coef_ of shape {coef.shape} ({coef.shape[0]} {what}); "
                         "rif_native handles a single output")
    coef = coef.reshape(-1)
    if coef.shape[0] != d:
        raise ValueError(f"{kind} has {coef.shape[0]} coefficients but X has {d} columns")
    if not fit_intercept:
        return coef.copy()
    intercept = np.asarray(getattr(estimator, "intercept_", 0.0), dtype=np.float64).reshape(-1)
    if intercept.shape[0] != 1:
        raise ValueError(f"{kind} has {intercept.shape[0]} intercepts; rif_native handles a "
                         "single output")
    return np.append(coef, intercept[0])


def _check_representable(estimator: Any, kind: str, fit_intercept: bool) -> None:
    if getattr(estimator, "positive", False):
        raise ValueError(f"{kind}(positive=True) constrains the coefficients to be >= 0: its fit "
                         "is not a stationary point of an unconstrained objective, so it cannot "
                         "be represented; refit with positive=False")
    if kind == "LogisticRegression" and fit_intercept and \
            getattr(estimator, "solver", None) == "liblinear":
        raise ValueError("LogisticRegression(solver='liblinear') penalises the intercept (as a "
                         "feature of value intercept_scaling), while rif_native leaves it "
                         "unpenalised; refit with solver='lbfgs' or 'newton-cholesky'")


def _gradient_norm_at_zero(X: np.ndarray, y: np.ndarray, w: Optional[np.ndarray], family: str,
                           fit_intercept: bool) -> float:
    """||grad F(0)||: the scale the stationarity check measures against (no penalty at 0)."""
    if family == "logistic":
        r = 0.5 - y
    elif family == "squared":
        r = -y
    else:
        r = 1.0 - y
    if w is not None:
        r = w * r
    g = X.T @ r.astype(X.dtype, copy=False)
    total = float(np.dot(g, g))
    if fit_intercept:
        total += float(r.sum()) ** 2
    return math.sqrt(total)


# ----------------------------------------------------------------------------- entry point


def from_estimator(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    sample_weight: Optional[Any] = None,
    num_threads: Optional[int] = None,
    check_stationary: bool = True,
    rtol: float = 1e-4,
    solver: str = "auto",
    precision: str = "double",
) -> Attribution:
    """Attribution for a fitted scikit-learn estimator on its training data.

    Maps the estimator to rif_native's objective (see :func:`to_l2` and this module's table),
    takes ``theta = [coef_, intercept_]`` (intercept last, when fitted) and builds
    :class:`~rif_native.Attribution`. Every estimate of that object is a removal effect
    ``theta_{-T} - theta_hat`` in the estimator's own coefficients.

    Args:
        estimator: a fitted LogisticRegression (binary, or multinomial with K >= 3 classes:
            then a :class:`~rif_native.MultinomialAttribution`; L2 penalty or none), Ridge,
            LinearRegression or PoissonRegressor.
        X: (n, d) the training features, d = ``estimator.n_features_in_``.
        y: (n,) the training targets; for LogisticRegression the original labels, mapped to
            1 for ``classes_[1]`` and 0 for ``classes_[0]``.
        sample_weight: the weights passed to ``estimator.fit``, if any. A LogisticRegression's
            ``class_weight`` is multiplied in, as scikit-learn does.
        num_threads: threads for the Attribution; None uses the cores no other process keeps
            busy at each call.
        check_stationary: check that theta minimises the mapped objective.
        rtol: warn :class:`~rif_native.ConvergenceWarning` when ``||grad F(theta)||`` exceeds
            ``rtol * ||grad F(0)||``: the estimates assume theta is the minimiser.
        solver, precision: as :class:`~rif_native.Attribution`'s (how H is inverted: "auto",
            "primal" or "dual"; "double" or "mixed" float32 products). A multinomial model
            takes the defaults only.

    A ``Pipeline`` whose last step is one of these is attributed through its other steps: they
    transform X (a sparse result stays sparse), the last step is attributed on the result, and
    the parameters are named by the steps' ``get_feature_names_out()``. With a DataFrame X
    (or a Pipeline), the object's answers carry parameter names and X's index as sample ids
    (see :class:`~rif_native.Attribution`).

    Raises:
        TypeError: unsupported estimator (the message names the supported ones).
        ValueError: penalties or models that cannot be represented (L1, elastic net,
            one-vs-rest multiclass, multi-output, positive=True, liblinear with an intercept), an
            unfitted estimator, or data that does not match it.
    """
    kw = dict(sample_weight=sample_weight, num_threads=num_threads,
              check_stationary=check_stationary, rtol=rtol, solver=solver, precision=precision)
    if _sklearn_class_name(estimator) == "Pipeline":
        return _from_pipeline(estimator, X, y, **kw)
    kind = _kind(estimator)
    if not hasattr(estimator, "coef_"):
        raise ValueError(f"this {kind} is not fitted yet: call its fit(X, y) first")
    labels = None
    if _frames.is_pandas(X) and hasattr(X, "columns"):
        labels = _frames.Labels(_frames.unique_names(X.columns), X.index)
        y = _frames.aligned(y, "y", X.index, numeric=False)  # the estimator's own labels
        sample_weight = _frames.aligned(sample_weight, "sample_weight", X.index)
    Xa = _design(X, estimator, kind)
    n, d = Xa.shape
    ya = _labels(y, n)
    sw = _weights(sample_weight, n)
    family, l2, fit_intercept = to_l2(estimator, n, sw)
    _check_representable(estimator, kind, fit_intercept)
    if kind == "LogisticRegression" and len(getattr(estimator, "classes_", ())) > 2:
        if solver != "auto" or precision != "double":
            raise ValueError("a multinomial LogisticRegression is attributed in float64 by its "
                             "primal factor: leave solver='auto' and precision='double'")
        M = _multinomial(estimator, Xa, ya, sw, l2, fit_intercept, num_threads,
                         check_stationary, rtol)
        if labels is not None:  # the classes named as the estimator names them
            M._labels = _frames.Labels(labels.features, labels.ids,
                                       classes=list(np.asarray(estimator.classes_)))
        return M
    w = sw
    if kind == "LogisticRegression":
        targets = _logistic_targets(estimator, ya)
        cw = _class_weights(estimator, ya, sw)
        if cw is not None:
            w = cw if w is None else w * cw
    else:
        targets = np.asarray(ya, dtype=np.float64)
    theta = _theta(estimator, kind, d, fit_intercept)

    A = Attribution(Xa, targets, theta, l2=l2, family=family, sample_weight=w,
                    fit_intercept=fit_intercept, num_threads=num_threads, solver=solver,
                    precision=precision)
    if check_stationary:
        grad = A.gradient_norm
        scale = _gradient_norm_at_zero(Xa, targets, w, family, fit_intercept)
        relative = grad / scale if scale > 0 else grad
        if not relative <= rtol:
            warnings.warn(
                f"the {kind}'s coefficients are not a stationary point of the mapped objective "
                f"(family={family!r}, l2={l2:g}, fit_intercept={fit_intercept}): "
                f"||grad F(theta)|| = {grad:.3g}, {relative:.3g} times ||grad F(0)|| = "
                f"{scale:.3g} (rtol={rtol:g}). Influence estimates assume an exact minimiser. "
                "Refit the estimator with a higher max_iter and a lower tol (e.g. tol=1e-10), "
                f"or refit with rif_native.fit(X, y, family={family!r}, l2={l2:g}, "
                f"fit_intercept={fit_intercept}); and check that X, y and sample_weight are the "
                "data the estimator was fitted on.",
                ConvergenceWarning, stacklevel=2)
    A._labels = labels
    return A


def _from_pipeline(pipe: Any, X: Any, y: Any, **kw: Any) -> Attribution:
    """from_estimator for a Pipeline: its last step on X transformed by the others."""
    final = pipe.steps[-1][1]
    _kind(final)  # an unsupported last step is refused before any work
    ids = X.index if _frames.is_pandas(X) and hasattr(X, "columns") else None
    y = _frames.aligned(y, "y", ids, numeric=False)
    kw["sample_weight"] = _frames.aligned(kw["sample_weight"], "sample_weight", ids)
    head = pipe[:-1]
    Xt = head.transform(X)
    sparse = hasattr(Xt, "tocsr") and hasattr(Xt, "nnz")  # kept sparse: read sparsely
    try:
        names = [str(s) for s in head.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):  # a step that cannot name its outputs
        names = None
    if _frames.is_pandas(Xt) and hasattr(Xt, "columns"):  # set_output(transform="pandas")
        names = [str(c) for c in Xt.columns]
        Xt = Xt.to_numpy()
    A = from_estimator(final, Xt if sparse else np.asarray(Xt), y, **kw)
    if names is not None and len(names) != A.n_features:
        names = None
    labels = _frames.labels_from(names, ids, A.n_features)
    if labels is not None and getattr(A, "n_classes", 2) > 2:
        labels.classes = list(np.asarray(final.classes_))
    A._labels = labels
    return A
