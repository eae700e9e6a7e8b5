"""A multinomial model's IF / RIF rows written to a file (out=): the (k, K, p) array read back
equals the dense float64 reference of test_multinomial and the rows in memory, for .npy and
Zarr targets, all samples or some, from the object and from the one-call functions; X's own
file is refused before any work."""

from __future__ import annotations

import numpy as np
import pytest

import rif_native as rn
from test_multinomial import DenseMultinomial, assert_rows, make_data

KW = dict(l2=0.5, fit_intercept=True)


def _model(tmp_path):
    rng = np.random.default_rng(51)
    X, y, w, theta = make_data(rng, 120, 4, 3, fit_intercept=True, weighted=True)
    np.save(tmp_path / "X.npy", X)
    return X, y, w, theta


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_rows_written_equal_the_reference(tmp_path, suffix):
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    X, y, w, theta = _model(tmp_path)
    R = DenseMultinomial(X, y, theta, sample_weight=w, **KW)
    A = rn.MultinomialAttribution(str(tmp_path / "X.npy"), y, theta, sample_weight=w, **KW)
    rif = A.rescaled_influence(out=tmp_path / f"rif{suffix}")
    assert rif.shape == (120, 3, A.n_params)
    assert_rows(np.asarray(rif), R.RIF, 1e-9, "RIF written")
    assert_rows(np.asarray(rif), A.rescaled_influence(), 1e-13, "RIF in memory")
    idx = [7, 3, 99]
    some = A.influence(idx, out=tmp_path / f"if{suffix}")
    assert_rows(np.asarray(some), R.IF[idx], 1e-9, "IF of some samples written")
    one = rn.rescaled_influence(X, y, theta, family="multinomial", sample_weight=w,
                                out=tmp_path / f"one{suffix}", **KW)
    assert_rows(np.asarray(one), R.RIF, 1e-9, "rn.rescaled_influence(..., out=)")


def test_labelled_rows_come_back_as_the_file_and_x_is_protected(tmp_path):
    pd = pytest.importorskip("pandas")
    X, y, w, theta = _model(tmp_path)
    frame = pd.DataFrame(X, columns=list("abcd"))
    A = rn.MultinomialAttribution(frame, y, theta, sample_weight=w, **KW)
    got = A.rescaled_influence(out=tmp_path / "r.npy")
    assert isinstance(got, np.memmap) and got.shape == (120, 3, 5)
    assert_rows(got[4:5], A.rescaled_influence([4]).to_numpy()[None], 1e-13, "sample 4")
    B = rn.MultinomialAttribution(str(tmp_path / "X.npy"), y, theta, sample_weight=w, **KW)
    before = (tmp_path / "X.npy").read_bytes()
    with pytest.raises(ValueError, match="X is read from"):
        B.rescaled_influence(out=tmp_path / "X.npy")
    assert (tmp_path / "X.npy").read_bytes() == before
