"""X read from a source (rif_native.sources) against X as one array in memory.

Every kind of source (a .npy path as str or PathLike, np.load(mmap_mode="r"), np.memmap, .npy
shards and in-memory shards of unequal sizes with 1-row shards, Zarr with chunks that divide
neither n nor d, Zarr uncompressed and compressed with whole rows per chunk (read from its chunk
files), HDF5 chunked and contiguous, Dask with uneven chunks read on this machine, and
a row-sliceable object that is not an array) must give every answer of the in-memory path to
1e-10 relative to the answer's scale (the in-memory path is checked against independent
references elsewhere), for float64 and float32 X, with and without an intercept. Then: shards
that fall back to the reader (mixed dtypes, not C-contiguous, big-endian, integer, empty), the
errors of bad sources, failed reads (rif_native.SourceReadError, no half-written out= file),
out= targets, Attribution.top, pass counts, progress bars, Ctrl-C (slow) and backend choice.

Sign convention (DESIGN.md): every estimate compared here is a removal effect
theta_{-T} - theta_hat; the comparisons are between two paths of the same package, so the sign
is only checked through equality with the in-memory path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn
from rif_native import _api, _progress, _zarr_files, sources
from rif_native.datasets import load_sms_spam

from conftest import _FRESH_SEED, FIXED_SEED, TextStream

TOL = 1e-10
# Reads of sources without chunks of their own (and merged store chunks) aim at this many
# bytes: small here, so that a pass takes many reads whose edges fall inside kernel blocks.
SMALL_READ = 100_000
DEFAULT_READ = sources.READ_BYTES

N, D, L2 = 3000, 300, 1.0  # block_rows(300) = 873: every pass reads several kernel blocks


def cuts(n):
    """Shard edges: unequal sizes, two of them 1-row shards (n = 3000: 1, 699, 1, 1499, 800)."""
    return [0, 1, 7 * n // 30, 7 * n // 30 + 1, 22 * n // 30, n]


def close(got, ref, what, tol=TOL):
    """max |got - ref| <= tol * max |ref| (the scale of the quantity), shapes equal."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    err = float(np.abs(got - ref).max()) if ref.size else 0.0
    assert err <= tol * max(scale, 1e-300), (
        f"{what}: max error {err:.3e} > {tol:.0e} x scale {scale:.3e}")


@pytest.fixture(autouse=True)
def small_reads(monkeypatch):
    monkeypatch.setattr(sources, "READ_BYTES", SMALL_READ)


class RowSliceable:
    """A 2-D store that is not an array: shape, dtype and X[a:b] only (no __array__)."""

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.reads = 0

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("rows by slices only")
        self.reads += 1
        return self._X[key].copy()


class Flaky(RowSliceable):
    """Reading row `bad` raises OSError (None: never); records the folder listing of `watch`
    when it does."""

    def __init__(self, X, bad=None, watch=None):
        super().__init__(X)
        self.bad, self.watch, self.seen = bad, watch, None

    def __getitem__(self, key):
        a, b, _ = key.indices(self.shape[0])
        if self.bad is not None and a <= self.bad < b:
            if self.watch is not None:
                self.seen = sorted(os.listdir(self.watch))
            raise OSError(f"disk gone at row {self.bad}")
        return super().__getitem__(key)


# ----------------------------------------------------------------------------- source kinds


def _npy(X, folder):
    path = Path(folder) / "X.npy"
    if not path.exists():
        np.save(path, X)
    return path


def _shard_paths(X, folder):
    paths = []
    c = cuts(X.shape[0])
    for j in range(len(c) - 1):
        p = Path(folder) / f"part{j}.npy"
        np.save(p, X[c[j]:c[j + 1]])
        paths.append(p)
    return paths


def _array_shards(X):
    c = cuts(X.shape[0])
    return [X[a:b].copy() for a, b in zip(c, c[1:])]


def _memmap(X, folder):
    path = Path(folder) / "X.raw"
    mm = np.memmap(path, dtype=X.dtype, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    return np.memmap(path, dtype=X.dtype, mode="r", shape=X.shape)


def _zarr(X, folder):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(Path(folder) / "X.zarr"), shape=X.shape, chunks=(97, 128),
                          dtype=X.dtype)
    z[:] = X
    return zarr.open_array(str(Path(folder) / "X.zarr"), mode="r")


def _zarr_plain(X, folder, zarr_format):
    """Uncompressed, whole rows per chunk (97 does not divide n): read in place from its chunk
    files."""
    zarr = pytest.importorskip("zarr")
    path = str(Path(folder) / f"X{zarr_format}.zarr")
    z = zarr.create_array(path, shape=X.shape, chunks=(97, X.shape[1]), dtype=X.dtype,
                          compressors=None, zarr_format=zarr_format)
    z[:] = X
    return zarr.open_array(path, mode="r")


def _zarr_packed(X, folder, zarr_format):
    """Compressed (zstd, Zarr 3's default; Blosc in format 2), whole rows per chunk: its chunk
    files decoded by the reader (rif_native._zarr_files)."""
    zarr = pytest.importorskip("zarr")
    numcodecs = pytest.importorskip("numcodecs")
    path = str(Path(folder) / f"X{zarr_format}z.zarr")
    kw = {} if zarr_format == 3 else {"compressors": numcodecs.Blosc()}
    z = zarr.create_array(path, shape=X.shape, chunks=(97, X.shape[1]), dtype=X.dtype,
                          zarr_format=zarr_format, **kw)
    z[:] = X
    return zarr.open_array(path, mode="r")


def _h5(X, folder, stack, chunks):
    h5py = pytest.importorskip("h5py")
    f = stack.enter_context(h5py.File(Path(folder) / "X.h5", "w"))
    return f.create_dataset("X", data=X, chunks=chunks)


