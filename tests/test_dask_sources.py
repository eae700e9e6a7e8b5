"""The Dask engine with X left in its store (``backend="dask"`` with a .npy path, .npy shards, a
Zarr array or an h5py dataset): each task carries its rows' range and opens them on the worker
where it runs. Every answer against the in-memory path to 1e-10 of its scale (that path is
itself checked against NumPy, statsmodels and refits elsewhere), on a distributed LocalCluster
(2 workers, one thread each) and on Dask's local scheduler."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn
from conftest import close_to_scale

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")

TOL = 1e-10


def close(a, b, tol=TOL):
    close_to_scale(a, b, tol)


N, D = 1500, 12
CHUNK = 97  # the stores' chunk rows (does not divide N)


@pytest.fixture
def small_tasks():
    """Tasks of about 300 float32 (150 float64) rows: every source is cut into several."""
    with dask.config.set({"rif_native.task-bytes": 300 * D * 4}):
        yield


def problem(seed, dtype):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((N, D)) + rng.uniform(-2, 2, D)).astype(dtype)
    z = X.astype(np.float64) @ rng.standard_normal(D) * 0.3
    y = (rng.random(N) < 1 / (1 + np.exp(-(z - z.mean())))).astype(float)
    return X, y, rng.uniform(0.2, 2.0, N)


def store(kind, X, folder: Path):
    """X written as the kind of source a worker opens, and the store's chunk rows (None: any
    row can start a task)."""
    if kind == "npy":
        np.save(folder / "X.npy", X)
        return str(folder / "X.npy"), None
    if kind == "npy-shards":  # unequal shards, one of a single row; str and PathLike mixed
        cuts = [0, 600, 601, 1111, N]
        paths = []
        for j, (a, b) in enumerate(zip(cuts, cuts[1:])):
            np.save(folder / f"part{j}.npy", X[a:b])
            paths.append(folder / f"part{j}.npy" if j % 2 else str(folder / f"part{j}.npy"))
        return paths, None
    if kind in ("zarr-zstd", "zarr-uncompressed"):
        extra = {} if kind == "zarr-zstd" else {"compressors": None}
        z = zarr.create_array(str(folder / f"{kind}.zarr"), shape=X.shape, chunks=(CHUNK, D),
                              dtype=X.dtype, **extra)
        z[:] = X
        return zarr.open_array(str(folder / f"{kind}.zarr"), mode="r"), CHUNK
    assert kind == "h5py"
    with h5py.File(folder / "X.h5", "w") as f:
        f.create_dataset("X", data=X, chunks=(53, D))
    return h5py.File(folder / "X.h5", "r")["X"], 53


KINDS = ["npy", "npy-shards", "zarr-zstd", "zarr-uncompressed", "h5py"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,fit_intercept", [(np.float32, True), (np.float64, False)])
def test_stored_x_matches_in_memory(client, small_tasks, tmp_path, kind, dtype, fit_intercept):
    X, y, w = problem(1, dtype)
    src, chunk = store(kind, X, tmp_path)
    kw = dict(l2=1.5, fit_intercept=fit_intercept, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, solver="newton", **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(src, y, theta, backend="dask", **kw)
    assert type(B).__name__ == "DaskAttribution"
    assert "opened by the workers" in repr(B)
    bounds = B._chunks.bounds
    assert len(bounds) > 3 and bounds[0] == 0 and bounds[-1] == N
    if chunk is not None:  # no task splits a stored chunk
        assert all(b % chunk == 0 for b in bounds[:-1])
    close(B.leverage.compute(), A.leverage)
    close(B.residuals.compute(), A.residuals)
    close(B.hessian(), A.hessian())
    V = np.random.default_rng(2).standard_normal((A.n_params, 2))
    for method in ("if", "rif"):
        close(B.scores(V, method).compute(), A.scores(V, method))
    close(B.rescaled_influence().compute(), A.rescaled_influence())
    idx = [5, 0, N - 1, 600]
    close(B.influence(idx), A.influence(idx))
    sets = [np.arange(4), np.arange(590, 640)]
    for method in ("if", "rif", "ns"):
        close(B.group_effect(sets, method), A.group_effect(sets, method))
    got = rn.fit(src, y, tol=1e-13, backend="dask", **kw)
    assert got.converged
    close(got.theta, theta)


def test_retraining_reads_the_store(client, small_tasks, tmp_path):
    X, y, w = problem(3, np.float32)
    src, _ = store("zarr-uncompressed", X, tmp_path)
    kw = dict(l2=1.0, fit_intercept=True, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, solver="newton", **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    B = rn.Attribution(src, y, theta, backend="dask", **kw)
    sets = [np.arange(3), np.random.default_rng(4).choice(N, 60, replace=False)]
    got, ref = B.retrain(sets, tol=1e-13), A.retrain(sets, tol=1e-13)
    assert got.converged.all()
    close(got.theta, ref.theta, 1e-9)
    close(got.effect, ref.effect, 1e-9)


def test_tasks_carry_ranges_not_rows(client, tmp_path):
    """What travels to a task is a description of its rows, the same few hundred bytes however
    many rows it covers; the default task size is about rif_native.task-bytes of X."""
    X, y, _ = problem(5, np.float64)
    src, _ = store("npy", X, tmp_path)
    theta = np.zeros(D)
    B = rn.Attribution(src, y, theta, l2=1.0, backend="dask")
    assert len(B._chunks.blocks) == 1  # 144 kB of X: one task at the default 128 MiB
    sizes = [len(pickle.dumps(b)) for b in B._chunks.blocks]
    assert max(sizes) < 2048, sizes
    assert X.nbytes > 50 * max(sizes)
    with dask.config.set({"rif_native.task-bytes": 100 * D * 8}):
        B = rn.Attribution(src, y, theta, l2=1.0, backend="dask")
    assert np.all(np.diff(B._chunks.bounds[:-1]) == 100)


def test_local_scheduler_without_cluster(small_tasks, tmp_path):
    """No distributed client: Dask's own threads run the same tasks, opening the store here."""
    X, y, _ = problem(6, np.float32)
    src, _ = store("npy-shards", X, tmp_path)
    theta = rn.fit(X, y, l2=1.0, fit_intercept=True).theta
    A = rn.Attribution(X, y, theta, l2=1.0, fit_intercept=True)
    with dask.config.set(scheduler="threads"):
        B = rn.Attribution(src, y, theta, l2=1.0, fit_intercept=True, backend="dask")
        close(B.leverage.compute(), A.leverage)
        close(B.scores(np.ones(A.n_params)).compute(), A.scores(np.ones(A.n_params)))


