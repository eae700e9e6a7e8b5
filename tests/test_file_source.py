"""Memory-mapped files read past the page cache (``sources.DIRECT_READ_BYTES``: the native
reader with O_DIRECT, chunks read ahead on its own thread): every answer equal to the in-memory
path to 1e-10 of its scale (that path is checked against NumPy, statsmodels and refits
elsewhere), with chunks made small here so that a pass crosses many of them, evicts and reloads
its buffers and meets row offsets that are not aligned; reads that fail name the rows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn
from rif_native import sources
from conftest import close_to_scale

TOL = 1e-10


def close(a, b, tol=TOL):
    close_to_scale(a, b, tol)


@pytest.fixture
def direct(monkeypatch):
    """Every memory-mapped source read past the page cache, in chunks of about 12 kB."""
    monkeypatch.setattr(sources, "DIRECT_READ_BYTES", 0)
    monkeypatch.setattr(sources, "DIRECT_CHUNK_BYTES", 3 * 4096 + 100)


def problem(seed, n, d, dtype):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) / np.sqrt(d) + rng.uniform(-0.5, 0.5, d)).astype(dtype)
    z = X.astype(np.float64) @ rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(z - z.mean())))).astype(np.float64)
    return X, y, rng.uniform(0.25, 2.0, n)


def write(kind, X, folder: Path):
    if kind == "npy":
        np.save(folder / "X.npy", X)
        return str(folder / "X.npy")
    if kind == "shards":  # unequal, one of a single row
        cuts = [0, 1000, 1001, 2222, X.shape[0]]
        paths = []
        for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
            np.save(folder / f"part{j}.npy", X[a:b])
            paths.append(str(folder / f"part{j}.npy"))
        return paths
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(folder / "X.zarr"), shape=X.shape, chunks=(97, X.shape[1]),
                          dtype=X.dtype, compressors=None)
    z[:] = X
    return zarr.open_array(str(folder / "X.zarr"), mode="r")


@pytest.mark.parametrize("kind", ["npy", "shards", "zarr-uncompressed"])
@pytest.mark.parametrize("dtype,fit_intercept", [(np.float32, True), (np.float64, False)])
def test_direct_reading_matches_in_memory(direct, tmp_path, kind, dtype, fit_intercept):
    X, y, w = problem(1, 3001, 37, dtype)
    src = sources.open_source(write(kind, X, tmp_path))
    assert src.files is not None and "past the page cache" in repr(src)
    assert sum(f[2] for f in src.files) == X.shape[0]
    kw = dict(l2=0.7, fit_intercept=fit_intercept, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-12, solver="newton", **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    for threads in (1, 2):
        B = rn.Attribution(src, y, theta, num_threads=threads, **kw)
        close(B.leverage, A.leverage)
        V = np.random.default_rng(2).standard_normal((A.n_params, 2))
        close(B.scores(V), A.scores(V))
    idx = [3000, 0, 1000, 1001, 17]  # gathers across shards and chunks
    close(B.rescaled_influence(idx), A.rescaled_influence(idx))
    sets = [np.arange(5), np.arange(990, 1010)]
    for method in ("if", "rif", "ns"):
        close(B.group_effect(sets, method), A.group_effect(sets, method))
    got, ref = B.retrain(sets, tol=1e-12), A.retrain(sets, tol=1e-12)
    close(got.theta, ref.theta, 1e-9)
    fitted = rn.fit(src, y, tol=1e-12, **kw)
    close(fitted.theta, theta, 1e-9)
    written = B.rescaled_influence(out=tmp_path / "rif.npy")
    close(np.load(tmp_path / "rif.npy"), A.rescaled_influence())
    close(written, A.rescaled_influence())


def test_which_arrays_are_read_past_the_page_cache(tmp_path, monkeypatch):
    X, y, _ = problem(3, 500, 8, np.float64)
    np.save(tmp_path / "X.npy", X)
    path = str(tmp_path / "X.npy")
    size = os.path.getsize(path)
    monkeypatch.setattr(sources, "DIRECT_READ_BYTES", X.nbytes - 1)
    src = sources.open_source(path)
    assert [f[:3] for f in src.files] == [(path, size - X.nbytes, 500)]
    sub = src.subset(100, 300)  # a part keeps its whole's reading, at its own offset
    assert [f[:3] for f in sub.files] == [(path, size - X.nbytes + 100 * 8 * 8, 200)]
    close(rn.Attribution(sub, y[100:300], np.zeros(8), l2=1.0).leverage,
          rn.Attribution(X[100:300], y[100:300], np.zeros(8), l2=1.0).leverage)
    monkeypatch.setattr(sources, "DIRECT_READ_BYTES", X.nbytes)  # not larger than the limit
    assert sources.open_source(path).files is None
    monkeypatch.setattr(sources, "DIRECT_READ_BYTES", 0)
    # mapped for writing, copy-on-write, in memory, or strided: read as they are
    for a in (np.load(path, mmap_mode="r+"), np.load(path, mmap_mode="c"), X.copy(),
              np.load(path, mmap_mode="r")[:, :4]):
        assert sources.open_source(a).files is None
    mixed = sources.open_source([np.load(path, mmap_mode="r"), X.copy()])
    assert mixed.files is None  # one shard in memory: all read in place


def test_files_that_changed_are_refused(direct, tmp_path):
    """The reader opens the files by name when a pass starts: one replaced since X was opened
    (the memory map keeps the old one), cut short, or gone is refused with a SourceReadError
    naming it, never read."""
    X, y, _ = problem(4, 3000, 16, np.float32)
    path = write("npy", X, tmp_path)
    src = sources.open_source(path)
    np.save(tmp_path / "other.npy", X[::-1])
    os.replace(tmp_path / "other.npy", path)  # same size, other rows
    with pytest.raises(sources.SourceReadError, match=r"X\.npy is no longer the one X was"):
        rn.Attribution(src, y, np.zeros(16), l2=1.0)
    src = sources.open_source(path)
    os.truncate(path, os.path.getsize(path) - 1000 * 16 * 4)  # the last 1000 rows gone
    with pytest.raises(sources.SourceReadError, match=r"X\.npy failed: the file ends at byte"):
        rn.Attribution(src, y, np.zeros(16), l2=1.0)
    os.remove(path)
    with pytest.raises(sources.SourceReadError, match=r"opening .*X\.npy failed"):
        rn.Attribution(src, y, np.zeros(16), l2=1.0)


def test_single_rows_and_many_threads(direct, tmp_path):
    """Gathers of single rows (the Newton steps' downdates) and more threads than the reader
    has buffers: the same answers."""
    X, y, w = problem(5, 2500, 20, np.float64)
    src = sources.open_source(write("npy", X, tmp_path))
    theta = rn.fit(X, y, l2=1.0, solver="newton").theta
    A = rn.Attribution(X, y, theta, l2=1.0)
    B = rn.Attribution(src, y, theta, l2=1.0, num_threads=8)
    close(B.leverage, A.leverage)
    sets = [[2499], [0, 1250, 2498], np.arange(0, 2500, 97)]
    close(B.group_effect(sets, "ns"), A.group_effect(sets, "ns"))
    close(rn.newton_step(src, y, theta, sets[1], l2=1.0),
          rn.newton_step(X, y, theta, sets[1], l2=1.0))