def _dask(X, folder):
    da = pytest.importorskip("dask.array")
    n = X.shape[0]
    return da.from_array(X, chunks=((n // 3, 7, 1, n - n // 3 - 8), X.shape[1]))


KINDS = {
    "npy-str": lambda X, f, s: str(_npy(X, f)),
    "npy-pathlike": lambda X, f, s: _npy(X, f),
    "np.load-mmap": lambda X, f, s: np.load(_npy(X, f), mmap_mode="r"),
    "np.memmap": lambda X, f, s: _memmap(X, f),
    "npy-shards": lambda X, f, s: [str(p) if j % 2 else p  # str and PathLike mixed
                                   for j, p in enumerate(_shard_paths(X, f))],
    "array-shards": lambda X, f, s: _array_shards(X),
    "zarr": lambda X, f, s: _zarr(X, f),
    "zarr-uncompressed-v3": lambda X, f, s: _zarr_plain(X, f, 3),
    "zarr-uncompressed-v2": lambda X, f, s: _zarr_plain(X, f, 2),
    "zarr-zstd-v3": lambda X, f, s: _zarr_packed(X, f, 3),
    "zarr-blosc-v2": lambda X, f, s: _zarr_packed(X, f, 2),
    "h5py-chunked": lambda X, f, s: _h5(X, f, s, chunks=(53, X.shape[1])),
    "h5py-contiguous": lambda X, f, s: _h5(X, f, s, chunks=None),
    "dask": lambda X, f, s: _dask(X, f),
    "row-sliceable": lambda X, f, s: RowSliceable(X),
}
IN_PLACE = {"npy-str", "npy-pathlike", "np.load-mmap", "np.memmap", "npy-shards", "array-shards",
            "zarr-uncompressed-v3", "zarr-uncompressed-v2"}
DECODED = {"zarr-zstd-v3", "zarr-blosc-v2"}  # read from chunk files by the reader


def make_problem(seed, dtype, fit_intercept, weighted, n=N, d=D):
    """Non-centred features (the intercept's centring matters), logistic labels, theta fitted
    in memory."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) / np.sqrt(d) + rng.uniform(-0.5, 0.5, d)).astype(dtype)
    z = X.astype(np.float64) @ rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(z - z.mean())))).astype(np.float64)
    w = rng.uniform(0.25, 2.0, n) if weighted else None
    kw = dict(l2=L2, sample_weight=w, fit_intercept=fit_intercept)
    # Newton steps, as a source's fit takes (it takes no L-BFGS steps): the same steps read
    # from memory and from each source.
    fitted = rn.fit(X, y, tol=1e-12, solver="newton", **kw)
    p = d + int(fit_intercept)
    c = cuts(n)  # rows on both sides of shard edges
    sets = [np.array([7]), rng.choice(n, 12, replace=False),
            rng.choice(n, 200, replace=False)]  # 200 > p / 2: the fresh-factor path
    return dict(X=X, y=y, kw=kw, theta=fitted.theta, fitted=fitted, p=p,
                V=rng.standard_normal((p, 3)),
                rows=np.array([n - 1, 0, 1, c[2] - 1, c[2], c[3], c[4] - 1, c[4]]),
                sets=sets, retrain_sets=[rng.choice(n, 3, replace=False), sets[1]])


def answers(A, P):
    """Everything compared between a source and the in-memory array."""
    V, sets = P["V"], P["sets"]
    out = dict(leverage=A.leverage, rescale=A.rescale, residuals=A.residuals,
               curvature=A.curvature, hessian=A.hessian(),
               scores_rif=A.scores(V, "rif"), scores_if=A.scores(V, "if"),
               scores_1d=A.scores(V[:, 0]), influence=A.influence(P["rows"]),
               rescaled_influence=A.rescaled_influence(P["rows"]))
    for method in ("if", "rif", "ns"):
        out[f"group_{method}"] = A.group_effect(sets, method=method)
        out[f"group_{method}_one"] = A.group_effect(sets[1], method=method)
    R = A.retrain(P["retrain_sets"])
    assert R.converged.all()
    out["retrain_effect"] = R.effect
    out["retrain_theta"] = R.theta
    return out


PROBLEMS = [(np.float64, False, False), (np.float64, True, True),
            (np.float32, False, True), (np.float32, True, False)]


@pytest.fixture(scope="module", params=PROBLEMS,
                ids=[f"{np.dtype(t).name}-{'intercept' if i else 'no_intercept'}"
                     f"{'-weighted' if w else ''}" for t, i, w in PROBLEMS])
def problem(request):
    dtype, fit_intercept, weighted = request.param
    P = make_problem(FIXED_SEED, dtype, fit_intercept, weighted)
    P["ref"] = answers(rn.Attribution(P["X"], P["y"], P["theta"], **P["kw"]), P)
    return P


def check_kind(kind, P, folder, check_fit=True):
    with contextlib.ExitStack() as stack:
        S = KINDS[kind](P["X"], folder, stack)
        assert sources.is_source_like(S)
        backend = dict(backend="cpu")  # a Dask array with the default backend is the Dask engine
        A = rn.Attribution(S, P["y"], P["theta"], **P["kw"], **backend)
        assert A.backend == "cpu" and type(A) is rn.Attribution
        src = A._data[0]
        assert isinstance(src, sources.Source)
        assert src.shape == P["X"].shape and src.dtype == P["X"].dtype
        assert (src.shards is not None) == (kind in IN_PLACE), repr(src)
        decoded = [isinstance(p, _zarr_files.CompressedChunks) for p in src._parts]
        assert any(decoded) == (kind in DECODED), repr(src)
        got = answers(A, P)
        for key, ref in P["ref"].items():
            close(got[key], ref, f"{kind}: {key}")
        # the Python-side reads (Dask engine, checks): rows and X theta, block by block
        X = P["X"]
        np.testing.assert_array_equal(src.take(P["rows"]), X[P["rows"]])
        T = np.stack([P["theta"], P["V"][:, 0]], axis=1)
        Z = X.astype(np.float64) @ T[:X.shape[1]]
        if P["kw"]["fit_intercept"]:
            Z += T[-1]
        close(sources.matvec(src, T, P["kw"]["fit_intercept"]), Z, f"{kind}: matvec")
        close(sources.matvec(src, T[:, 0], P["kw"]["fit_intercept"]), Z[:, 0], f"{kind}: matvec")
        if check_fit and kind != "dask":  # (fit on a Dask array belongs to the Dask engine)
            ref = P["fitted"]
            res = rn.fit(S, P["y"], tol=1e-12, **P["kw"])
            close(res.theta, ref.theta, f"{kind}: fit theta")
            assert res.converged and res.n_iter == ref.n_iter
            assert res.loss == pytest.approx(ref.loss, rel=1e-12)
            assert res.passes is not None and ref.passes is None


@pytest.mark.parametrize("kind", list(KINDS))
def test_source_matches_in_memory(kind, problem, tmp_path):
    check_kind(kind, problem, tmp_path)


@pytest.mark.parametrize("kind", list(KINDS))
def test_source_matches_in_memory_fresh_seed(kind, tmp_path):
    """The same on a problem drawn from this run's fresh seed (RIF_TEST_SEED replays it)."""
    print(f"seed={_FRESH_SEED}")
    P = make_problem(_FRESH_SEED, np.float32, True, True, n=1800, d=250)
    P["ref"] = answers(rn.Attribution(P["X"], P["y"], P["theta"], **P["kw"]), P)
    check_kind(kind, P, tmp_path, check_fit=False)


@pytest.mark.parametrize("kind", ["row-sliceable", "zarr", "h5py-chunked", "dask"])
def test_default_read_size(kind, tmp_path, monkeypatch):
    """With the default read size the reader takes the whole (small) store in one read."""
    monkeypatch.setattr(sources, "READ_BYTES", DEFAULT_READ)
    P = make_problem(FIXED_SEED + 1, np.float64, True, False, n=1200, d=120)
    P["rows"] = np.array([1199, 0, 3])
    P["ref"] = answers(rn.Attribution(P["X"], P["y"], P["theta"], **P["kw"]), P)
    check_kind(kind, P, tmp_path, check_fit=False)


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def sms():
    ds = load_sms_spam(max_features=300)
    X = np.ascontiguousarray(ds.X, dtype=np.float32)
    y = ds.y
    kw = dict(l2=1.0, fit_intercept=True)
    fitted = rn.fit(X, y, tol=1e-12, solver="newton", **kw)  # as a source's fit: Newton
    return X, y, kw, fitted


def test_real_data_sms_spam(sms, tmp_path):
    """The bundled SMS Spam Collection (bag of words, many zero rows), float32 on disk."""
    X, y, kw, fitted = sms
    n, d = X.shape
    A = rn.Attribution(X, y, fitted.theta, **kw)
    rng = np.random.default_rng(FIXED_SEED)
    V = rng.standard_normal((d + 1, 2))
    sets = [rng.choice(n, 20, replace=False), rng.choice(n, 400, replace=False)]
    rows = np.array([n - 1, 0, 17, 2500])
    ref = dict(h=A.leverage, s=A.scores(V), si=A.scores(V, "if"), ns=A.group_effect(sets, "ns"),
               rif=A.group_effect(sets, "rif"), rows=A.rescaled_influence(rows))
    np.save(tmp_path / "X.npy", X)
    cut = [0, 1, 2000, n]
    shards = []
    for j in range(3):
        np.save(tmp_path / f"p{j}.npy", X[cut[j]:cut[j + 1]])
        shards.append(tmp_path / f"p{j}.npy")
    cases = {"npy": tmp_path / "X.npy", "shards": shards}
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, chunks=(333, d),
                          dtype="f4")
    z[:] = X
    cases["zarr"] = z
    for name, S in cases.items():
        B = rn.Attribution(S, y, fitted.theta, **kw)
        got = dict(h=B.leverage, s=B.scores(V), si=B.scores(V, "if"),
                   ns=B.group_effect(sets, "ns"), rif=B.group_effect(sets, "rif"),
                   rows=B.rescaled_influence(rows))
        for key in ref:
            close(got[key], ref[key], f"sms {name}: {key}")
        res = rn.fit(S, y, tol=1e-12, **kw)
        close(res.theta, fitted.theta, f"sms {name}: fit theta")
        assert res.converged and res.passes > 0


# ----------------------------------------------------------------------------- odd shards


def _odd_shards(X, folder):
    n = X.shape[0]
    f32 = X.astype(np.float32)
    np.save(Path(folder) / "fortran.npy", np.asfortranarray(X))
    np.save(Path(folder) / "big.npy", X[:100].astype(">f8"))
    return {
        # (shards, whether the kernel reads them in place)
        "float32+float64": ([f32[:1000], X[1000:]], False),
        "float32 shards": ([f32[:1], f32[1:1500], f32[1500:]], True),
        "not C-contiguous": ([np.asfortranarray(X[:1500]), X[1500:]], False),
        "strided view": ([X[:1], np.ascontiguousarray(X[1:, ::-1])[:, ::-1]], False),
        "Fortran-ordered .npy": (Path(folder) / "fortran.npy", False),
        "big-endian .npy + array": ([Path(folder) / "big.npy", X[100:]], False),
        "int16 + float64": ([np.arange(3 * X.shape[1], dtype=np.int16).reshape(3, -1) % 5,
                             X[3:]], False),
        "empty shards": ([X[:0], X[:1], X[1:1], X[1:n], X[n:]], True),
    }


@pytest.mark.parametrize("case", ["float32+float64", "float32 shards", "not C-contiguous",
                                  "strided view", "Fortran-ordered .npy",
                                  "big-endian .npy + array", "int16 + float64", "empty shards"])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_odd_shards_match_stacked_array(case, fit_intercept, tmp_path):
    rng = np.random.default_rng(FIXED_SEED + 2)
    n, d = 2400, 200
    X = rng.standard_normal((n, d)) / np.sqrt(d) + 0.3
    spec, in_place = _odd_shards(X, tmp_path)[case]
    parts = spec if isinstance(spec, list) else [spec]
    stacked = np.vstack([np.asarray(np.load(p) if isinstance(p, Path) else p, dtype=np.float64)
                         for p in parts])
    if case == "float32 shards":
        stacked = stacked.astype(np.float32)
    y = (rng.random(n) < 0.5).astype(np.float64)
    kw = dict(l2=2.0, fit_intercept=fit_intercept)
    theta = rn.fit(stacked, y, **kw).theta
    A = rn.Attribution(stacked, y, theta, **kw)
    B = rn.Attribution(spec, y, theta, **kw)
    src = B._data[0]
    assert (src.shards is not None) == in_place, repr(src)
    assert src.dtype == stacked.dtype
    V = rng.standard_normal((A.n_params, 2))
    sets = [rng.choice(n, 5, replace=False), rng.choice(n, 150, replace=False)]
    rows = np.array([n - 1, 0, 1, 2, 3, 99, 100, 1500])
    close(B.leverage, A.leverage, "leverage")
    close(B.scores(V), A.scores(V), "scores")
    close(B.rescaled_influence(rows), A.rescaled_influence(rows), "RIF rows")
    close(B.group_effect(sets, "ns"), A.group_effect(sets, "ns"), "NS")
    close(B.group_effect(sets, "if"), A.group_effect(sets, "if"), "group IF")
    close(B.retrain(sets[0]).effect, A.retrain(sets[0]).effect, "retrain")
    close(rn.fit(spec, y, **kw).theta, theta, "fit")


class CountingRows(RowSliceable):
    """Counts the rows read, not the reads."""

    rows = 0

    def __getitem__(self, key):
        out = super().__getitem__(key)
        CountingRows.rows += len(out)
        return out


@pytest.mark.parametrize("threads", [1, 2])
def test_many_shards_hold_the_chunks_of_a_few(threads):
    """A pass over more shards than sources.LIVE_READERS, read through readers (not in place),
    leaves at most that many holding chunks (each held its last chunks before: an HDF5 X in
    12 shards of 40 MB grew an attribution by 624 MB, more than X); the shards let go of are
    read again on the next pass, with the same results; and rows gathered for retraining
    are read alone, not as the whole chunks of shards let go of (28 times X before)."""
    rng = np.random.default_rng(FIXED_SEED + 5)
    count = sources.LIVE_READERS + 20
    n, d = 200 * count, 40
    X = rng.standard_normal((n, d)) / np.sqrt(d) + 0.2
    y = (rng.random(n) < 0.5).astype(np.float64)
    shards = [CountingRows(X[b:b + 200]) for b in range(0, n, 200)]
    src = sources.open_source(shards)
    kw = dict(l2=1.0, fit_intercept=True, num_threads=threads)
    theta = rn.fit(X, y, **kw).theta
    A, ref = rn.Attribution(src, y, theta, **kw), rn.Attribution(X, y, theta, **kw)
    V = rng.standard_normal((A.n_params, 2))
    close(A.leverage, ref.leverage, "leverage")
    close(A.scores(V), ref.scores(V), "scores")
    holding = [j for j, r in enumerate(src._readers) if r._chunks]
    assert 1 <= len(holding) <= sources.LIVE_READERS, holding
    assert all(shard.reads >= 2 for shard in shards)  # (every shard read on each pass)
    # what the memory checks count: a few shards' chunks, not every shard's
    held = sorted(r.held_bytes() for r in src._readers)
    assert src.reader_bytes() < sum(held)
    sets = [rng.choice(n, 40, replace=False) for _ in range(6)]
    before, passes = CountingRows.rows, src.passes
    got = A.retrain(sets)
    close(got.effect, ref.retrain(sets).effect, "retrain")
    assert CountingRows.rows - before <= n * (src.passes - passes + 1), (
        CountingRows.rows - before, src.passes - passes)


# ----------------------------------------------------------------------------- bad sources


def test_shards_of_different_widths():
    X = np.zeros((10, 4))
    with pytest.raises(ValueError, match=r"same number of columns.*\[4, 3\]"):
        rn.Attribution([X[:6], X[6:, :3]], np.zeros(10), np.zeros(4), l2=1.0)
    with pytest.raises(ValueError, match=r"\[4, 4, 5\]"):
        sources.open_source([X[:3], X[3:6], np.zeros((4, 5))])
    with pytest.raises(ValueError, match=r"same number of columns.*\[4, 3\]"):
        rn.fit([X[:6], X[6:, :3]], np.zeros(10), l2=1.0)


def test_bad_paths(tmp_path):
    y, theta = np.zeros(10), np.zeros(4)
    X = np.random.default_rng(0).standard_normal((10, 4))
    np.savez(tmp_path / "X.npz", X=X)
    with pytest.raises(ValueError, match=r"X\.npz.* is an \.npz \(or other zip\) archive"):
        rn.Attribution(tmp_path / "X.npz", y, theta, l2=1.0)
    with pytest.raises(ValueError, match=r"X\.npz"):
        rn.fit(str(tmp_path / "X.npz"), y, l2=1.0)
    with pytest.raises(ValueError, match="is a folder"):
        rn.Attribution(tmp_path, y, theta, l2=1.0)
    with pytest.raises(ValueError, match="is a folder"):
        rn.Attribution(str(tmp_path), y, theta, l2=1.0)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        rn.Attribution(tmp_path / "missing.npy", y, theta, l2=1.0)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        rn.fit(str(tmp_path / "missing.npy"), y, l2=1.0)
    np.save(tmp_path / "X.npy", X[:5])
    with pytest.raises(FileNotFoundError, match="gone.npy"):
        rn.Attribution([tmp_path / "X.npy", tmp_path / "gone.npy"], y, theta, l2=1.0)
    (tmp_path / "notes.txt").write_text("not an array\n")
    with pytest.raises(ValueError, match=r"notes\.txt.* is not a \.npy file"):
        rn.Attribution(tmp_path / "notes.txt", y, theta, l2=1.0)
    np.save(tmp_path / "flat.npy", X[:, 0])
    with pytest.raises(ValueError, match="2-D"):
        rn.Attribution(tmp_path / "flat.npy", y, theta, l2=1.0)
    # a source of the wrong length is caught against y like an array
    with pytest.raises(ValueError, match="y must have 5 entries"):
        rn.Attribution(tmp_path / "X.npy", y, theta, l2=1.0)


# ----------------------------------------------------------------------------- failed reads


def _flaky_problem(n=11000, d=200):
    """n x p larger than one 16 MiB block of out= rows (10485 rows at p = 200)."""
    rng = np.random.default_rng(FIXED_SEED + 3)
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(np.float64)
    return X, y, np.zeros(d)


def _rows_named(message):
    m = re.search(r"rows (\d+):(\d+)", message)
    assert m, f"the message names no rows: {message!r}"
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("bad", [0, 1700, 10990])
def test_read_failure_in_a_pass(bad):
    X, y, theta = _flaky_problem()
    with pytest.raises(rn.SourceReadError) as info:
        rn.Attribution(Flaky(X, bad=bad), y, theta, l2=1.0)
    assert isinstance(info.value, OSError)
    msg = str(info.value)
    assert "disk gone" in msg and "OSError" in msg and "Flaky" in msg
    # the rows the kernel asked for when the read failed: they overlap the reader's chunk
    # that holds row `bad` (SMALL_READ // (d * 8) = 62 rows)
    begin, end = _rows_named(msg)
    chunk = SMALL_READ // (X.shape[1] * 8)
    assert begin - chunk <= bad < end + chunk, msg
    # the same for fit and for the passes of a built object
    with pytest.raises(rn.SourceReadError, match="disk gone"):
        rn.fit(Flaky(X, bad=bad), y, l2=1.0)
    F = Flaky(X)
    A = rn.Attribution(F, y, theta, l2=1.0)
    F.bad = bad
    with pytest.raises(rn.SourceReadError) as info:
        A.scores(np.ones(len(theta)))
    begin, end = _rows_named(str(info.value))
    assert begin - chunk <= bad < end + chunk, str(info.value)


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_read_failure_leaves_no_partial_output(suffix, tmp_path):
    if suffix == ".zarr":
        pytest.importorskip("zarr")
    X, y, theta = _flaky_problem()
    F = Flaky(X, watch=tmp_path)
    A = rn.Attribution(F, y, theta, l2=1.0)
    target = tmp_path / f"rif{suffix}"
    F.bad = 10600  # in the second block of rows written
    with pytest.raises(rn.SourceReadError, match="disk gone") as info:
        A.rescaled_influence(out=target)
    begin, end = _rows_named(str(info.value))
    assert 0 < begin <= 10600 < end  # the first block was written before the failure
    # the blocks were going to a hidden file beside the target ...
    assert F.seen is not None and any(s.startswith(f".rif{suffix}.partial-") for s in F.seen)
    # ... which is gone, and no target appeared
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)

    # a complete earlier output is left as it was
    F.bad = None
    first = np.asarray(A.rescaled_influence(np.arange(5), out=target)[:])
    F.bad = 10600
    with pytest.raises(rn.SourceReadError):
        A.rescaled_influence(out=target)
    assert sorted(os.listdir(tmp_path)) == [f"rif{suffix}"]
    again = (np.load(target) if suffix == ".npy"
             else np.asarray(pytest.importorskip("zarr").open_array(str(target), mode="r")[:]))
    np.testing.assert_array_equal(again, first)


def test_keyboard_interrupt_in_a_reader_stays_keyboard_interrupt():
    X, y, theta = _flaky_problem(n=3000, d=50)

    class Interrupting(RowSliceable):
        armed = True

        def __getitem__(self, key):
            if self.armed and key.indices(self.shape[0])[1] > 2000:
                raise KeyboardInterrupt
            return super().__getitem__(key)

    S = Interrupting(X)
    with pytest.raises(KeyboardInterrupt):
        rn.Attribution(S, y, theta, l2=1.0)
    S.armed = False  # the package is usable afterwards, and right
    close(rn.Attribution(S, y, theta, l2=1.0).leverage,
          rn.Attribution(X, y, theta, l2=1.0).leverage, "leverage after Ctrl-C")


def test_read_failure_of_gathered_rows_names_the_rows():
    X, y, theta = _flaky_problem(n=3000, d=50)
    F = Flaky(X)
    A = rn.Attribution(F, y, theta, l2=1.0)
    F.bad = 2500
    with pytest.raises(rn.SourceReadError, match="disk gone") as info:
        A.rescaled_influence([3, 2500])
    assert re.search(r"rows [\d, ]*2500", str(info.value)), str(info.value)
    assert isinstance(info.value.__cause__, OSError)  # the reader's own error, kept


def test_read_failure_of_closed_hdf5_names_the_rows(tmp_path):
    h5py = pytest.importorskip("h5py")
    X, y, theta = _flaky_problem(n=3000, d=50)
    with h5py.File(tmp_path / "X.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(100, 50))
    f = h5py.File(tmp_path / "X.h5", "r")
    A = rn.Attribution(f["X"], y, theta, l2=1.0)
    f.close()
    with pytest.raises(rn.SourceReadError) as info:
        A.scores(np.ones(50))
    _rows_named(str(info.value))


# ----------------------------------------------------------------------------- out=


@pytest.fixture(scope="module")
def small_source_problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    rng = np.random.default_rng(FIXED_SEED + 4)
    n, d = 2500, 40
    X = rng.standard_normal((n, d)) / np.sqrt(d) + 0.2
    y = (rng.random(n) < 0.4).astype(np.float64)
    kw = dict(l2=1.0, fit_intercept=True)
    theta = rn.fit(X, y, **kw).theta
    np.save(folder / "X.npy", X)
    return folder / "X.npy", X, y, theta, kw


@pytest.mark.parametrize("method", ["influence", "rescaled_influence"])
def test_out_npy_and_zarr(method, small_source_problem, tmp_path):
    zarr = pytest.importorskip("zarr")
    path, X, y, theta, kw = small_source_problem
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(path, y, theta, **kw)
    full = getattr(A, method)()
    idx = np.array([2499, 3, 0, 1000])

    written = getattr(B, method)(out=tmp_path / "rows.npy")
    assert isinstance(written, np.ndarray) and not written.flags.writeable
    close(written, full, "out .npy (returned)")
    close(np.load(tmp_path / "rows.npy"), full, "out .npy (read back)")
    assert np.load(tmp_path / "rows.npy").dtype == np.float64
    # over an existing .npy, of another shape
    getattr(B, method)(idx, out=str(tmp_path / "rows.npy"))
    close(np.load(tmp_path / "rows.npy"), full[idx], "out .npy (rewritten)")

    written = getattr(B, method)(out=tmp_path / "rows.zarr")
    close(np.asarray(written[:]), full, "out .zarr (returned)")
    with pytest.raises(ValueError, match="read-only"):
        written[0, 0] = 1.0  # opened read-only
    close(zarr.open_array(str(tmp_path / "rows.zarr"), mode="r")[:], full, "out .zarr")
    # over an existing .zarr: replaced, not merged
    getattr(B, method)(idx, out=tmp_path / "rows.zarr")
    back = zarr.open_array(str(tmp_path / "rows.zarr"), mode="r")
    assert back.shape == (len(idx), A.n_params)
    close(back[:], full[idx], "out .zarr (replaced)")
    # no hidden partial or set-aside folders remain
    assert sorted(os.listdir(tmp_path)) == ["rows.npy", "rows.zarr"]
    # the functional form takes out= too
    rn_fn = getattr(rn, method)
    rn_fn(path, y, theta, out=tmp_path / "fn.npy", **kw)
    close(np.load(tmp_path / "fn.npy"), full, "functional out=")


def test_out_bad_targets(small_source_problem, tmp_path):
    path, X, y, theta, kw = small_source_problem
    B = rn.Attribution(path, y, theta, **kw)
    with pytest.raises(ValueError, match=r"\.npy or \.zarr.*rows\.csv"):
        B.influence([0, 1], out=tmp_path / "rows.csv")
    with pytest.raises(ValueError, match=r"\.npy or \.zarr"):
        B.rescaled_influence(out=str(tmp_path / "rows"))
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        B.rescaled_influence(out=tmp_path / "no_such_folder" / "rows.npy")
    with pytest.raises(TypeError, match="out must be a path"):
        B.influence([0], out=3)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- top


def test_top_refuses_a_k_that_is_not_an_integer(small_source_problem):
    path, X, y, theta, kw = small_source_problem
    A = rn.Attribution(X, y, theta, **kw)
    v = np.ones(A.n_params)
    for k in (2.5, 3.0, "3", True):
        with pytest.raises(TypeError, match="k must be an integer"):
            A.top(v, k)
    S = A.scores(v)
    np.testing.assert_array_equal(A.top(v, np.int64(3)).increase,
                                  np.argsort(-S, kind="stable")[:3])


@pytest.mark.parametrize("method", ["rif", "if"])
def test_top_matches_argsort(method, small_source_problem):
    path, X, y, theta, kw = small_source_problem
    n = X.shape[0]
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(path, y, theta, **kw)
    rng = np.random.default_rng(FIXED_SEED + 5)
    v1 = rng.standard_normal(A.n_params)
    V = rng.standard_normal((A.n_params, 3))
    for direction in (v1, V):
        S = A.scores(direction, method)
        S2 = S.reshape(n, -1)
        for k in (1, 7, n, n + 50):
            t = B.top(direction, k, method)
            kk = min(k, n)
            shape = (kk,) if direction.ndim == 1 else (kk, S2.shape[1])
            for arr in (t.increase, t.increase_scores, t.decrease, t.decrease_scores):
                assert arr.shape == shape
            inc = t.increase.reshape(kk, -1)
            dec = t.decrease.reshape(kk, -1)
            for j in range(S2.shape[1]):
                np.testing.assert_array_equal(inc[:, j], np.argsort(-S2[:, j], kind="stable")[:kk])
                np.testing.assert_array_equal(dec[:, j], np.argsort(S2[:, j], kind="stable")[:kk])
                close(t.increase_scores.reshape(kk, -1)[:, j], S2[inc[:, j], j], "top scores")
                close(t.decrease_scores.reshape(kk, -1)[:, j], S2[dec[:, j], j], "top scores")
            if k >= n:  # clamped: every sample once
                assert sorted(inc[:, 0].tolist()) == list(range(n))
    with pytest.raises(ValueError, match="k must be >= 1"):
        B.top(v1, 0)


# ----------------------------------------------------------------------------- passes


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_passes_are_counted(fit_intercept, tmp_path):
    rng = np.random.default_rng(FIXED_SEED + 6)
    n, d = 3000, 300
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(np.float64)
    np.save(tmp_path / "X.npy", X)
    kw = dict(l2=1.0, fit_intercept=fit_intercept)

    S = sources.open_source(tmp_path / "X.npy")
    assert S.passes == 0
    res = rn.fit(S, y, **kw)
    assert res.converged and res.passes == S.passes
    # one pass per Newton iteration (z, loss, gradient and Hessian together; backtracking
    # does not read X) and one at the end; the intercept's centre reads one block more
    assert res.n_iter <= res.passes <= res.n_iter + 1.5, (res.passes, res.n_iter)
    assert rn.fit(X, y, **kw).passes is None

    S = sources.open_source(tmp_path / "X.npy")
    A = rn.Attribution(S, y, res.theta, **kw)
    built = S.passes
    # one pass for H (with z, r, a), one for the leverages; the intercept's centre reads the
    # first block of rows once more (873 of 3000)
    if fit_intercept:
        assert 2.0 < built <= 2.5, built
    else:
        assert built == 2.0, built
    before = S.passes
    A.scores(np.ones(A.n_params))
    assert S.passes - before == 1.0
    before = S.passes
    A.top(np.ones((A.n_params, 2)), 5)
    assert S.passes - before == 1.0
    before = S.passes
    A.group_effect([np.arange(3), np.arange(100, 300)], "ns")
    A.rescaled_influence([5, 9])
    assert S.passes - before == 0.0  # gathers of the sets' rows only
    before = S.passes
    R = A.retrain(np.arange(3))
    assert R.converged
    # one pass per iteration (plus at most one to check the start)
    assert 1 <= S.passes - before <= R.n_iter + 1, (S.passes - before, R.n_iter)


# ----------------------------------------------------------------------------- progress


def test_progress_bar(small_source_problem, capsys):
    path, X, y, theta, kw = small_source_problem
    A = rn.Attribution(path, y, theta, progress=True, **kw)
    err = capsys.readouterr().err
    assert "reading X, pass 1" in err and "reading X, pass 2" in err, err
    A.scores(np.ones(A.n_params))
    assert "reading X, pass 1" in capsys.readouterr().err
    res = rn.fit(path, y, progress=True, **kw)
    err = capsys.readouterr().err
    assert "reading X, pass 1" in err and f"pass {int(res.passes)}" in err, (err, res.passes)

    A = rn.Attribution(path, y, theta, progress=False, **kw)
    A.scores(np.ones(A.n_params))
    A.rescaled_influence([1, 2])
    rn.fit(path, y, progress=False, **kw)
    # None: only when stderr is a terminal (captured here: not one)
    rn.Attribution(path, y, theta, **kw).scores(np.ones(A.n_params))
    captured = capsys.readouterr()
    assert captured.err == "" and "reading" not in captured.out


# ----------------------------------------------------------------------------- backend


def test_cuda_backend_with_a_source(small_source_problem, monkeypatch):
    path, X, y, theta, kw = small_source_problem
    ref = rn.Attribution(X, y, theta, backend="cpu", **kw).leverage
    if not rn.cuda_available():
        # no CUDA here: asking for it fails before X is looked at; "auto" quietly uses the CPU
        with pytest.raises(RuntimeError, match="no CUDA"):
            rn.Attribution(path, y, theta, backend="cuda", **kw)
        A = rn.Attribution(path, y, theta, backend="auto", **kw)
        assert A.backend == "cpu"
        close(A.leverage, ref, "auto backend")
        # as if CUDA were there: a source is refused with advice, "auto" still reads it on CPU
        monkeypatch.setattr(_api._core, "cuda_available", lambda: True)
    with pytest.raises(ValueError, match=r"read from a source.*backend='cpu'"):
        rn.Attribution(path, y, theta, backend="cuda", **kw)
    A = rn.Attribution(path, y, theta, backend="auto", **kw)
    assert A.backend == "cpu"
    close(A.leverage, ref, "auto backend with CUDA available")


# ----------------------------------------------------------------------------- Ctrl-C


_CTRL_C_NPY = """
        n, d = 400000, 512
        path = os.path.join(folder, "X.npy")
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
        for b in range(0, n, 50000):
            X[b:b + 50000] = rng.standard_normal((min(50000, n - b), d), dtype=np.float32)
        X.flush()
        del X
        y = (np.arange(n) % 2).astype(float)

        def call():
            rn.Attribution(path, y, np.zeros(d), l2=1.0)

        def after():
            small = np.load(path, mmap_mode="r")[:300, :10]
            B = rn.Attribution(small, y[:300], np.zeros(10), l2=1.0)
            assert np.isfinite(B.leverage).all()
    """


_CTRL_C_CHILD = {
    "npy": _CTRL_C_NPY,
    "npy-direct": """
        rn.sources.DIRECT_READ_BYTES = 0  # read past the page cache by the native reader
    """ + _CTRL_C_NPY,
    "zarr": """
        import zarr
        n, d = 300000, 512
        z = zarr.create_array(os.path.join(folder, "X.zarr"), shape=(n, d), chunks=(8192, d),
                              dtype="f4", compressors=None)
        for b in range(0, n, 65536):
            z[b:b + 65536] = rng.standard_normal((min(65536, n - b), d), dtype=np.float32)
        y = (np.arange(n) % 2).astype(float)

        def call():
            rn.Attribution(z, y, np.zeros(d), l2=1.0)

        def after():
            B = rn.Attribution(z[:300, :10], y[:300], np.zeros(10), l2=1.0)
            assert np.isfinite(B.leverage).all()
    """,
}

_CTRL_C_PRELUDE = """
import os, sys, time, warnings
import numpy as np
import rif_native as rn
warnings.simplefilter("ignore")
folder = sys.argv[1]
rng = np.random.default_rng(0)
"""

_CTRL_C_MAIN = """
print("start", flush=True)
t0 = time.perf_counter()
try:
    call()
    print("finished", time.perf_counter() - t0, flush=True)
except KeyboardInterrupt:
    print("interrupted", time.perf_counter() - t0, flush=True)
after()
print("usable", flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("case", sorted(_CTRL_C_CHILD))
def test_ctrl_c_while_reading_a_source(case, tmp_path):
    """SIGINT shortly after the call starts (the whole call takes several seconds on 2 cores):
    KeyboardInterrupt from inside the call within about a second, the process usable after."""
    code = (textwrap.dedent(_CTRL_C_PRELUDE) + textwrap.dedent(_CTRL_C_CHILD[case])
            + textwrap.dedent(_CTRL_C_MAIN))
    folder = tmp_path / "big"
    folder.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        with tempfile.TemporaryFile("w+") as errfile:
            proc = subprocess.Popen([sys.executable, "-c", code, str(folder)],
                                    stdout=subprocess.PIPE, stderr=errfile, text=True, env=env)
            killer = threading.Timer(300, proc.kill)  # a hang fails the test
            killer.start()
            try:
                line = proc.stdout.readline()
                while line and not line.startswith("start"):
                    line = proc.stdout.readline()
                errfile.seek(0)
                assert line.startswith("start"), errfile.read()[-2000:]
                time.sleep(0.4)  # well inside the call
                sent = time.perf_counter()
                proc.send_signal(signal.SIGINT)
                reply = proc.stdout.readline()
                latency = time.perf_counter() - sent
                out = proc.stdout.read()
                proc.wait()
            finally:
                killer.cancel()
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()
            errfile.seek(0)
            err = errfile.read()[-2000:]
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # hundreds of MB: not left for pytest to keep
    assert reply.startswith("interrupted"), f"{reply!r} {err}"
    assert latency < 2.0, f"KeyboardInterrupt came {latency:.2f} s after SIGINT"
    assert "usable" in out and proc.returncode == 0, f"{out!r} {err}"


def test_zarr_with_a_chunk_never_written_is_read_by_the_reader(tmp_path):
    """A chunk Zarr never wrote (all fill value) has no file to map: the reader reads X, and
    the fill value comes back."""
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(FIXED_SEED + 9)
    X = rng.standard_normal((500, 12)).astype(np.float32)
    X[100:200] = 0.0  # the second chunk: left unwritten below
    y = (rng.random(500) < 0.5).astype(float)
    z = zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, chunks=(100, 12),
                          dtype="f4", compressors=None, fill_value=0.0)
    z[:100] = X[:100]
    z[200:] = X[200:]
    S = sources.open_source(zarr.open_array(str(tmp_path / "X.zarr"), mode="r"))
    assert S.shards is None  # not in place
    theta = rn.fit(X, y, l2=1.0).theta
    close(rn.Attribution(S, y, theta, l2=1.0).leverage,
          rn.Attribution(X, y, theta, l2=1.0).leverage, "leverage")


@pytest.mark.parametrize("terminal", [True, False])
def test_a_pass_bar_ends_its_line_before_an_error(monkeypatch, terminal):
    """A pass over a source that fails midway: its bar is closed by the time the error
    arrives, cleared on a terminal and with its line ended in a log, so that the error message
    starts a line of its own."""
    X, y, theta = _flaky_problem()
    stream = TextStream(terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    with pytest.raises(rn.SourceReadError):
        rn.Attribution(Flaky(X, bad=6000), y, theta, l2=1.0, progress=True)
    text = stream.getvalue()
    assert "reading X, pass 1" in text and not _progress.bar_open()
    if terminal:
        assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == "", repr(text)
    else:
        assert text.endswith("\n") and text.count("\n") == 1, repr(text)


@pytest.mark.parametrize("kind", ["npy-str", "npy-shards", "zarr", "zarr-zstd-v3",
                                  "h5py-chunked"])
def test_a_source_is_freed_when_its_last_reference_goes(kind, tmp_path):
    """No reference cycle holds a Source (its readers, buffers, maps and open files) until
    the garbage collector runs: it goes with its last reference, after passes and gathers."""
    import gc
    import weakref

    P = make_problem(31, np.float64, True, False, n=600, d=20)
    X, y = P["X"], P["y"]
    with contextlib.ExitStack() as stack:
        src = sources.open_source(KINDS[kind](X, tmp_path, stack)).subset(5, 590)
        gc.collect()
        gc.disable()
        try:
            A = rn.Attribution(src, y[5:590], np.zeros(21), l2=L2, fit_intercept=True)
            A.scores(np.ones(21))
            src.take(np.array([0, 7, 300]))
            gone = weakref.ref(src)
            del A, src
            assert gone() is None
        finally:
            gc.enable()


@pytest.mark.parametrize("kind", ["npy", "shards", "zarr"])
def test_a_mapped_file_cut_short_is_refused_not_a_crash(tmp_path, kind):
    """A memory-mapped file truncated after X was opened: reading its lost pages would end the
    process with SIGBUS (it did, at the next call). Each call that reads X now checks the
    mapped files' sizes first and raises SourceReadError naming the file; a file replaced at
    its path (the map keeps the old one) is still read, and gives the old rows' answers."""
    code = textwrap.dedent("""
        import os, shutil, sys, numpy as np, rif_native as rn
        kind, folder = sys.argv[1], sys.argv[2]
        rng = np.random.default_rng(0)
        X = rng.standard_normal((3000, 8)); y = (rng.random(3000) < 0.5).astype(float)
        if kind == "zarr":
            import zarr
            z = zarr.create_array(folder + "/x.zarr", shape=X.shape, dtype="f8",
                                  chunks=(1000, 8), compressors=None)
            z[:] = X
            Xs, victim = zarr.open_array(folder + "/x.zarr", mode="r"), folder + "/x.zarr/c/1/0"
        else:
            np.save(folder + "/a.npy", X[:1000]); np.save(folder + "/b.npy", X[1000:])
            np.save(folder + "/x.npy", X)
            Xs = folder + "/x.npy" if kind == "npy" else [folder + "/a.npy", folder + "/b.npy"]
            victim = folder + ("/x.npy" if kind == "npy" else "/b.npy")
        A = rn.Attribution(Xs, y, np.zeros(8), l2=1.0)
        ref = rn.Attribution(X, y, np.zeros(8), l2=1.0).scores(np.ones(8))
        shutil.copyfile(victim, folder + "/keep"); shutil.copyfile(victim, folder + "/copy")
        os.replace(folder + "/copy", victim)
        os.truncate(victim, 0)  # the file now at the path, not the one mapped: still read
        assert np.allclose(A.scores(np.ones(8)), ref, rtol=1e-10, atol=0)
        shutil.copyfile(folder + "/keep", victim)
        src = rn.sources.open_source(Xs)
        A = rn.Attribution(src, y, np.zeros(8), l2=1.0)
        yk = np.arange(3000) % 3
        M = rn.MultinomialAttribution(src, yk, np.zeros((3, 8)), l2=1.0)  # (before the cut)
        os.truncate(victim, os.path.getsize(victim) // 2)
        for call in (lambda: A.scores(np.ones(8)), lambda: A.group_effect([[2999]], "ns"),
                     lambda: rn.fit(src, y, l2=1.0), lambda: M.influence([2999]),
                     lambda: M.group_effect([[2998, 2999]], "ns")):
            try:
                call()
            except rn.SourceReadError as e:
                print("refused:", e)
        """)
    for_kind = subprocess.run([sys.executable, "-c", code, kind, str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    assert for_kind.returncode == 0, (for_kind.returncode, for_kind.stderr[-2000:])
    lines = for_kind.stdout.splitlines()
    assert len(lines) == 5 and all("was cut short" in line for line in lines), lines
    victim = {"npy": "x.npy", "shards": "b.npy", "zarr": os.path.join("c", "1", "0")}[kind]
    assert all(victim in line for line in lines), lines


def test_a_group_given_as_x_names_its_arrays(tmp_path):
    """zarr.open() of a store holding a group, an h5py File or Group: X is refused in one line
    naming what it is and the 2-D arrays to pick from (it was "AttributeError: 'Group' object
    has no attribute 'shape'")."""
    zarr = pytest.importorskip("zarr")
    h5py = pytest.importorskip("h5py")
    X = np.random.default_rng(FIXED_SEED).standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(float)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("sub/features", shape=X.shape, dtype="f8")[:] = X
    group.create_array("labels", shape=(40,), dtype="f8")
    with h5py.File(tmp_path / "g.h5", "w") as f:
        f.create_dataset("sub/features", data=X)
        f.create_dataset("labels", data=y)
    with h5py.File(tmp_path / "g.h5", "r") as f:
        for X_given, kind in ((zarr.open(str(tmp_path / "g.zarr"), mode="r"), "a Zarr group"),
                              (f, "an HDF5 group"), (f["sub"], "an HDF5 group")):
            for call in (lambda: rn.fit(X_given, y, l2=1.0),
                         lambda: rn.Attribution(X_given, y, np.zeros(3), l2=1.0),
                         lambda: rn.fit([X_given, X_given], np.r_[y, y], l2=1.0)):
                with pytest.raises(TypeError, match=f"X is {kind}, not an array") as info:
                    call()
                assert "features" in str(info.value) and "labels" not in str(info.value)


def test_one_stored_array_is_not_called_shard_0_in_errors(tmp_path):
    """A 1-D or complex .npy given alone is X, and its errors say so as for X in memory (they
    said 'X: shard 0 must be 2-D' and 'X (shard 0) must hold real numbers'); in a list of
    several, the shard is still named."""
    y = np.zeros(30)
    y[::2] = 1
    np.save(tmp_path / "one.npy", np.ones(30))
    np.save(tmp_path / "cplx.npy", np.ones((30, 2), complex))
    np.save(tmp_path / "ok.npy", np.ones((30, 2)))
    with pytest.raises(ValueError, match=r"^X must be 2-D \(n samples x d features\), got "
                                         r"shape \(30,\)$"):
        rn.fit(str(tmp_path / "one.npy"), y, l2=1.0)
    with pytest.raises(TypeError, match=r"^X must hold real numbers .* complex128$"):
        rn.fit(str(tmp_path / "cplx.npy"), y, l2=1.0)
    with pytest.raises(ValueError, match=r"^X: shard 1 must be 2-D"):
        rn.fit([str(tmp_path / "ok.npy"), str(tmp_path / "one.npy")], np.r_[y, y], l2=1.0)


def test_an_hdf5_dataset_whose_file_was_closed_is_named_so(tmp_path):
    """X from an h5py dataset used after its 'with h5py.File(...)' block closed the file: the
    read that fails says the file was closed (it said 'of X (Dataset) failed: OSError: Can't
    synchronously read data (identifier is not of specified type)')."""
    h5py = pytest.importorskip("h5py")
    X = np.random.default_rng(FIXED_SEED).standard_normal((500, 4))
    y = (X[:, 0] > 0).astype(float)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=X, chunks=(50, 4))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        A = rn.Attribution(f["x"], y, np.zeros(4), l2=1.0)
    with pytest.raises(sources.SourceReadError, match=r"rows 5, 300 of X \(HDF5 dataset /x in "
                                                       r".*x\.h5, whose file was closed"):
        A.group_effect([[5, 300]], "ns")
