"""pandas in and out for the multinomial family: a DataFrame X (and Series y, weights) gives
answers labelled by sample id (or set), class and parameter name, each equal bit for bit to the
NumPy path's array."""

from __future__ import annotations

import numpy as np
import pytest

pd = pytest.importorskip("pandas")

import rif_native as rn  # noqa: E402


def _frame(rng, n=240, d=4, K=3):
    X = rng.standard_normal((n, d))
    y = rng.integers(0, K, n)
    ids = pd.Index([f"row{i}" for i in range(n)], name="msg")
    Xf = pd.DataFrame(X, columns=["age", "income", "score", "height"][:d], index=ids)
    return X, y, Xf, pd.Series(y, index=ids)


@pytest.fixture
def pair(rng):
    X, y, Xf, yf = _frame(rng)
    w = rng.uniform(0.5, 2.0, len(y))
    kw = dict(l2=0.5, fit_intercept=True, num_threads=1)
    theta = rn.fit(X, y, family="multinomial", sample_weight=w, **kw).theta
    A = rn.MultinomialAttribution(Xf, yf, theta, sample_weight=pd.Series(w, index=Xf.index), **kw)
    B = rn.MultinomialAttribution(X, y, theta, sample_weight=w, **kw)
    return A, B, Xf


def test_names_and_ids(pair):
    A, B, Xf = pair
    assert A.param_names == ["age", "income", "score", "height", "const"]
    assert list(A.sample_ids[:2]) == ["row0", "row1"]
    assert B.param_names == ["x1", "x2", "x3", "x4", "const"]


def test_rows_by_sample_and_class(pair):
    A, B, Xf = pair
    for method in ("influence", "rescaled_influence"):
        got = getattr(A, method)([3, 0, 7])
        want = getattr(B, method)([3, 0, 7])
        assert got.index.names == ["msg", "class"]
        assert list(got.index[:4]) == [("row3", 0), ("row3", 1), ("row3", 2), ("row0", 0)]
        assert list(got.columns) == A.param_names
        np.testing.assert_array_equal(got.to_numpy().reshape(want.shape), want)
    whole = A.rescaled_influence()
    assert whole.shape == (A.n * 3, A.n_params)


def test_effects_by_set_and_class(pair):
    A, B, _ = pair
    one = A.group_effect([1, 2, 3], method="ns")
    assert list(one.index) == [0, 1, 2] and one.index.name == "class"
    np.testing.assert_array_equal(one.to_numpy(), B.group_effect([1, 2, 3], method="ns"))
    sets = [[1, 2], [5, 6, 7], [9]]
    several = A.group_effect(sets, method="rif")
    assert several.index.names == ["set", "class"] and len(several) == 9
    np.testing.assert_array_equal(several.to_numpy().reshape(3, 3, -1),
                                  B.group_effect(sets, method="rif"))
    v = np.arange(15.0).reshape(3, 5)
    np.testing.assert_array_equal(A.solve(v).to_numpy(), B.solve(v))


def test_scores_by_sample_and_directions_by_name(pair, rng):
    A, B, _ = pair
    V = rng.standard_normal((3, 5))
    got = A.scores(V)
    assert list(got.index[:2]) == ["row0", "row1"]
    np.testing.assert_array_equal(got.to_numpy(), B.scores(V))
    shuffled = pd.DataFrame(V, columns=A.param_names)[["const", "height", "age", "score",
                                                       "income"]]
    np.testing.assert_array_equal(A.scores(shuffled).to_numpy(), B.scores(V))
    with pytest.raises(ValueError, match="must name the parameters"):
        A.scores(pd.DataFrame(V, columns=["a", "b", "c", "d", "e"]))
    top = A.top(V, k=3)
    np.testing.assert_array_equal(top.increase, B.top(V, k=3).increase)


def test_estimator_classes_name_the_class_level(rng):
    from sklearn.linear_model import LogisticRegression

    X, y, Xf, _ = _frame(rng)
    names = np.array(["cat", "dog", "fish"])[y]
    clf = LogisticRegression(C=2.0, tol=1e-12, max_iter=10000).fit(Xf, names)
    A = rn.Attribution.from_estimator(clf, Xf, names, num_threads=1)
    rows = A.rescaled_influence([0])
    assert list(rows.index) == [("row0", "cat"), ("row0", "dog"), ("row0", "fish")]
    B = rn.Attribution.from_estimator(clf, X, names, num_threads=1)
    np.testing.assert_array_equal(rows.to_numpy(), B.rescaled_influence([0])[0])


def test_pipeline_names_multinomial_parameters(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, Xf, yf = _frame(rng)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=10000))
    pipe.fit(Xf, yf)
    A = rn.Attribution.from_estimator(pipe, Xf, yf, num_threads=1)
    effect = A.group_effect([0, 1], method="ns")
    assert list(effect.columns) == ["age", "income", "score", "height", "const"]
    assert list(effect.index) == [0, 1, 2]


def test_labelled_indices_read_as_unlabelled(pair):
    A, B, _ = pair
    for idx in ([-1], 3, np.array([2, 0])):
        got = A.rescaled_influence(idx)
        want = B.rescaled_influence(idx)
        np.testing.assert_array_equal(got.to_numpy().reshape(want.shape), want)
    assert A.influence([-1]).index[0][0] == "row239"


def test_direction_rows_are_matched_to_classes(rng):
    from sklearn.linear_model import LogisticRegression

    X, y, Xf, _ = _frame(rng)
    names = np.array(["cat", "dog", "fish"])[y]
    clf = LogisticRegression(tol=1e-12, max_iter=10000).fit(Xf, names)
    A = rn.Attribution.from_estimator(clf, Xf, names, num_threads=1)
    V = rng.standard_normal((3, 5))
    G = pd.DataFrame(V, index=["cat", "dog", "fish"], columns=A.param_names)
    np.testing.assert_array_equal(A.scores(G.iloc[::-1]).to_numpy(), A.scores(V).to_numpy())
    with pytest.raises(ValueError, match="must name the classes"):
        A.scores(G.rename(index={"cat": "cow"}))
