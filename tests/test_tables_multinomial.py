"""A MultinomialAttribution's SampleTable: its columns against the dense float64 reference of
test_multinomial (softmax probabilities, the K x K generalised leverages, the exact one-step
leave-one-out RIF rows), files that read back equal, and the names of a DataFrame's samples and
an estimator's classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import rif_native as rn
from rif_native.multiclass_metrics import TestLoss
from rif_native.tables import SampleTable
from test_multinomial import DenseMultinomial, make_data

TOL = 1e-9  # of each column's largest reference value


def _close(got, ref, what):
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, what
    assert np.abs(got - ref).max() <= TOL * np.abs(ref).max(), what


@pytest.mark.parametrize("fit_intercept", [False, True], ids=["nointercept", "intercept"])
def test_columns_equal_the_dense_reference(fit_intercept):
    rng = np.random.default_rng(41)
    K, n, d = 3, 90, 4
    X, y, w, theta = make_data(rng, n, d, K, fit_intercept=fit_intercept, weighted=True)
    kw = dict(l2=0.5, sample_weight=w, fit_intercept=fit_intercept)
    R = DenseMultinomial(X, y, theta, **kw)
    A = rn.MultinomialAttribution(X, y, theta, **kw)
    D = rng.standard_normal((K, R.p))
    X_test, y_test, _, _ = make_data(rng, 30, d, K, fit_intercept=fit_intercept, weighted=False)
    metric = TestLoss(X_test, y_test, fit_intercept=fit_intercept)
    t = A.table({"v": D, "loss": metric})

    assert list(t.columns) == ["sample_id", "label", "weight", "prob_label", "leverage",
                               "rescale", "if_v", "rif_v", "if_loss", "rif_loss"]
    np.testing.assert_array_equal(t.columns["sample_id"], np.arange(n))
    np.testing.assert_array_equal(t.columns["label"], y)
    np.testing.assert_array_equal(t.columns["weight"], w)
    _close(t.columns["prob_label"], R.prob[np.arange(n), y], "prob_label")
    lev = np.array([np.linalg.eigvalsh(M).max() for M in R.M])  # M_i symmetric, K x K
    _close(t.columns["leverage"], lev, "leverage")
    _close(t.columns["rescale"], 1.0 / (1.0 - lev), "rescale")
    G = metric.gradient(theta)
    for name, v in (("v", D), ("loss", G)):
        _close(t.columns[f"if_{name}"], np.einsum("ikp,kp->i", R.IF, v), f"if_{name}")
        _close(t.columns[f"rif_{name}"], np.einsum("ikp,kp->i", R.RIF, v), f"rif_{name}")
    assert t.meta["family"] == "multinomial" and t.meta["classes"] == ["0", "1", "2"]
    assert t.meta["p"] == R.p and t.meta["directions"] == ["v", "loss"]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_files_read_back_equal(tmp_path, suffix):
    rng = np.random.default_rng(42)
    X, y, w, theta = make_data(rng, 60, 3, 4, fit_intercept=True, weighted=False)
    A = rn.MultinomialAttribution(X, y, theta, l2=1.0, fit_intercept=True)
    t = A.table(rng.standard_normal((4, 4)))
    path = tmp_path / f"t{suffix}"
    t.write(path)
    back = SampleTable.read(path)
    assert list(back.columns) == list(t.columns)
    for name, col in t.columns.items():
        np.testing.assert_array_equal(back.columns[name], col, err_msg=name)
    assert back.columns["label"].dtype.kind == "i"


def test_a_dataframe_and_an_estimator_name_samples_and_classes():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(43)
    K = 3
    X, yi, _, _ = make_data(rng, 80, 3, K, fit_intercept=True, weighted=False)
    classes = np.array(["cat", "dog", "eel"])
    frame = pd.DataFrame(X, columns=["a", "b", "c"], index=[f"s{i}" for i in range(80)])
    lr = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(frame, classes[yi])
    A = rn.Attribution.from_estimator(lr, frame, classes[yi])
    t = A.table()
    np.testing.assert_array_equal(t.columns["sample_id"], frame.index.to_numpy())
    np.testing.assert_array_equal(t.columns["label"], yi)  # the index into meta's classes
    assert t.meta["classes"] == ["cat", "dog", "eel"]
    assert t.meta["param_names"] == ["a", "b", "c", "const"]
    _close(t.columns["prob_label"], lr.predict_proba(frame)[np.arange(80), yi], "prob_label")


def test_diagnostics_are_refused_for_the_multinomial_family():
    rng = np.random.default_rng(44)
    X, y, _, theta = make_data(rng, 40, 2, 3, fit_intercept=False, weighted=False)
    A = rn.MultinomialAttribution(X, y, theta, l2=1.0)
    with pytest.raises(ValueError, match="binary GLM families, not multinomial"):
        rn.tables.sample_table(A, diagnostics=True)


def test_a_stack_of_directions_under_one_name_is_refused():
    """scores() takes (k, K, p); a table column holds one direction (to_frame() failed on the
    2-D column): refused naming the remedy, for either family."""
    rng = np.random.default_rng(45)
    X, y, _, theta = make_data(rng, 40, 2, 3, fit_intercept=False, weighted=False)
    A = rn.MultinomialAttribution(X, y, theta, l2=1.0)
    with pytest.raises(ValueError, match=r"holds 2 directions: a table takes one per name"):
        A.table(rng.standard_normal((2, 3, 2)))
    B = rn.Attribution(X, (y == 1).astype(float), np.zeros(2), l2=1.0)
    with pytest.raises(ValueError, match=r"holds 2 directions"):
        B.table(np.ones((2, 2)))