def test_a_failed_read_on_a_worker_names_the_rows(client, small_tasks, tmp_path):
    X, y, _ = problem(7, np.float32)
    src, _ = store("zarr-zstd", X, tmp_path)
    B = None
    chunk_file = next(p for p in (tmp_path / "zarr-zstd.zarr").rglob("*")
                      if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs"))
    chunk_file.write_bytes(b"not zstd")  # one chunk that no longer decodes
    with pytest.raises(rn.sources.SourceReadError, match=r"reading rows \d+:\d+ of X"):
        B = rn.Attribution(src, y, np.zeros(D), l2=1.0, backend="dask")
    assert B is None


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_nan_in_stored_x_is_named_by_its_row_in_x(client, small_tasks, tmp_path, fit_intercept):
    """A NaN read by a worker from its task's rows is named as in memory: X's row and column."""
    X, y, _ = problem(9, np.float64)
    X[1234, 5] = np.nan  # in the 9th of 10 tasks (150 rows each), its row 34
    np.save(tmp_path / "X.npy", X)
    message = r"^X contains NaN or inf \(first at row 1234, column 5\)$"
    with pytest.raises(ValueError, match=message):  # in memory, as the reference
        rn.fit(X, y, l2=1.0, fit_intercept=fit_intercept)
    with pytest.raises(ValueError, match=message):
        rn.fit(str(tmp_path / "X.npy"), y, l2=1.0, fit_intercept=fit_intercept, backend="dask")
    with pytest.raises(ValueError, match=message):
        rn.Attribution(str(tmp_path / "X.npy"), y, np.zeros(D + int(fit_intercept)), l2=1.0,
                       fit_intercept=fit_intercept, backend="dask")


def test_what_the_workers_cannot_open(tmp_path):
    X, y, _ = problem(8, np.float64)
    with pytest.raises(TypeError, match="read X themselves"):
        rn.Attribution(X, y, np.zeros(D), l2=1.0, backend="dask")
    with pytest.raises(TypeError, match="read X themselves"):
        rn.fit(X, y, l2=1.0, backend="dask")
    with pytest.raises(FileNotFoundError, match="no file"):
        rn.Attribution(str(tmp_path / "missing.npy"), y, np.zeros(D), l2=1.0, backend="dask")
    with pytest.raises(ValueError, match="empty list"):
        rn.Attribution([], y, np.zeros(D), l2=1.0, backend="dask")
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=X.shape, dtype=X.dtype)
    with pytest.raises(ValueError, match="in this process's memory"):
        rn.Attribution(z, y, np.zeros(D), l2=1.0, backend="dask")
    # without backend="dask" the same path runs in this process
    np.save(tmp_path / "X.npy", X)
    assert type(rn.Attribution(os.fspath(tmp_path / "X.npy"), y, np.zeros(D), l2=1.0)) \
        is rn.Attribution


