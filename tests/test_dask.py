"""The Dask engine against the in-memory kernel, on a distributed LocalCluster (2 workers, one
thread each) and on Dask's local scheduler: every answer equal to 1e-10 relative to its scale
(the in-memory path is itself checked against NumPy, statsmodels and refits elsewhere)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import rif_native as rn
from conftest import close_to_scale
from rif_native.datasets import load_sms_spam

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

TOL = 1e-10


def close(a, b, tol=TOL):
    close_to_scale(a, b, tol)


def problem(seed, n=3000, d=25, dtype=np.float64, weights=True, family="logistic"):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) + rng.uniform(-3, 3, d)).astype(dtype)
    z = X.astype(np.float64) @ rng.standard_normal(d) * 0.2
    if family == "logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-(z - z.mean())))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(np.clip(z - z.mean(), -3, 3) * 0.3)).astype(float)
    else:
        y = z + rng.standard_normal(n)
    w = rng.uniform(0.2, 2.0, n) if weights else None
    return X, y, w


def uneven_chunks(n, seed):
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, n), 6, replace=False))
    return tuple(np.diff(np.concatenate([[0], cuts, [n]])).tolist())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_attribution_matches_in_memory(client, dtype, fit_intercept):
    X, y, w = problem(1, dtype=dtype)
    n, d = X.shape
    kw = dict(l2=2.0, fit_intercept=fit_intercept, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    Xd = da.from_array(X, chunks=(uneven_chunks(n, 2), d))
    B = rn.Attribution(Xd, y, theta, **kw)
    assert type(B).__name__ == "DaskAttribution" and isinstance(B, rn.Attribution)
    assert isinstance(B.leverage, da.Array)  # lazy, computed where the chunks are
    close(B.leverage.compute(), A.leverage)
    close(B.rescale.compute(), A.rescale)
    close(B.residuals.compute(), A.residuals)
    close(B.curvature.compute(), A.curvature)
    close(B.hessian(), A.hessian())
    assert B.gradient_norm == pytest.approx(A.gradient_norm, rel=1e-3, abs=1e-9)
    V = np.random.default_rng(3).standard_normal((A.n_params, 3))
    close(B.solve(V), A.solve(V))
    close(B.solve(V[:, 0]), A.solve(V[:, 0]))
    for method in ("if", "rif"):
        close(B.scores(V, method).compute(), A.scores(V, method))
        close(B.scores(V[:, 1], method).compute(), A.scores(V[:, 1], method))
    close(B.influence().compute(), A.influence())
    close(B.rescaled_influence().compute(), A.rescaled_influence())
    idx = [7, 0, n - 1, 123]
    close(B.rescaled_influence(idx), A.rescaled_influence(idx))
    top, top_ref = B.top(V[:, 0], 5), A.top(V[:, 0], 5)
    np.testing.assert_array_equal(top.increase, top_ref.increase)
    np.testing.assert_array_equal(top.decrease, top_ref.decrease)


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_sets_newton_steps_and_retraining(client, fit_intercept):
    X, y, w = problem(4)
    n, d = X.shape
    kw = dict(l2=1.0, fit_intercept=fit_intercept, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(da.from_array(X, chunks=(700, d)), y, theta, **kw)
    rng = np.random.default_rng(5)
    sets = [np.arange(3), rng.choice(n, 40, replace=False), np.arange(500, 520)]
    for method in ("if", "rif", "ns"):
        close(B.group_effect(sets, method), A.group_effect(sets, method))
    close(B.group_effect(sets[1], "ns"), A.group_effect(sets[1], "ns"))
    got, ref = B.retrain(sets, tol=1e-13), A.retrain(sets, tol=1e-13)
    assert got.converged.all()
    close(got.theta, ref.theta, 1e-9)
    close(got.effect, ref.effect, 1e-9)


@pytest.mark.parametrize("weighted", [True, False])
def test_retraining_with_fresh_hessians(client, weighted, monkeypatch):
    """Newton steps with the Hessian without the set, from a pass whose weights are the
    problem's except in the chunks holding the set (sets across a chunk boundary, in one chunk,
    and spread over all of them)."""
    from rif_native import _dask

    monkeypatch.setattr(_dask, "_CHORD_ITERATIONS", 0)  # every step takes a fresh Hessian
    X, y, w = problem(21)
    n, d = X.shape
    kw = dict(l2=1.0, fit_intercept=True, sample_weight=w if weighted else None)
    theta = rn.fit(X, y, tol=1e-13, **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(da.from_array(X, chunks=(700, d)), y, theta, **kw)
    sets = [np.arange(690, 712), np.arange(5), np.random.default_rng(22).choice(n, 90, False)]
    ch = B._chunks
    for s in sets:  # the weights without the set, against the whole vector with it at 0
        w0 = w.copy() if weighted else np.ones(n)
        w0[s] = 0.0
        close(ch.hessian(B._theta, ch.weights_without(s))["H"],
              ch.hessian(B._theta, ch.cut(w0))["H"])
    got, ref = B.retrain(sets, tol=1e-13), A.retrain(sets, tol=1e-13)
    assert got.converged.all() and got.refreshed.all()
    close(got.theta, ref.theta, 1e-9)
    close(got.effect, ref.effect, 1e-9)


@pytest.mark.parametrize("family,fit_intercept", [("logistic", True), ("poisson", False),
                                                  ("squared", True)])
def test_fit_matches_in_memory(client, family, fit_intercept):
    X, y, w = problem(6, family=family)
    kw = dict(l2=0.5, family=family, fit_intercept=fit_intercept, sample_weight=w, tol=1e-13)
    ref = rn.fit(X, y, **kw)
    got = rn.fit(da.from_array(X, chunks=(800, X.shape[1])), y, **kw)
    assert got.converged
    close(got.theta, ref.theta)
    assert got.loss == pytest.approx(ref.loss, rel=1e-12)
    assert got.passes is not None and got.passes >= 2 * got.n_iter


def test_labels_and_weights_as_dask_arrays(client):
    X, y, w = problem(7)
    d = X.shape[1]
    theta = rn.fit(X, y, l2=1.0, sample_weight=w).theta
    A = rn.Attribution(X, y, theta, l2=1.0, sample_weight=w)
    B = rn.Attribution(da.from_array(X, chunks=(1000, d)), da.from_array(y, chunks=500), theta,
                       l2=1.0, sample_weight=da.from_array(w, chunks=1000))
    close(B.leverage.compute(), A.leverage)


def test_local_scheduler_without_cluster():
    """No distributed client: Dask's own threads run the same tasks."""
    X, y, w = problem(8, n=1500)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    Xd = da.from_array(X, chunks=(400, X.shape[1]))
    import dask

    with dask.config.set(scheduler="threads"):
        B = rn.Attribution(Xd, y, theta, l2=1.0, fit_intercept=True)
        close(B.leverage.compute(), A.leverage)
        close(B.scores(np.ones(A.n_params)).compute(), A.scores(np.ones(A.n_params)))


