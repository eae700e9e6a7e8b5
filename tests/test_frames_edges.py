"""Edge cases of pandas inputs found in review: masks, directions by name, scikit-learn's text
labels, Pipelines on arrays, audits of labelled objects, repeated and reserved names."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import rif_native as rn  # noqa: E402
from rif_native import audit as au  # noqa: E402
from conftest import logistic_refit  # noqa: E402


def _labelled(rng, n=150):
    X = rng.standard_normal((n, 3))
    y = (X[:, 0] + 0.5 * rng.standard_normal(n) > 0).astype(float)
    ids = pd.Index([f"s{i}" for i in range(n)])
    Xf = pd.DataFrame(X, columns=["a", "b", "c"], index=ids)
    theta = logistic_refit(X, y, np.ones(n), l2=1.0)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    B = rn.Attribution(Xf, pd.Series(y, index=ids), theta, l2=1.0, fit_intercept=True,
                       num_threads=1)
    return X, y, Xf, theta, A, B


def test_masks_select_the_same_rows_and_sets(rng):
    X, y, Xf, theta, A, B = _labelled(rng)
    mask = np.zeros(len(y), dtype=bool)
    mask[[3, 40, 99]] = True
    rows = B.rescaled_influence(mask)
    assert list(rows.index) == ["s3", "s40", "s99"]
    np.testing.assert_array_equal(rows.to_numpy(), A.rescaled_influence([3, 40, 99]))
    exact = logistic_refit(X, y, (~mask).astype(float), l2=1.0)
    by_mask, by_index = B.check_refit(mask, exact), B.check_refit([3, 40, 99], exact)
    np.testing.assert_array_equal(by_mask.predicted, by_index.predicted)
    assert by_mask.judgeable and by_mask.noise < 1e-6


def test_directions_are_aligned_by_name_or_refused(rng):
    X, y, Xf, theta, A, B = _labelled(rng)
    V = rng.standard_normal((4, 2))
    frame = pd.DataFrame(V, index=["a", "b", "c", "const"], columns=["m1", "m2"])
    got = B.scores(frame.iloc[::-1])  # rows in another order: aligned by name
    assert list(got.columns) == ["m1", "m2"] and got.index.equals(Xf.index)
    np.testing.assert_array_equal(got.to_numpy(), A.scores(V))
    positional = pd.Series(V[:, 0])  # pandas' default index 0..p-1: by position
    np.testing.assert_array_equal(B.scores(positional).to_numpy(), A.scores(V[:, 0]))
    with pytest.raises(ValueError, match="must name the parameters"):
        B.scores(pd.Series(V[:, 0], index=[3, 2, 1, 0]))


def test_audit_of_a_labelled_attribution(rng):
    X, y, Xf, theta, A, B = _labelled(rng)
    got = B.audit(au.coefficient(B, "a"), max_fraction=0.3, methods=("rif",))["rif"]
    want = A.audit(au.coefficient(A, 0), max_fraction=0.3, methods=("rif",))["rif"]
    assert got.removed == want.removed and got.target == "sign of a"


def test_estimator_labels_stay_the_estimators(rng):
    """scikit-learn's text classes with a DataFrame X, as with a NumPy X."""
    from sklearn.linear_model import LogisticRegression

    X, y, Xf, theta, A, B = _labelled(rng)
    text = pd.Series(np.where(y > 0, "yes", "no"), index=Xf.index)
    clf = LogisticRegression(tol=1e-12, max_iter=10000).fit(Xf, text)
    F = rn.Attribution.from_estimator(clf, Xf, text, num_threads=1)
    N = rn.Attribution.from_estimator(clf, X, text.to_numpy(), num_threads=1)
    np.testing.assert_array_equal(F.leverage, N.leverage)
    assert F.param_names == ["a", "b", "c", "const"]


def test_pipeline_on_an_array_has_no_ids_but_works(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, Xf, theta, A, B = _labelled(rng)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12)).fit(X, y)
    P = rn.Attribution.from_estimator(pipe, X, y, num_threads=1)
    diag = P.diagnostics()
    assert list(diag.index) == list(range(len(y)))
    assert P.table(diagnostics=True).columns["sample_id"].tolist() == list(range(len(y)))


def test_repeated_and_reserved_names(rng):
    X, y, Xf, theta, A, B = _labelled(rng)
    twice = Xf.set_axis(["a", "a", "c"], axis=1)
    with pytest.raises(ValueError, match="repeated column names \\['a'\\]"):
        rn.Attribution(twice, y, theta, l2=1.0, fit_intercept=True)
    const = Xf.set_axis(["a", "b", "const"], axis=1)
    C = rn.Attribution(const, y, theta, l2=1.0, fit_intercept=True)
    assert C.param_names == ["a", "b", "const", "(intercept)"]
    assert au.coefficient(C, "const").name == "sign of const"
    assert au.coefficient(C, "(intercept)").name == "sign of (intercept)"