def test_a_file_changed_since_x_was_opened_is_refused(tmp_path):
    """A worker opens X's files when a task first needs them and again after dropping them from
    its few open sources: a file replaced, resized or rewritten since the client opened X is
    refused there, never mixed with the results of the rows read before."""
    from rif_native import _dask_sources

    X, _, _ = problem(9, np.float64)
    path = tmp_path / "X.npy"
    np.save(path, X)
    stored = _dask_sources.StoredSource(str(path))
    on_worker = pickle.loads(pickle.dumps(stored))  # what a task carries: no opened source
    close(_dask_sources.StoredRows(on_worker, 10, 20).source().take(np.arange(10)), X[10:20])
    _dask_sources._opened.clear()  # evicted
    then = os.stat(path)
    np.save(tmp_path / "new.npy", X[::-1])
    os.replace(tmp_path / "new.npy", path)  # another file, of the same size
    os.utime(path, ns=(then.st_atime_ns, then.st_mtime_ns))  # and modification time
    with pytest.raises(rn.sources.SourceReadError, match="has changed since X was opened"):
        on_worker.open()  # its inode tells it apart on the host where X was opened
    # another host sees a shared file system's files under other device numbers (and on some,
    # other inodes): there only size and modification time are compared
    elsewhere = pickle.loads(pickle.dumps(stored))
    elsewhere.host = "another-host"
    assert elsewhere.open().shape == X.shape
    np.save(path, X[:-1])  # resized
    for worker in (on_worker, elsewhere):
        _dask_sources._opened.clear()
        with pytest.raises(rn.sources.SourceReadError, match="has changed since X was opened"):
            worker.open()
    np.save(path, X)
    stored = _dask_sources.StoredSource(str(path))
    on_worker = pickle.loads(pickle.dumps(stored))
    m = np.lib.format.open_memmap(path, mode="r+")
    m[0] = 0.0  # rewritten in place
    m.flush()
    del m
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with pytest.raises(rn.sources.SourceReadError, match="has changed since X was opened"):
        on_worker.open()
    assert stored.open().shape == X.shape  # the client keeps its own opening


def test_task_tokens_do_not_read_the_store(tmp_path, monkeypatch):
    """Dask hashes a task's rows by their source's token and range, not by pickling the store."""
    from dask.base import tokenize
    from rif_native import _dask_sources

    X, _, _ = problem(10, np.float32)
    src, _ = store("zarr-zstd", X, tmp_path)
    stored = _dask_sources.StoredSource(src)
    rows = _dask_sources.StoredRows(stored, 0, 97)
    with monkeypatch.context() as m:  # hashing a task's rows must not pickle their store
        m.setattr(_dask_sources.StoredSource, "__getstate__", lambda self: 1 / 0)
        assert tokenize(rows) == tokenize(rows)
    assert tokenize(rows) == tokenize(pickle.loads(pickle.dumps(rows)))
    assert tokenize(rows) != tokenize(_dask_sources.StoredRows(stored, 97, 194))
    assert tokenize(rows) != tokenize(_dask_sources.StoredRows(_dask_sources.StoredSource(src),
                                                               0, 97))


def test_a_relative_zarr_folder_is_opened_by_its_absolute_path(client, small_tasks, tmp_path,
                                                               monkeypatch):
    """Workers may run in another directory than the client's: a Zarr folder opened by a
    relative path still reaches them."""
    X, y, _ = problem(11, np.float32)
    store("zarr-uncompressed", X, tmp_path)
    monkeypatch.chdir(tmp_path)
    z = zarr.open_array("zarr-uncompressed.zarr", mode="r")
    assert not z.store.root.is_absolute()
    theta = rn.fit(X, y, l2=1.0).theta
    B = rn.Attribution(z, y, theta, l2=1.0, backend="dask")
    assert B._chunks.stored.parts[0][1].store.root.is_absolute()
    monkeypatch.chdir("/")
    close(B.leverage.compute(), rn.Attribution(X, y, theta, l2=1.0).leverage)


