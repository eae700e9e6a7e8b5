"""pandas inputs against the NumPy path (values equal bit for bit with one thread each, names and
ids carried),
clear errors for what cannot be used, and scikit-learn Pipelines against a manual transform."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import rif_native as rn  # noqa: E402
from rif_native import audit as au  # noqa: E402
from conftest import logistic_refit  # noqa: E402


def _frame(rng, n=120, d=4):
    X = rng.standard_normal((n, d))
    y = (X[:, 0] + 0.8 * rng.standard_normal(n) > 0).astype(float)
    ids = pd.Index([f"row{i:03d}" for i in rng.permutation(n)], name="sample")
    cols = ["age", "income", "score", "height"][:d]
    return X, y, pd.DataFrame(X, columns=cols, index=ids), pd.Series(y, index=ids)


def test_dataframe_answers_equal_numpy_and_carry_labels(rng):
    X, y, Xf, yf = _frame(rng)
    w = rng.uniform(0.5, 2.0, len(y))
    wf = pd.Series(w, index=Xf.index)
    theta = logistic_refit(X, y, w, l2=0.5)
    A = rn.Attribution(X, y, theta, l2=0.5, sample_weight=w, fit_intercept=True, num_threads=1)
    B = rn.Attribution(Xf, yf, theta, l2=0.5, sample_weight=wf, fit_intercept=True,
                       num_threads=1)
    assert B.param_names == ["age", "income", "score", "height", "const"]
    np.testing.assert_array_equal(B.sample_ids, Xf.index.to_numpy())
    np.testing.assert_array_equal(B.leverage, A.leverage)

    rows = B.rescaled_influence([5, 0])
    assert list(rows.index) == [Xf.index[5], Xf.index[0]] and list(rows.columns) == B.param_names
    np.testing.assert_array_equal(rows.to_numpy(), A.rescaled_influence([5, 0]))
    every = B.influence()
    assert every.index.equals(Xf.index)
    np.testing.assert_array_equal(every.to_numpy(), A.influence())

    one = B.group_effect([1, 2, 3], method="ns")
    assert list(one.index) == B.param_names
    np.testing.assert_array_equal(one.to_numpy(), A.group_effect([1, 2, 3], method="ns"))
    many = B.group_effect([[1], [2, 3]])
    np.testing.assert_array_equal(many.to_numpy(), A.group_effect([[1], [2, 3]]))

    v = rng.standard_normal(5)
    s = B.scores(v)
    assert s.index.equals(Xf.index)
    np.testing.assert_array_equal(s.to_numpy(), A.scores(v))
    # a Series direction is aligned by parameter name, whatever its order
    shuffled = pd.Series(v, index=B.param_names).iloc[::-1]
    np.testing.assert_array_equal(B.scores(shuffled).to_numpy(), A.scores(v))
    np.testing.assert_array_equal(B.top(v, k=5).increase, A.top(v, k=5).increase)

    diag = B.diagnostics()
    assert diag.index.equals(Xf.index) and "dfb_income" in diag.columns
    np.testing.assert_array_equal(diag.to_numpy(), A.diagnostics().to_numpy())
    # audit targets by column name without names=
    assert au.coefficient(B, "score").name == "sign of score"


def test_one_call_functions_and_fit_take_frames(rng):
    X, y, Xf, yf = _frame(rng)
    r_np = rn.fit(X, y, l2=1.0, fit_intercept=True, num_threads=1)
    r_pd = rn.fit(Xf, yf, l2=1.0, fit_intercept=True, num_threads=1)
    np.testing.assert_array_equal(r_pd.theta, r_np.theta)
    rif = rn.rescaled_influence(Xf, yf, r_np.theta, l2=1.0, fit_intercept=True,
                                num_threads=1)
    assert rif.index.equals(Xf.index) and rif.columns[-1] == "const"
    np.testing.assert_array_equal(
        rif.to_numpy(), rn.rescaled_influence(X, y, r_np.theta, l2=1.0, fit_intercept=True,
                                              num_threads=1))


def test_what_a_frame_cannot_hold_is_named(rng):
    X, y, Xf, yf = _frame(rng)
    bad = Xf.assign(colour=pd.Categorical(["red", "blue"] * 60), note="text")
    with pytest.raises(ValueError, match=r"2 column\(s\) that are not numbers: 'colour', 'note'"
                       r".*get_dummies"):
        rn.Attribution(bad, yf, np.zeros(7), fit_intercept=True)
    with pytest.raises(ValueError, match="y's index does not match X's"):
        rn.Attribution(Xf, yf.iloc[::-1], np.zeros(5), fit_intercept=True)
    with pytest.raises(ValueError, match="sample_weight's index"):
        rn.Attribution(Xf, yf, np.zeros(5), fit_intercept=True,
                       sample_weight=pd.Series(1.0, index=range(len(yf))))
    with pytest.raises(ValueError, match="y must hold numbers"):
        rn.Attribution(Xf, yf.map({0.0: "no", 1.0: "yes"}), np.zeros(5), fit_intercept=True)
    with pytest.raises(ValueError, match="missing \\['const'\\]"):
        rn.Attribution(Xf, yf, np.zeros(5), fit_intercept=True).scores(
            pd.Series(1.0, index=["age", "income", "score", "height"]))


def test_pipeline_equals_its_last_step_on_the_transformed_data(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, Xf, yf = _frame(rng)
    Xf = Xf * [1.0, 1000.0, 0.01, 5.0] + [0.0, 50000.0, 3.0, 170.0]  # raw units
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=2.0, tol=1e-12, max_iter=10000))
    pipe.fit(Xf, yf)
    A = rn.Attribution.from_estimator(pipe, Xf, yf, num_threads=1)
    Xt = pipe[:-1].transform(Xf)
    M = rn.Attribution.from_estimator(pipe[-1], np.asarray(Xt), yf.to_numpy(), num_threads=1)
    np.testing.assert_array_equal(A.theta, M.theta)
    np.testing.assert_array_equal(A.leverage, M.leverage)
    rows = A.rescaled_influence()
    np.testing.assert_array_equal(rows.to_numpy(), M.rescaled_influence())
    assert rows.index.equals(Xf.index)
    assert A.param_names == ["age", "income", "score", "height", "const"]


def test_pipeline_with_one_hot_columns(rng):
    """A ColumnTransformer one-hot encodes a category (a sparse result, kept sparse): names
    from get_feature_names_out, values equal to a manual dense transform."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y, Xf, yf = _frame(rng)
    Xf = Xf.assign(colour=pd.Categorical(rng.choice(["red", "green", "blue"], len(yf))))
    pre = ColumnTransformer([("num", StandardScaler(), ["age", "income", "score", "height"]),
                             ("cat", OneHotEncoder(drop="first"), ["colour"])],
                            sparse_threshold=1.0)
    pipe = Pipeline([("pre", pre), ("clf", LogisticRegression(tol=1e-12, max_iter=10000))])
    pipe.fit(Xf, yf)
    A = rn.Attribution.from_estimator(pipe, Xf, yf, num_threads=1)
    Xt = pre.transform(Xf)
    Xt = Xt.toarray() if hasattr(Xt, "toarray") else Xt
    M = rn.Attribution.from_estimator(pipe[-1], Xt, yf.to_numpy(), num_threads=1)
    np.testing.assert_array_equal(A.rescaled_influence().to_numpy(), M.rescaled_influence())
    assert A.param_names[-3:] == ["cat__colour_green", "cat__colour_red", "const"]


