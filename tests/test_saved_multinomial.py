"""A MultinomialAttribution saved and loaded again (rif_native.saved, _saved_multinomial): the
loaded object answers as the one saved and as the dense float64 reference of test_multinomial,
reads X once (probabilities at theta) instead of the Hessian and leverage passes, keeps the
names of samples, parameters and classes, and refuses data it was not saved from and damaged
files."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn
from rif_native import sources
from test_multinomial import DenseMultinomial, assert_rows, make_data

KW = dict(l2=0.5, fit_intercept=True)


def _problem(seed, n=150, d=5, K=3):
    rng = np.random.default_rng(seed)
    X, y, w, _ = make_data(rng, n, d, K, fit_intercept=True, weighted=True)
    X = X + 3.0  # uncentred: the saved state is centred
    theta = rn.fit(X, y, family="multinomial", sample_weight=w, **KW).theta
    return X, y, w, theta


def _same_answers(A, B):
    """B's answers equal A's (both on one thread): to 1e-14 of their scale."""
    K, p = A.n_classes, A.n_params
    np.testing.assert_array_equal(B.theta, A.theta)
    for name in ("leverage", "probabilities", "residuals"):
        assert_rows(getattr(B, name), getattr(A, name), 1e-14, name)
    assert B.gradient_norm == pytest.approx(A.gradient_norm, rel=1e-10, abs=1e-14)
    v = np.linspace(-1, 1, K * p).reshape(K, p)
    for method in ("if", "rif"):
        assert_rows(B.scores(v, method=method), A.scores(v, method=method), 1e-14, method)
    assert_rows(B.rescaled_influence([0, 5]), A.rescaled_influence([0, 5]), 1e-14, "RIF")
    sets = [[1, 2, 3], list(range(20, 60))]
    assert_rows(B.group_effect(sets, method="ns"), A.group_effect(sets, method="ns"), 1e-14,
                "NS")
    assert_rows(B.retrain(sets).theta, A.retrain(sets).theta, 1e-12, "retrain")


def test_round_trip_in_memory_equals_the_saved_object_and_the_reference(tmp_path):
    X, y, w, theta = _problem(1)
    A = rn.MultinomialAttribution(X, y, theta, sample_weight=w, num_threads=1, **KW)
    A.save(tmp_path / "m.npz")
    B = rn.Attribution.load(tmp_path / "m.npz", num_threads=1)
    assert isinstance(B, rn.MultinomialAttribution)
    assert B.family == "multinomial" and B.l2 == 0.5 and B.fit_intercept and B.n_classes == 3
    _same_answers(A, B)
    R = DenseMultinomial(X, y, theta, sample_weight=w, **KW)
    assert_rows(B.leverage, R.leverage, 1e-9, "leverage against the reference")
    assert_rows(B.rescaled_influence(), R.RIF, 1e-9, "RIF against the reference")
    C = rn.MultinomialAttribution.load(tmp_path / "m.npz", num_threads=1)
    assert_rows(C.leverage, A.leverage, 1e-14, "MultinomialAttribution.load")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:  # plain NumPy
        np.testing.assert_array_equal(f["X"], X)
        H, Hinv = f["hessian"], f["inverse"]
    assert np.abs(H @ Hinv - np.eye(len(H))).max() <= 1e-10


def test_file_source_is_read_once_and_not_saved(tmp_path):
    X, y, w, theta = _problem(2, n=600)
    np.save(tmp_path / "X.npy", X)
    src = sources.open_source(str(tmp_path / "X.npy"))
    A = rn.MultinomialAttribution(src, y, theta, sample_weight=w, num_threads=1, **KW)
    built = src.passes
    A.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert "X" not in f.files
    with pytest.raises(ValueError, match="holds no X"):
        rn.Attribution.load(tmp_path / "m.npz")
    again = sources.open_source(str(tmp_path / "X.npy"))
    B = rn.Attribution.load(tmp_path / "m.npz", again, num_threads=1)
    assert built >= 2 and again.passes == 1  # the probabilities' pass only
    _same_answers(A, B)


def test_names_of_samples_parameters_and_classes_are_kept(tmp_path):
    pd = pytest.importorskip("pandas")
    from sklearn.linear_model import LogisticRegression

    X, y, _, _ = _problem(3)
    frame = pd.DataFrame(X, columns=list("abcde"), index=[f"s{i}" for i in range(len(y))])
    labels = np.array(["cat", "dog", "eel"])[y]
    lr = LogisticRegression(C=2.0, tol=1e-10, max_iter=1000).fit(frame, labels)
    A = rn.Attribution.from_estimator(lr, frame, labels)
    A.save(tmp_path / "m.npz")
    B = rn.Attribution.load(tmp_path / "m.npz")
    assert B.param_names == ["a", "b", "c", "d", "e", "const"]
    rif = B.rescaled_influence([4])
    assert rif.index.tolist() == [("s4", "cat"), ("s4", "dog"), ("s4", "eel")]
    np.testing.assert_allclose(rif.to_numpy(), A.rescaled_influence([4]).to_numpy(),
                               rtol=0, atol=1e-14 * np.abs(rif.to_numpy()).max())


def test_other_data_is_refused(tmp_path):
    X, y, w, theta = _problem(4)
    A = rn.MultinomialAttribution(X, y, theta, sample_weight=w, **KW)
    A.save(tmp_path / "m.npz")
    X2 = X.copy()
    X2[17, 3] += 1.0
    with pytest.raises(ValueError, match="probabilities on X differ"):
        rn.Attribution.load(tmp_path / "m.npz", X2)
    np.save(tmp_path / "X.npy", X)
    B = rn.MultinomialAttribution(str(tmp_path / "X.npy"), y, theta, sample_weight=w, **KW)
    B.save(tmp_path / "f.npz")  # a file source is not centred, X in memory is: H's coordinates
    with pytest.raises(ValueError, match="probabilities on X differ"):  # are the file's
        rn.Attribution.load(tmp_path / "f.npz", X2)
    _same_answers(B, rn.Attribution.load(tmp_path / "f.npz", X))
    with pytest.raises(ValueError, match=r"shape \(150, 4\)"):
        rn.Attribution.load(tmp_path / "m.npz", X[:, :4])


def test_a_column_theta_ignores_is_checked(tmp_path):
    """The probabilities do not see X where theta is 0; the quadratic forms checked on load
    do."""
    X, y, w, theta = _problem(5)
    theta = theta.copy()
    theta[:, 2] = 0.0
    np.save(tmp_path / "X.npy", X)
    A = rn.MultinomialAttribution(str(tmp_path / "X.npy"), y, theta, sample_weight=w, **KW)
    A.save(tmp_path / "m.npz")
    X2 = X.copy()
    X2[:, 2] = np.random.default_rng(0).standard_normal(len(X2)) * 3
    with pytest.raises(ValueError, match="quadratic forms of samples"):
        rn.Attribution.load(tmp_path / "m.npz", X2)


def test_damaged_files_and_the_wrong_family(tmp_path):
    X, y, w, theta = _problem(6)
    rn.MultinomialAttribution(X, y, theta, **KW).save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        stored = {k: f[k] for k in f.files}
    stored["inverse"] = stored["inverse"].copy()
    stored["inverse"][2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **stored)
    with pytest.raises(ValueError, match=r"non-finite entries in \['inverse'\]"):
        rn.Attribution.load(tmp_path / "nan.npz")
    stored.pop("inverse")
    np.savez(tmp_path / "short.npz", **stored)
    with pytest.raises(ValueError, match=r"lacks \['inverse'\]"):
        rn.Attribution.load(tmp_path / "short.npz")
    yb = (y == 1).astype(float)
    rn.Attribution(X, yb, np.zeros(6), l2=1.0, fit_intercept=True).save(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="holds a logistic attribution, not a multinomial"):
        rn.MultinomialAttribution.load(tmp_path / "b.npz")