def test_real_data_and_columns_in_several_chunks(client):
    """The bundled SMS Spam bag of words, with X's columns split across chunks (rechunked)."""
    data = load_sms_spam(max_features=200)
    X, y = data.X, data.y
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    B = rn.Attribution(da.from_array(X, chunks=(1000, 50)), y, theta, l2=1.0,
                       fit_intercept=True)
    close(B.leverage.compute(), A.leverage)
    v = np.zeros(A.n_params)
    v[-1] = 1.0
    close(B.scores(v).compute(), A.scores(v))


def test_rows_written_to_a_file(client, tmp_path):
    X, y, w = problem(9, n=1200)
    theta = rn.fit(X, y, l2=1.0).theta
    A = rn.Attribution(X, y, theta, l2=1.0)
    B = rn.Attribution(da.from_array(X, chunks=(300, X.shape[1])), y, theta, l2=1.0)
    written = B.rescaled_influence(out=tmp_path / "rif.npy")
    close(np.load(tmp_path / "rif.npy"), A.rescaled_influence())
    close(written, A.rescaled_influence())


def test_chosen_rows_to_a_bad_target_are_refused_before_they_are_read(client, tmp_path):
    """out= in a missing folder, or X's own file, with indices: refused before the rows are
    gathered and solved (they were computed first, then refused)."""
    X, y, w = problem(11, n=600)
    np.save(tmp_path / "x.npy", X)
    B = rn.Attribution(str(tmp_path / "x.npy"), y, np.zeros(X.shape[1]), l2=1.0,
                       backend="dask")

    def read(idx):
        raise AssertionError("rows were read before out= was checked")

    B._chunks.rows = read
    with pytest.raises(FileNotFoundError, match="does not exist"):
        B.rescaled_influence([1, 2], out=tmp_path / "missing" / "rif.npy")
    with pytest.raises(ValueError, match="which X is read from"):
        B.influence([1, 2], out=tmp_path / "x.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), X)


def test_chosen_rows_written_to_a_file(client, tmp_path):
    """Rows of chosen samples go to out= as well (they were returned and out= ignored)."""
    X, y, w = problem(10, n=900)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    B = rn.Attribution(da.from_array(X, chunks=(300, X.shape[1])), y, theta, l2=1.0,
                       fit_intercept=True)
    idx = [899, 3, 450]
    written = B.rescaled_influence(idx, out=tmp_path / "rif.npy")
    close(np.load(tmp_path / "rif.npy"), A.rescaled_influence(idx))
    close(written, A.rescaled_influence(idx))
    close(B.influence(idx, out=tmp_path / "if.zarr")[:], A.influence(idx))
    assert (tmp_path / "if.zarr").is_dir()


@pytest.mark.parametrize("rows", [(0, 100, 0, 300, 300, 0), (100, 0, 0, 300, 0, 300),
                                  (700, 0)])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_rows_written_with_empty_row_chunks(client, tmp_path, rows, fit_intercept):
    """Empty row chunks (first, last, several together) change nothing: out= holds the
    in-memory IF / RIF rows."""
    X, y, w = problem(14, n=700, d=8)
    kw = dict(l2=1.0, fit_intercept=fit_intercept, sample_weight=w)
    theta = rn.fit(X, y, **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(da.from_array(X, chunks=(rows, 8)), y, theta, **kw)
    close(B.rescaled_influence(out=tmp_path / "rif.npy"), A.rescaled_influence())
    close(np.load(tmp_path / "rif.npy"), A.rescaled_influence())
    close(B.influence(out=tmp_path / "if.zarr")[:], A.influence())
    close(B.rescaled_influence().compute(), A.rescaled_influence())
    close(B.leverage.compute(), A.leverage)


def nan_problem(bad):
    """X (4000 x 8) with NaN or inf at each (row, column) of bad, and labels."""
    X, y, _ = problem(15, n=4000, d=8, weights=False)
    for (i, j), v in zip(bad, [np.nan, np.inf, -np.inf]):
        X[i, j] = v
    return X, y


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_nan_in_x_is_named_by_its_row_in_x(client, fit_intercept):
    """The in-memory message (X's row and column, not the chunk's), for fit and Attribution,
    with X's first bad entry in a later chunk than others' rows would suggest."""
    p = 8 + int(fit_intercept)
    for bad, first in [([(3000, 5)], (3000, 5)), ([(2500, 1), (1500, 7)], (1500, 7))]:
        X, y = nan_problem(bad)
        message = rf"^X contains NaN or inf \(first at row {first[0]}, column {first[1]}\)$"
        with pytest.raises(ValueError, match=message):  # in memory, as the reference
            rn.fit(X, y, l2=1.0, fit_intercept=fit_intercept)
        Xd = da.from_array(X, chunks=(700, 8))
        with pytest.raises(ValueError, match=message):
            rn.fit(Xd, y, l2=1.0, fit_intercept=fit_intercept)
        with pytest.raises(ValueError, match=message):
            rn.Attribution(Xd, y, np.zeros(p), l2=1.0, fit_intercept=fit_intercept)


def test_unknown_chunk_sizes_are_refused_with_advice(client):
    X, y, _ = problem(16, n=400, d=5)
    Xd = da.from_array(X, chunks=(100, 5))
    Xd = Xd[Xd[:, 0] > -1e9]  # all rows, in chunks of unknown sizes
    for backend in ("dask", "cpu"):
        with pytest.raises(ValueError, match=r"unknown.*X\.compute_chunk_sizes\(\)"):
            rn.Attribution(Xd, y, np.zeros(5), l2=1.0, backend=backend)
    with pytest.raises(ValueError, match=r"X\.compute_chunk_sizes\(\)"):
        rn.fit(Xd, y, l2=1.0)
    Xd.compute_chunk_sizes()
    close(rn.Attribution(Xd, y, np.zeros(5), l2=1.0).leverage.compute(),
          rn.Attribution(X, y, np.zeros(5), l2=1.0).leverage)


def test_backend_choice():
    X, y, _ = problem(10, n=400, d=5)
    theta = np.zeros(5)
    Xd = da.from_array(X, chunks=(100, 5))
    cpu = rn.Attribution(Xd, y, theta, l2=1.0, backend="cpu")  # read here, chunk by chunk
    assert type(cpu) is rn.Attribution
    with pytest.raises(TypeError, match="read X themselves"):  # or a source they open
        rn.Attribution(X, y, theta, l2=1.0, backend="dask")
    with pytest.raises(ValueError, match="logistic labels"):
        rn.Attribution(Xd, y + 2, theta, l2=1.0)
    with pytest.raises(ValueError, match="theta must have 5 entries"):
        rn.Attribution(Xd, y, np.zeros(6), l2=1.0)


def test_x_is_persisted_on_the_workers_when_it_fits(client):
    """A small X is read from its store once and kept on the workers (the config key
    rif_native.persist-share, default half of their memory; 0 never): the answers are the same
    either way."""
    import dask

    X, y, w = problem(11, n=2000, d=8)
    kw = dict(l2=1.0, fit_intercept=True, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    v = np.random.default_rng(12).standard_normal(9)
    Xd = da.from_array(X, chunks=(uneven_chunks(2000, 13), 8))
    kept = rn.Attribution(Xd, y, theta, **kw)
    assert kept._chunks.persisted and "X persisted on the workers" in repr(kept)
    with dask.config.set({"rif_native.persist-share": 0}):
        read = rn.Attribution(Xd, y, theta, **kw)
    assert not read._chunks.persisted
    for B in (kept, read):
        close(B.leverage.compute(), A.leverage)
        close(B.scores(v).compute(), A.scores(v))
    with dask.config.set({"rif_native.persist-share": 1e-12}):  # X larger than its share
        assert not rn.Attribution(Xd, y, theta, **kw)._chunks.persisted


@pytest.mark.parametrize("cluster", [True, False])
def test_a_progress_bar_counts_the_chunks_of_each_pass(request, capfd, cluster):
    """progress=True draws one bar per pass over X, counting its chunk tasks (on a cluster
    and on Dask's local schedulers); the results are the ones without bars."""
    import contextlib
    import re

    import dask

    local = contextlib.nullcontext() if cluster else dask.config.set(scheduler="threads")
    if cluster:
        request.getfixturevalue("client")
    X, y, w = problem(21, n=1600)
    Xd = da.from_array(X, chunks=(200, X.shape[1]))  # 8 chunks
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True, sample_weight=w).theta
    kw = dict(l2=1.0, fit_intercept=True, sample_weight=w)
    with local:
        capfd.readouterr()
        quiet = rn.Attribution(Xd, y, theta, progress=False, **kw)
        assert "Dask pass" not in capfd.readouterr().err
        shown = rn.Attribution(Xd, y, theta, progress=True, **kw)
        err = capfd.readouterr().err
        for k, what in enumerate(["column means", "Hessian", "leverage"], 1):
            assert re.search(rf"Dask pass {k} \({what}\): 100%\S* *\S* 8/8 ", err), err
        assert "Dask pass 4" not in err
        np.testing.assert_array_equal(shown.leverage.compute(), quiet.leverage.compute())
        fitted = rn.fit(Xd, y, tol=1e-12, progress=True, **kw)
        err = capfd.readouterr().err
        bars = {int(k) for k in re.findall(r"Dask pass (\d+) \(\w[\w ]*\): 100%", err)}
        assert bars == set(range(1, int(fitted.passes) + 1)), (bars, fitted.passes)
        assert "(line search)" in err and "(gradient)" in err
        close(fitted.theta, rn.fit(Xd, y, tol=1e-12, progress=False, **kw).theta, 1e-14)


def test_column_sums_overflow_named_without_numpy_warnings():
    """Finite X whose column sums overflow float64: the ValueError that says so, and no NumPy
    RuntimeWarning before it (the sums' overflow is expected and checked)."""
    import dask
    import warnings

    X, y, w = problem(11, n=400, d=5, weights=False)
    X[:, 2] = 1e308
    with dask.config.set(scheduler="sync"), warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="overflow"):
            rn.Attribution(da.from_array(X, chunks=(100, 5)), y, np.zeros(6), l2=1.0,
                           fit_intercept=True)


def test_retraining_a_set_with_a_far_sample(client):
    """A removed sample with z = x . theta far below -709 (a confident y = 0): the set's gradient
    took sigma(z) as 1 / (1 + exp(-z)), whose exp overflowed (a RuntimeWarning, an error under
    strict warnings). The refit against the in-memory one."""
    X, y, w = problem(6, n=600, d=5)
    n, d = X.shape
    X[0] = 0.0
    X[0, 0] = 1.0
    y[0] = 0.0
    kw = dict(l2=1.0, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, **kw).theta
    X[0, 0] = -760.0 / theta[0]  # z_0 = -760 at theta (after the fit: keep it finite)
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(da.from_array(X, chunks=(150, d)), y, theta, **kw)
    sets = [np.array([0, 1, 2])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = B.retrain(sets, tol=1e-12)
    ref = A.retrain(sets, tol=1e-12)
    assert got.converged.all()
    close(got.theta, ref.theta, 1e-9)


def test_a_refit_cut_short_says_what_to_do(client):
    """The Dask retrain's warning gives the other engines' advice (it said only 'stopped
    above the tolerance'): raise max_iter, naming it."""
    X, y, w = problem(4)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    B = rn.Attribution(da.from_array(X, chunks=(700, X.shape[1])), y, theta, l2=1.0,
                       fit_intercept=True)
    with pytest.warns(rn.ConvergenceWarning, match=r"raise max_iter \(it was 1\)"):
        res = B.retrain([np.arange(200)], max_iter=1, tol=1e-13)
    assert not res.converged[0]
