"""An Attribution saved with its factor and loaded again (rif_native.saved): the loaded object
answers exactly as the one saved, reads X once (z = X theta) instead of building and
factoring H, refuses data it was not saved from, and the file is plain NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn
from rif_native import sources


def _problem(rng, n=300, d=12):
    X = rng.standard_normal((n, d)) + 3.0  # uncentred: the saved state is centred
    y = (rng.random(n) < 0.4).astype(float)
    w = rng.uniform(0.5, 2.0, n)
    theta = rn.fit(X, y, l2=0.5, sample_weight=w, fit_intercept=True).theta
    return X, y, w, theta


def _same_answers(A, B):
    """Every answer of B equal bit for bit to A's (both on one thread)."""
    np.testing.assert_array_equal(B.theta, A.theta)
    np.testing.assert_array_equal(B.leverage, A.leverage)
    np.testing.assert_array_equal(B.residuals, A.residuals)
    np.testing.assert_array_equal(B.hessian(), A.hessian())
    assert B.gradient_norm == A.gradient_norm
    v = np.linspace(-1, 1, A.n_params)
    for method in ("if", "rif"):
        np.testing.assert_array_equal(np.asarray(B.scores(v, method=method)),
                                      np.asarray(A.scores(v, method=method)))
    np.testing.assert_array_equal(np.asarray(B.rescaled_influence([0, 5])),
                                  np.asarray(A.rescaled_influence([0, 5])))
    sets = [[1, 2, 3], list(range(20, 80))]
    np.testing.assert_array_equal(np.asarray(B.group_effect(sets, method="ns")),
                                  np.asarray(A.group_effect(sets, method="ns")))
    np.testing.assert_array_equal(B.retrain(sets).theta, A.retrain(sets).theta)


def test_round_trip_in_memory(rng, tmp_path):
    X, y, w, theta = _problem(rng)
    A = rn.Attribution(X, y, theta, l2=0.5, sample_weight=w, fit_intercept=True, num_threads=1)
    A.save(tmp_path / "a.npz")
    B = rn.Attribution.load(tmp_path / "a.npz", num_threads=1)
    assert B.family == "logistic" and B.l2 == 0.5 and B.fit_intercept
    _same_answers(A, B)
    # plain NumPy: the factor reproduces the saved Hessian of the centred parameters
    with np.load(tmp_path / "a.npz", allow_pickle=False) as f:
        L, Hk, c = f["factor"], f["hessian_kernel"], f["centre"]
        np.testing.assert_array_equal(f["X"], X)
    np.testing.assert_allclose(np.tril(L @ L.T), Hk, rtol=0, atol=1e-12 * np.abs(Hk).max())
    np.testing.assert_allclose(c, np.average(X, axis=0, weights=w), rtol=1e-12)


def test_round_trip_with_labels_and_sparse_x(rng, tmp_path):
    pd = pytest.importorskip("pandas")
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(400, 30, density=0.05, format="csr", random_state=int(rng.integers(1e6)))
    y = (rng.random(400) < 0.5).astype(float)
    theta = 0.1 * rng.standard_normal(31)
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True, num_threads=1)
    A.save(tmp_path / "s.npz")
    B = rn.Attribution.load(tmp_path / "s.npz", num_threads=1)
    assert sources.open_source(B._data[0]).sparse_passes
    _same_answers(A, B)
    Xf = pd.DataFrame(rng.standard_normal((200, 3)), columns=["a", "b", "const"],
                      index=pd.Index([f"id{i}" for i in range(200)]))
    yf = pd.Series((rng.random(200) < 0.5).astype(float), index=Xf.index)
    C = rn.Attribution(Xf, yf, np.zeros(4), l2=1.0, fit_intercept=True, num_threads=1)
    C.save(tmp_path / "f.npz")
    D = rn.Attribution.load(tmp_path / "f.npz", num_threads=1)
    assert D.param_names == ["a", "b", "const", "(intercept)"]
    assert list(D.sample_ids[:2]) == ["id0", "id1"]
    assert D.rescaled_influence([3]).index[0] == "id3"