def test_readers_of_a_task_keep_to_the_store_chunks(tmp_path):
    """A task's rows, cut from a compressed store, are read in whole store chunks: no chunk is
    decompressed twice for falling across two reads."""
    from rif_native import sources

    X, _, _ = problem(12, np.float32)
    z, chunk = store("zarr-zstd", X, tmp_path)
    for lo, hi in [(0, N), (2 * chunk, 9 * chunk + 5), (chunk + 3, N)]:
        src = sources.open_source(z).subset(lo, hi)
        for reads in (64, 500):
            old = sources.READ_BYTES
            sources.READ_BYTES = reads * D * 4
            try:
                bounds = sources.Source(src._parts)._readers[0].bounds + lo
            finally:
                sources.READ_BYTES = old
            inner = bounds[1:-1]
            assert bounds[0] == lo and bounds[-1] == hi
            assert np.all(inner % chunk == 0), (lo, hi, reads, bounds)
            assert np.all(np.diff(bounds) <= max(chunk, reads))
        np.testing.assert_array_equal(src.take(np.arange(hi - lo)), X[lo:hi])


def test_more_that_the_workers_cannot_open(tmp_path):
    X, y, _ = problem(13, np.float64)
    zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, dtype=X.dtype)[:] = X
    with pytest.raises(ValueError, match="is a folder.*zarr.open_array"):
        rn.Attribution(str(tmp_path / "X.zarr"), y, np.zeros(D), l2=1.0, backend="dask")
    # a store that would carry the data in every task's description
    big = np.random.default_rng(14).standard_normal((1000, D))  # 94 kiB, incompressible
    z = zarr.create_array(zarr.storage.WrapperStore(zarr.storage.MemoryStore()),
                          shape=big.shape, dtype=big.dtype)
    z[:] = big
    with pytest.raises(ValueError, match="pickles to .* every task would carry it"):
        rn.Attribution(z, np.zeros(len(big)), np.zeros(D), l2=1.0, backend="dask")
    np.save(tmp_path / "empty.npy", X[:0])
    for empty in (str(tmp_path / "empty.npy"),
                  rn.sources.open_source(str(tmp_path / "empty.npy"))):
        with pytest.raises(ValueError, match="at least one row"):
            rn.Attribution(empty, y[:0], np.zeros(D), l2=1.0, backend="dask")
    import dask.array as da

    with pytest.raises(ValueError, match="at least one row"):
        rn.Attribution(da.zeros((0, D)), y[:0], np.zeros(D), l2=1.0)
    with pytest.raises(ValueError, match="2-D"):
        rn.Attribution(da.zeros(N), y, np.zeros(D), l2=1.0)


