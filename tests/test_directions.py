"""Attribution(..., directions=V): the leverage pass keeps X H^{-1} V, and scores with those
directions then read X no more. Checked against the float64 NumPy reference (conftest), against
the same object built without them, and by counting passes over a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

import rif_native as rn
import rif_native.metrics
from conftest import FAMILIES, TextStream, assert_close, make_problem


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(3000, 20), (400, 150)])  # n >= 3p: L^{-1}; else solves
def test_kept_scores_match_the_reference(rng, seed, family, fit_intercept, weighted, shape):
    n, d = shape
    prob = make_problem(rng, family, n=n, d=d, fit_intercept=fit_intercept, weighted=weighted,
                        seed=seed)
    V = rng.standard_normal((prob.p, 3))
    A = rn.Attribution(prob.X, prob.y, prob.theta, directions=V, num_threads=2, **prob.kw)
    B = rn.Attribution(prob.X, prob.y, prob.theta, num_threads=2, **prob.kw)
    assert A.kept_directions == 3 and B.kept_directions == 0 and A.solver == "primal"
    # the leverage pass itself is unchanged, to the bit
    np.testing.assert_array_equal(A.leverage, B.leverage)
    for method in ("rif", "if"):
        got = A.scores(V, method)
        assert_close(got, prob.ref.scores(V, method), 1e-10, f"{method} scores", seed,
                     per="whole")
        # the same quantity on scores()'s own pass: the same numbers to rounding
        np.testing.assert_allclose(got, B.scores(V, method), rtol=0,
                                   atol=1e-12 * np.abs(got).max())
        # one column, columns reordered and repeated: picked out of the kept ones
        np.testing.assert_array_equal(A.scores(V[:, 1], method), got[:, 1])
        np.testing.assert_array_equal(A.scores(V[:, [2, 0, 2]], method), got[:, [2, 0, 2]])


def test_mixed_precision_keeps_them_in_float64(rng):
    prob = make_problem(rng, "logistic", n=4000, d=60, fit_intercept=True)
    X32 = prob.X.astype(np.float32)
    V = rng.standard_normal(prob.p)
    A = rn.Attribution(X32, prob.y, prob.theta, directions=V, precision="mixed",
                       num_threads=2, **prob.kw)
    B = rn.Attribution(X32, prob.y, prob.theta, precision="mixed", num_threads=2, **prob.kw)
    assert A.precision == "mixed" and A.kept_directions == 1
    # the float32 panels are the ones load() gives: the leverages agree to the bit
    np.testing.assert_array_equal(A.leverage, B.leverage)
    for method in ("rif", "if"):
        np.testing.assert_allclose(A.scores(V, method), B.scores(V, method), rtol=0,
                                   atol=1e-12 * np.abs(B.scores(V, method)).max())


def test_other_directions_take_their_own_pass(rng, tmp_path):
    prob = make_problem(rng, "logistic", n=5000, d=16, fit_intercept=True)
    path = tmp_path / "X.npy"
    np.save(path, prob.X)
    V = rng.standard_normal((prob.p, 2))
    src = rn.sources.open_source(path)
    A = rn.Attribution(src, prob.y, prob.theta, directions=V, num_threads=2, **prob.kw)
    before = src.passes
    kept = A.scores(V[:, 0]), A.scores(V, "if"), A.top(V[:, 1], 5)
    assert src.passes == before  # none of these read the file
    assert_close(kept[0], prob.ref.scores(V[:, 0]), 1e-10, "kept rif", per="whole")
    other = V[:, 0] * 2.0  # not a kept direction (nor is a mix of a kept and a new one)
    assert_close(A.scores(other), prob.ref.scores(other), 1e-10, "new rif", per="whole")
    assert src.passes == before + 1
    A.scores(np.column_stack([V[:, 0], other]))
    assert src.passes == before + 2


def test_paths_that_do_not_keep_them_still_answer(rng):
    # the dual path (n < p) scores on a pass of its own; sparse X (kept where its rows are
    # read as dense blocks) the same results as dense X
    prob = make_problem(rng, "logistic", n=80, d=200, fit_intercept=True)
    V = rng.standard_normal(prob.p)
    A = rn.Attribution(prob.X, prob.y, prob.theta, directions=V, **prob.kw)
    assert A.solver == "dual" and A.kept_directions == 0
    assert_close(A.scores(V), prob.ref.scores(V), 1e-9, "dual rif", per="whole")
    for n, d, density, kept in ((2000, 300, 0.01, 0), (600, 30, 0.2, 1)):
        prob = make_problem(rng, "logistic", n=n, d=d)
        Xs = sp.random(n, d, density=density, format="csr",
                       random_state=int(rng.integers(1 << 31)))
        V = rng.standard_normal(d)
        A = rn.Attribution(Xs, prob.y, prob.theta, directions=V, **prob.kw)
        assert A.kept_directions == kept
        ref = rn.Attribution(Xs.toarray(), prob.y, prob.theta, **prob.kw).scores(V)
        np.testing.assert_allclose(A.scores(V), ref, rtol=0, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("bad, fragment", [
    (np.ones(5), "directions must have shape (9,) or (9, m), got (5,)"),
    (np.ones((9, 2, 1)), "directions must have shape"),
    (np.full(9, np.nan), "directions contains NaN or inf"),
    (np.array(["a"] * 9), "directions"),
])
def test_bad_directions_are_named(rng, bad, fragment):
    prob = make_problem(rng, "logistic", n=50, d=8, fit_intercept=True)
    with pytest.raises((ValueError, TypeError), match="directions") as info:
        rn.Attribution(prob.X, prob.y, prob.theta, directions=bad, **prob.kw)
    assert fragment in str(info.value)


def test_rif_attribute_reads_the_file_twice_for_the_attribution(tmp_path, monkeypatch):
    # The command line knows the test loss's gradient before it builds the Attribution: its IF
    # and RIF scores come from the leverage pass, so the attribution reads the training rows
    # twice (z and H; leverages and projections), not four times.
    from rif_native.cli import main

    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 6))
    y = (X[:, 0] + rng.standard_normal(400) > 0).astype(float)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    built = []
    real = rn.Attribution

    def recording(*args, **kwargs):
        A = real(*args, **kwargs)
        built.append((A, args[0], args[0].passes))
        return A

    monkeypatch.setattr(rn, "Attribution", recording)
    err = TextStream(terminal=True)
    monkeypatch.setattr("sys.stderr", err)
    out = tmp_path / "out.json"
    assert main(["attribute", "--data", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--json", str(out), "--force"]) == 0
    (A, source, after_ctor), = built
    assert A.kept_directions == 1
    assert source.passes == after_ctor  # neither the RIF nor the IF scores read it again
    res = json.loads(out.read_text())
    train = np.array(res["train_indices"])
    theta = rn.fit(X[train], y[train], l2=res["model"]["l2"], fit_intercept=True).theta
    assert "reading X (training rows)" in err.getvalue()
    ref = real(X[train], y[train], theta, l2=res["model"]["l2"], fit_intercept=True)
    direction = rn.metrics.TestLoss(X[len(train):], y[len(train):],
                                    fit_intercept=True).gradient(theta)
    for key, method in (("scores_rif", "rif"), ("scores_if", "if")):
        np.testing.assert_allclose(np.array(res[key], dtype=float), ref.scores(direction, method),
                                   rtol=1e-7, atol=1e-12)


def test_dask_engine_takes_and_checks_them(rng):
    da = pytest.importorskip("dask.array")
    prob = make_problem(rng, "logistic", n=600, d=10, fit_intercept=True)
    V = rng.standard_normal(prob.p)
    X = da.from_array(prob.X, chunks=(200, 10))
    A = rn.Attribution(X, prob.y, prob.theta, directions=V, **prob.kw)
    assert A.backend == "dask" and A.kept_directions == 0
    assert_close(np.asarray(A.scores(V)), prob.ref.scores(V), 1e-10, "dask rif", per="whole")
    with pytest.raises(ValueError, match=r"directions must have shape \(11,\)"):
        rn.Attribution(X, prob.y, prob.theta, directions=V[:5], **prob.kw)


@pytest.mark.parametrize("on_cluster", [False, True])
def test_dask_scores_now_reads_x_once_for_both_methods(rng, request, on_cluster):
    da = pytest.importorskip("dask.array")
    if on_cluster:
        request.getfixturevalue("client")
    prob = make_problem(rng, "logistic", n=900, d=12, fit_intercept=True, weighted=True)
    V = rng.standard_normal((prob.p, 2))
    X = da.from_array(prob.X, chunks=(300, 12))
    A = rn.Attribution(X, prob.y, prob.theta, progress=True, **prob.kw)
    before = A._chunks.passes
    err = TextStream(terminal=True)
    import contextlib

    with contextlib.redirect_stderr(err):
        rif, if_ = A.scores_now(V, ("rif", "if"))
        one, = A.scores_now(V[:, 1], ("if",))
    assert A._chunks.passes == before + 2  # one pass for both methods, one for the last call
    assert f"Dask pass {before + 1} (scores)" in err.getvalue()
    assert_close(rif, prob.ref.scores(V, "rif"), 1e-10, "rif", per="whole")
    assert_close(if_, prob.ref.scores(V, "if"), 1e-10, "if", per="whole")
    # one column (a product of another shape): the same to rounding, relative to the scale
    np.testing.assert_allclose(one, if_[:, 1], rtol=0, atol=1e-12 * np.abs(if_).max())
    # the lazy arrays give the same numbers
    np.testing.assert_allclose(np.asarray(A.scores(V, "rif")), rif, rtol=0,
                               atol=1e-12 * np.abs(rif).max())


def test_multinomial_checks_them_and_scores_as_without(rng):
    X = rng.standard_normal((300, 5))
    y = rng.integers(0, 3, 300)
    res = rn.multinomial.fit(X, y, l2=1.0)
    D = rng.standard_normal(np.shape(res.theta))
    A = rn.Attribution(X, y, res.theta, l2=1.0, family="multinomial", directions=D)
    B = rn.Attribution(X, y, res.theta, l2=1.0, family="multinomial")
    # (each object takes the idle cores at its construction: equal to rounding)
    ref = B.scores(D)
    np.testing.assert_allclose(A.scores(D), ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    with pytest.raises(ValueError, match="a direction must have shape"):
        rn.Attribution(X, y, res.theta, l2=1.0, family="multinomial", directions=D[:, :2])


def test_a_pickled_copy_keeps_its_directions(rng, seed):
    """Unpickling builds the object again with the same directions: its scores on them read X
    no more and equal the original's (the same computation, the thread count pinned)."""
    import pickle

    prob = make_problem(rng, "logistic", n=800, d=30, fit_intercept=True, weighted=True,
                        seed=seed)
    V = rng.standard_normal((prob.p, 2))
    A = rn.Attribution(prob.X, prob.y, prob.theta, directions=V, num_threads=2, **prob.kw)
    B = pickle.loads(pickle.dumps(A))
    assert B.kept_directions == 2
    for method in ("rif", "if"):
        np.testing.assert_array_equal(B.scores(V, method), A.scores(V, method))
    C = pickle.loads(pickle.dumps(rn.Attribution(prob.X, prob.y, prob.theta, num_threads=2,
                                                 **prob.kw)))
    assert C.kept_directions == 0