def test_file_source_is_read_once_and_not_saved(rng, tmp_path):
    X, y, w, theta = _problem(rng, n=2000, d=10)
    np.save(tmp_path / "X.npy", X)
    src = sources.open_source(str(tmp_path / "X.npy"))
    A = rn.Attribution(src, y, theta, l2=0.5, sample_weight=w, fit_intercept=True,
                       num_threads=1)
    built = src.passes
    A.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as f:
        assert "X" not in f.files
    with pytest.raises(ValueError, match="holds no X"):
        rn.Attribution.load(tmp_path / "a.npz")
    again = sources.open_source(str(tmp_path / "X.npy"))
    B = rn.Attribution.load(tmp_path / "a.npz", again, num_threads=1)
    assert built >= 2 and again.passes == 1  # z = X theta only: no Hessian or leverage pass
    _same_answers(A, B)


def test_other_data_is_refused(rng, tmp_path):
    X, y, w, theta = _problem(rng)
    A = rn.Attribution(X, y, theta, l2=0.5, sample_weight=w, fit_intercept=True)
    A.save(tmp_path / "a.npz")
    X2 = X.copy()
    X2[17, 3] += 1.0
    with pytest.raises(ValueError, match="sample 17's residual"):
        rn.Attribution.load(tmp_path / "a.npz", X2)
    with pytest.raises(ValueError, match=r"shape \(300, 11\)"):
        rn.Attribution.load(tmp_path / "a.npz", X[:, :11])


def test_damaged_and_foreign_files(rng, tmp_path):
    X, y, w, theta = _problem(rng)
    A = rn.Attribution(X, y, theta, l2=0.5, fit_intercept=True)
    A.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz") as f:
        stored = {k: f[k] for k in f.files}
    stored["factor"] = stored["factor"].copy()
    stored["factor"][2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", **stored)
    with pytest.raises(ValueError, match="damaged"):
        rn.Attribution.load(tmp_path / "nan.npz")
    stored.pop("factor")
    np.savez(tmp_path / "short.npz", **stored)
    with pytest.raises(ValueError, match=r"lacks \['factor'\]"):
        rn.Attribution.load(tmp_path / "short.npz")
    np.savez(tmp_path / "other.npz", X=X)
    with pytest.raises(ValueError, match="not a saved rif-native attribution"):
        rn.Attribution.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="must end in .npz"):
        A.save(tmp_path / "a.bin")


def test_files_that_are_not_npz_archives_are_named(rng, tmp_path):
    """A file that is not a .npz archive (text, a truncated save, a .npy array, an empty file)
    is a ValueError naming it, not NumPy's advice to load it with allow_pickle=True."""
    X, y, w, theta = _problem(rng)
    rn.Attribution(X, y, theta, l2=0.5, fit_intercept=True).save(tmp_path / "a.npz")
    whole = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "text.npz").write_text("not an archive")
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "x.npy", X)
    for name in ("text.npz", "cut.npz", "empty.npz", "x.npy"):
        with pytest.raises(ValueError, match="not a saved rif-native attribution") as info:
            rn.Attribution.load(tmp_path / name)
        assert name in str(info.value) and "pickle" not in str(info.value)