def test_task_bytes_may_be_written_with_units(tmp_path):
    X, y, _ = problem(14, np.float64)
    src, _ = store("npy", X, tmp_path)
    with dask.config.set({"rif_native.task-bytes": "48 kiB"}):
        B = rn.Attribution(src, y, np.zeros(D), l2=1.0, backend="dask")
    assert np.all(np.diff(B._chunks.bounds[:-1]) == 48 * 1024 // (D * 8))


@pytest.mark.parametrize("kind", ["memory-map", "memory-map-rows", "zarr-zstd-rows",
                                  "zarr-uncompressed-rows", "npy-shards-rows", "h5py-rows",
                                  "zarr-zstd-rows-of-rows", "npy-shards-source"])
def test_memory_maps_and_row_ranges_of_stored_x(client, small_tasks, tmp_path, kind):
    """A read-only memory map travels as its file region, and a Source opened from stored
    shards as the shards and its rows (what `rif attribute` hands the engine for the training
    rows of data on disk): each task opens only its rows, cut at the store's chunks."""
    from rif_native import sources

    X, y, w = problem(15, np.float32)
    lo, hi = (0, N) if kind in ("memory-map", "npy-shards-source") else (203, 1311)
    if kind.startswith("memory-map"):
        np.save(tmp_path / "X.npy", X)
        src, chunk = np.load(tmp_path / "X.npy", mmap_mode="r")[lo:hi], None
    elif kind.endswith("-rows-of-rows"):  # a subset of a subset: rows 100 + 103 on
        shards, chunk = store(kind[:-len("-rows-of-rows")], X, tmp_path)
        src = sources.open_source(shards).subset(100, 1400).subset(103, 1211)
        direct = sources.open_source(shards).subset(lo, hi)
        assert src.origin[1:] == (lo, hi)
        for step in (50, 400):  # in this process too, its reader keeps to the store's chunks
            np.testing.assert_array_equal(src.edges(step), direct.edges(step))
    else:
        shards, chunk = store(kind[:kind.rindex("-")], X, tmp_path)
        src = sources.open_source(shards)
        src = src if kind.endswith("-source") else src.subset(lo, hi)
    kw = dict(l2=1.0, fit_intercept=True, sample_weight=w[lo:hi])
    Xr, yr = X[lo:hi], y[lo:hi]
    theta = rn.fit(Xr, yr, tol=1e-13, solver="newton", **kw).theta
    A = rn.Attribution(Xr, yr, theta, **kw)
    B = rn.Attribution(src, yr, theta, backend="dask", **kw)
    assert B.n == hi - lo
    described = B._chunks.stored.describe()
    subset = "-rows" in kind and not kind.startswith("memory-map")  # a map's rows are its file
    assert (", rows" in described) == subset, described  # region; all of a Source is no subset
    if chunk is not None:
        assert all((lo + b) % chunk == 0 for b in B._chunks.bounds[1:-1])
    assert len(B._chunks.blocks) > 2
    close(B.leverage.compute(), A.leverage)
    V = np.random.default_rng(16).standard_normal(A.n_params)
    close(B.scores(V).compute(), A.scores(V))
    close(B.influence([0, hi - lo - 1, 7]), A.influence([0, hi - lo - 1, 7]))
    close(rn.fit(src, yr, tol=1e-13, backend="dask", **kw).theta, theta)


def test_arrays_the_workers_cannot_map(tmp_path):
    from rif_native import sources

    X, y, _ = problem(17, np.float64)
    np.save(tmp_path / "X.npy", X)
    writable = np.load(tmp_path / "X.npy", mmap_mode="r+")
    with pytest.raises(TypeError, match="read-only memory map"):
        rn.Attribution(writable, y, np.zeros(D), l2=1.0, backend="dask")
    with pytest.raises(TypeError, match="not opened from stored shards"):
        rn.Attribution(sources.Source([X]), y, np.zeros(D), l2=1.0, backend="dask")


def test_a_memory_map_the_workers_cannot_open_is_told_why(tmp_path):
    """A memory map of a file that the workers cannot open as it is gets the reason and what
    to pass instead, not a request for 'a read-only memory map of a file', which it is."""
    X, y, _ = problem(17, np.float64)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "F.npy", np.asfortranarray(X))
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    cases = [(mapped[:, :6], "not C-contiguous"), (mapped[::2], "not C-contiguous"),
             (np.load(tmp_path / "F.npy", mmap_mode="r"), "not C-contiguous"),
             (np.load(tmp_path / "X.npy", mmap_mode="r+"), "writable")]
    for item, why in cases:
        with pytest.raises(TypeError, match=r"memory map of .*[XF]\.npy") as info:
            rn.Attribution(item, y, np.zeros(item.shape[1]), l2=1.0, backend="dask")
        assert why in str(info.value) and "pass the file's path" in str(info.value)


@pytest.mark.parametrize("data", ["npy", "npy-shards", "zarr-zstd", "h5py", "in-memory"])
def test_rif_attribute_on_a_scheduler(client, small_tasks, tmp_path, capsys, data):
    """`rif attribute --scheduler ADDRESS` runs the fit and the attribution on the cluster:
    the training rows of data on disk are opened by the workers, data in memory are sent in
    row chunks; the scores, leverages and fit equal the run in this process."""
    import json

    from rif_native.cli import main

    X, y, _ = problem(18, np.float32)
    if data == "in-memory":
        np.savez(tmp_path / "data.npz", X=X, y=y)
        argv = ["--data", str(tmp_path / "data.npz")]
    else:
        src, _ = store(data, X, tmp_path)
        np.save(tmp_path / "y.npy", y)
        if data in ("zarr-zstd", "h5py"):
            argv = ["--data", str(tmp_path / ("zarr-zstd.zarr" if data == "zarr-zstd" else "X.h5"))]
        else:
            argv = [a for p in ([src] if data == "npy" else src) for a in ("--data", str(p))]
        argv += ["--labels", str(tmp_path / "y.npy")]
    argv = ["attribute", *argv, "--l2", "1.0"]
    got = {}
    for run, extra in (("here", []), ("cluster", ["--scheduler", client.scheduler.address])):
        out = tmp_path / f"{run}.json"
        # data in memory reach the workers scattered, not embedded in a graph (X is 72 kB)
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "32kB"}):
            assert main(argv + extra + ["--json", str(out)]) == 0
        got[run] = json.loads(out.read_text())
    text, err = capsys.readouterr()
    assert "large graph" not in err
    assert f"Dask scheduler {client.scheduler.address}, 2 workers" in text
    assert ("X opened by the workers" if data != "in-memory" else "X persisted") in text
    here, there = got["here"], got["cluster"]
    assert there["model"]["converged"]
    for key in ("scores_rif", "scores_if", "leverage"):
        close(np.array(there[key]), np.array(here[key]), 1e-8)
    assert there["split"] == here["split"]


