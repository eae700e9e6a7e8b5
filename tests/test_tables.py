"""SampleTable: its columns against a float64 NumPy reference written here, files that read back
equal (CSV, JSON, Parquet; inf included), the DataFrame view, and pickled Attributions."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import rif_native as rn
from conftest import logistic_refit


def _data(rng, n=80, d=3):
    X = rng.standard_normal((n, d + 1))
    X[:, d] = 0.0
    X[7, d] = 1.0  # the only sample with this feature: with l2 = 0 its leverage is 1
    y = (X[:, 0] + rng.standard_normal(n) > 0).astype(float)
    y[7] = 1.0
    w = rng.uniform(0.5, 2.0, n)
    return X, y, w


def _reference(X, y, w, theta):
    Z = np.column_stack([X, np.ones(len(y))])
    s = 1 / (1 + np.exp(-(Z @ theta)))
    r, a = w * (s - y), w * s * (1 - s)
    Hinv = np.linalg.inv((Z * a[:, None]).T @ Z)
    h = a * np.einsum("ij,jk,ik->i", Z, Hinv, Z)
    return Z, r, h, Hinv


def test_columns_equal_a_numpy_reference(rng):
    X, y, w = _data(rng)
    X = X[:, :3]  # without the lone feature: every leverage below 1
    theta = logistic_refit(X, y, w)
    Z, r, h, Hinv = _reference(X, y, w, theta)
    A = rn.Attribution(X, y, theta, sample_weight=w, fit_intercept=True)
    v = rng.standard_normal(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = A.table({"m": v})
    assert list(t.columns) == ["sample_id", "label", "weight", "leverage", "residual",
                               "rescale", "if_m", "rif_m"]
    np.testing.assert_array_equal(t.columns["sample_id"], np.arange(len(y)))
    np.testing.assert_array_equal(t.columns["label"], y)
    np.testing.assert_array_equal(t.columns["weight"], w)
    np.testing.assert_allclose(t.columns["leverage"], h, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(t.columns["residual"], r, rtol=1e-12, atol=1e-15)
    IF = (r[:, None] * Z) @ Hinv
    np.testing.assert_allclose(t.columns["if_m"], IF @ v, rtol=1e-9,
                               atol=1e-12 * np.abs(IF @ v).max())
    np.testing.assert_allclose(t.columns["rif_m"], IF @ v / (1 - h), rtol=1e-9,
                               atol=1e-12 * np.abs(IF @ v).max())
    assert t.meta["param_names"] == ["x1", "x2", "x3", "const"] and t.meta["directions"] == ["m"]


def _singular_table(rng):
    """l2 = 0 and a feature that only sample 7 has: its rescale and RIF score are inf."""
    X, y, w = _data(rng)
    theta = np.zeros(5)
    A = rn.Attribution(X, y, theta, sample_weight=w, fit_intercept=True)
    with pytest.warns(rn.SingularRemovalWarning):
        return A, A.table({"m": np.ones(5)}, diagnostics=True)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_files_read_back_equal(rng, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    A, t = _singular_table(rng)
    assert np.isinf(t.columns["rescale"][7]) and np.isinf(t.columns["rif_m"][7])
    path = tmp_path / f"table{suffix}"
    t.write(path)
    back = rn.SampleTable.read(path)
    assert list(back.columns) == list(t.columns)
    for k, v in t.columns.items():
        np.testing.assert_array_equal(back.columns[k], v, err_msg=k)
        assert back.columns[k].dtype.kind == v.dtype.kind, k
    assert back.meta == ({} if suffix == ".csv" else t.meta)


def test_frame_view_and_diagnostics_columns(rng):
    pd = pytest.importorskip("pandas")
    X, y, w = _data(rng)
    ids = pd.Index([f"id{i}" for i in range(len(y))])
    Xf = pd.DataFrame(X[:, :3], columns=["a", "b", "c"], index=ids)
    theta = logistic_refit(X[:, :3], y, w, l2=1.0)
    A = rn.Attribution(Xf, pd.Series(y, index=ids), theta, l2=1.0, fit_intercept=True,
                       sample_weight=pd.Series(w, index=ids))
    t = A.table(rn.metrics.TestLoss(X[:10, :3], y[:10], fit_intercept=True),
                diagnostics=True)
    frame = t.to_frame()
    assert frame.index.equals(pd.Index(ids, name="sample_id"))
    np.testing.assert_array_equal(frame["cooks_d"].to_numpy(),
                                  A.diagnostics()["cooks_d"].to_numpy())
    assert "dfb_b" in frame.columns and "rif_score" in frame.columns
    grad = rn.metrics.TestLoss(X[:10, :3], y[:10], fit_intercept=True).gradient(theta)
    np.testing.assert_array_equal(frame["rif_score"].to_numpy(), A.scores(grad).to_numpy())


def test_pickled_attribution_answers_the_same(rng, tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, w = _data(rng)
    theta = logistic_refit(X[:, :3], y, w, l2=1.0)
    Xf = pd.DataFrame(X[:, :3], columns=["a", "b", "c"])
    A = rn.Attribution(Xf, y, theta, l2=1.0, fit_intercept=True, sample_weight=w,
                       num_threads=1)  # kept through pickling
    B = pickle.loads(pickle.dumps(A))
    np.testing.assert_array_equal(B.leverage, A.leverage)
    np.testing.assert_array_equal(B.rescaled_influence().to_numpy(),
                                  A.rescaled_influence().to_numpy())
    assert B.param_names == ["a", "b", "c", "const"] and B.l2 == 1.0
    np.save(tmp_path / "X.npy", X[:, :3])
    C = rn.Attribution(str(tmp_path / "X.npy"), y, theta, l2=1.0, fit_intercept=True)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(C)


def test_bad_paths(rng, tmp_path):
    A, t = _singular_table(rng)
    with pytest.raises(ValueError, match=".csv, .json or .parquet"):
        t.write(tmp_path / "t.txt")
    (tmp_path / "x.json").write_text('{"columns": {}}')
    with pytest.raises(ValueError, match="not a rif-native sample table"):
        rn.SampleTable.read(tmp_path / "x.json")


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_text_ids_read_back_as_text(rng, tmp_path, suffix):
    """Ids such as "007" or "nan" stay text; ids that are dates are written as their text."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    X, y, w = _data(rng)
    ids = [f"{i:03d}" for i in range(len(y))]
    ids[5] = "nan"
    if suffix == ".csv":
        ids[5] = "n/a"  # a CSV cell "nan" is a number: the docstring says so
    Xf = pd.DataFrame(X[:, :3], index=ids)
    A = rn.Attribution(Xf, y, logistic_refit(X[:, :3], y, w), fit_intercept=True)
    t = A.table()
    t.write(tmp_path / f"t{suffix}")
    back = rn.SampleTable.read(tmp_path / f"t{suffix}")
    assert list(back.columns["sample_id"]) == ids
    dates = pd.DataFrame(X[:, :3], index=pd.date_range("2026-01-01", periods=len(y)))
    D = rn.Attribution(dates, y, A.theta, fit_intercept=True).table()
    D.write(tmp_path / f"d{suffix}")
    got = rn.SampleTable.read(tmp_path / f"d{suffix}").columns["sample_id"]
    assert list(got) == list(D.columns["sample_id"])
    assert got[0] == "2026-01-01 00:00:00"


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_numeric_looking_and_64_bit_ids_read_back_equal(rng, tmp_path, suffix):
    """Text ids that are all numbers but not written as a float writes them ("007", "1e3") stay
    text in a CSV (they read back as 7.0 and 1000.0, merging "7" and "007"); unsigned 64-bit ids
    above int64 (hashes) read back as uint64 (CSV and JSON raised OverflowError)."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    pd = pytest.importorskip("pandas")
    X, y, w = _data(rng)
    theta = logistic_refit(X[:, :3], y, w)
    text = [f"{i:03d}" for i in range(len(y))]
    text[1] = "1e3"
    hashed = np.uint64(2**63) + rng.choice(2**40, len(y), replace=False).astype(np.uint64)
    for ids in (text, hashed):
        t = rn.Attribution(pd.DataFrame(X[:, :3], index=ids), y, theta,
                           fit_intercept=True).table()
        t.write(tmp_path / f"t{suffix}")
        got = rn.SampleTable.read(tmp_path / f"t{suffix}").columns["sample_id"]
        assert list(got) == list(ids)
        assert {type(v) for v in got.tolist()} == {type(v) for v in np.asarray(ids).tolist()}