def test_a_failed_save_leaves_nothing(rng, tmp_path):
    X, y, w, theta = _problem(rng)
    A = rn.Attribution(X, y, theta, l2=0.5, fit_intercept=True)
    with pytest.raises(OSError):
        A.save(tmp_path / "missing" / "a.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_column_theta_ignores_is_checked(rng, tmp_path):
    """r and a do not see X where theta is 0; the leverages checked on load do."""
    X, y, w, theta = _problem(rng)
    theta = theta.copy()
    theta[2] = 0.0
    np.save(tmp_path / "X.npy", X)
    A = rn.Attribution(str(tmp_path / "X.npy"), y, theta, l2=0.5, fit_intercept=True)
    A.save(tmp_path / "a.npz")
    X2 = X.copy()
    X2[:, 2] = rng.standard_normal(len(X2)) * 3
    with pytest.raises(ValueError, match="leverage is"):
        rn.Attribution.load(tmp_path / "a.npz", X2)


def test_multiindex_ids_are_saved_as_text(rng, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, w, theta = _problem(rng, n=40, d=3)
    index = pd.MultiIndex.from_product([["a", "b"], range(20)])
    A = rn.Attribution(pd.DataFrame(X, index=index), pd.Series(y, index=index), theta,
                       l2=0.5, fit_intercept=True)
    A.save(tmp_path / "m.npz")
    B = rn.Attribution.load(tmp_path / "m.npz")
    assert list(B.sample_ids[:2]) == ["('a', 0)", "('a', 1)"]


def test_kept_directions_are_saved_and_read_no_more_after_loading(rng, tmp_path):
    """An object built with directions= saves their projections: the loaded one answers their
    scores without a pass over X, equal to the saved object's; the file's kept arrays are
    checked against X (a foreign P, a damaged or partial set is refused)."""
    X, y, w, theta = _problem(rng, n=1500, d=10)
    np.save(tmp_path / "X.npy", X)
    V = rng.standard_normal((11, 2))
    A = rn.Attribution(str(tmp_path / "X.npy"), y, theta, l2=0.5, sample_weight=w,
                       fit_intercept=True, num_threads=1, directions=V)
    assert A.kept_directions == 2
    A.save(tmp_path / "a.npz")
    src = sources.open_source(str(tmp_path / "X.npy"))
    B = rn.Attribution.load(tmp_path / "a.npz", src, num_threads=1)
    assert B.kept_directions == 2 and src.passes == 1
    for method in ("if", "rif"):
        np.testing.assert_array_equal(B.scores(V, method=method), A.scores(V, method=method))
        np.testing.assert_array_equal(B.scores(V[:, 1], method=method),
                                      A.scores(V[:, 1], method=method))
    assert src.passes == 1  # the scores came from the saved projections
    # the same scores from a pass over X (an object built without directions), to rounding
    C = rn.Attribution(X, y, theta, l2=0.5, sample_weight=w, fit_intercept=True, num_threads=1)
    ref = C.scores(V, method="rif")
    np.testing.assert_allclose(B.scores(V, method="rif"), ref, rtol=0,
                               atol=1e-12 * np.abs(ref).max())
    import pickle

    assert pickle.loads(pickle.dumps(rn.Attribution.load(tmp_path / "a.npz", X))) \
        .kept_directions == 2
    with np.load(tmp_path / "a.npz") as f:
        stored = {k: f[k] for k in f.files}
    P = stored["kept_P"].copy()
    P[0, 1] += 1e-6 * (1.0 + np.abs(P).max())  # sample 0 is one of the 16 checked
    np.savez(tmp_path / "p.npz", **{**stored, "kept_P": P})
    with pytest.raises(ValueError, match="sample 0's projection on kept direction 1"):
        rn.Attribution.load(tmp_path / "p.npz", X)
    np.savez(tmp_path / "part.npz", **{k: v for k, v in stored.items() if k != "kept_U"})
    with pytest.raises(ValueError, match=r"lacks \['kept_U'\]"):
        rn.Attribution.load(tmp_path / "part.npz", X)
    np.savez(tmp_path / "shape.npz", **{**stored, "kept_P": stored["kept_P"][:-1]})
    with pytest.raises(ValueError, match="kept directions' shapes"):
        rn.Attribution.load(tmp_path / "shape.npz", X)
    # and an object without directions saves none
    C.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as f:
        assert not any(k.startswith("kept_") for k in f.files)
    assert rn.Attribution.load(tmp_path / "c.npz").kept_directions == 0