def test_rif_attribute_scheduler_refusals(tmp_path, capsys, monkeypatch):
    from rif_native.cli import main

    import argparse

    from rif_native import _cli_cluster
    from rif_native.cli import _UsageError

    for extra, why in ((["--precision", "mixed"], "float64"),
                       (["--family", "multinomial"], "binary GLM")):
        assert main(["attribute", "--scheduler", "tcp://127.0.0.1:9", *extra]) == 2
        assert why in capsys.readouterr().err
    # (main refuses --backend cuda first where no GPU can be used)
    with pytest.raises(_UsageError, match="exclude each other"):
        _cli_cluster.check(argparse.Namespace(scheduler="tcp://127.0.0.1:9", family="logistic",
                                              precision="double", backend="cuda"))
    monkeypatch.setattr(_cli_cluster, "CONNECT_TIMEOUT", "2s")
    assert main(["attribute", "--scheduler", "tcp://127.0.0.1:9", "--quiet"]) == 2
    assert "cannot reach a Dask scheduler there" in capsys.readouterr().err


def test_workers_do_not_keep_an_hdf5_file_locked(client, small_tasks, tmp_path):
    """HDF5 locks a file while any process has it open: the workers open it for each task
    only, so that it can be written again once the attribution is gone."""
    import gc
    import subprocess
    import sys

    X, y, _ = problem(19, np.float64)
    dataset, _ = store("h5py", X, tmp_path)
    B = rn.Attribution(dataset, y, np.zeros(D), l2=1.0, backend="dask")
    close(B.leverage.compute(), rn.Attribution(X, y, np.zeros(D), l2=1.0).leverage)
    dataset.file.close()
    del B
    gc.collect()
    rewrite = ("import h5py, numpy as np\n"
               f"with h5py.File({str(tmp_path / 'X.h5')!r}, 'w') as f:\n"
               "    f['X'] = np.ones((3, 2))\n")
    done = subprocess.run([sys.executable, "-c", rewrite], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]


@pytest.mark.parametrize("kind", ["zarr-zstd", "zarr-uncompressed"])
def test_a_dask_array_from_zarr_is_opened_by_the_workers(client, small_tasks, tmp_path, kind):
    """dask.array.from_zarr with nothing applied after it is read as the store itself (the
    workers open it); the same array with a step after it, in row chunks finer than the store's,
    or from a store in this process's memory, stays a Dask array. Every answer equal to the
    in-memory path."""
    import dask.array as da

    X, y, w = problem(12, np.float32)
    z, _ = store(kind, X, tmp_path)
    kw = dict(l2=1.5, sample_weight=w)
    theta = rn.fit(X, y, tol=1e-13, solver="newton", **kw).theta
    A = rn.Attribution(X, y, theta, **kw)
    V = np.random.default_rng(3).standard_normal((A.n_params, 2))
    memory = zarr.create_array(zarr.storage.MemoryStore(), shape=X.shape, chunks=(CHUNK, D),
                               dtype=X.dtype)
    memory[:] = X
    for Xd, opened in ((da.from_zarr(str(tmp_path / f"{kind}.zarr")), True),
                       (da.from_zarr(z), True),
                       (da.from_zarr(z).map_blocks(np.copy), False),
                       (da.from_zarr(z, chunks=(CHUNK // 2, D)), False),  # finer than the store
                       (da.from_zarr(memory), False)):
        B = rn.Attribution(Xd, y, theta, **kw)
        assert ("opened by the workers" in repr(B)) == opened, repr(B)
        close(B.leverage.compute(), A.leverage)
        close(B.scores(V, "rif").compute(), A.scores(V, "rif"))
    got = rn.fit(da.from_zarr(z), y, tol=1e-13, **kw)
    assert got.converged
    close(got.theta, theta)