def test_pipeline_with_an_unsupported_last_step_is_refused(rng):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y, Xf, yf = _frame(rng)
    with pytest.raises(TypeError, match="unsupported estimator LinearSVC"):
        rn.Attribution.from_estimator(make_pipeline(StandardScaler(), LinearSVC()), Xf, yf)


def test_estimator_on_a_frame_with_bool_and_nullable_integer_columns(rng):
    """A DataFrame of numbers with a bool and a nullable Int64 column (which scikit-learn fits
    on; np.asarray of it is an object array): from_estimator reads it as the float64 matrix it
    holds (it raised "X must hold real numbers, got dtype object"), with the leverages and RIF
    rows of the float64 NumPy reference to 1e-9 relative, and the column names carried."""
    from conftest import Reference
    from sklearn.linear_model import LogisticRegression

    n = 120
    Xf = pd.DataFrame({"age": rng.standard_normal(n),
                       "member": rng.random(n) < 0.5,
                       "visits": pd.array(rng.integers(0, 6, n), dtype="Int64")})
    X = np.column_stack([Xf["age"], Xf["member"].astype(float), Xf["visits"].astype(float)])
    y = (X[:, 0] + 0.3 * X[:, 2] - 1 + rng.standard_normal(n) > 0).astype(int)
    clf = LogisticRegression(C=2.0, tol=1e-12, max_iter=10000).fit(Xf, y)
    A = rn.Attribution.from_estimator(clf, Xf, y, num_threads=1)
    ref = Reference(X, y, np.r_[clf.coef_[0], clf.intercept_], l2=0.5, fit_intercept=True)
    assert A.param_names == ["age", "member", "visits", "const"]
    np.testing.assert_allclose(A.leverage, ref.h, rtol=1e-9)
    np.testing.assert_allclose(A.rescaled_influence().to_numpy(), ref.RIF,
                               rtol=1e-9, atol=1e-9 * np.abs(ref.RIF).max())
