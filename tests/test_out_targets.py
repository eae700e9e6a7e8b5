"""out= targets that must not be replaced: X's own files and stores (the path X is read from, a
folder holding them, a path inside them), folders that are not Zarr stores, a folder at a .npy
path, a file at a .zarr path. Each is refused before anything is written, and what was there
is checked byte for byte afterwards; an earlier output is still replaced."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn
from conftest import FIXED_SEED, tree_snapshot

zarr = pytest.importorskip("zarr")

N, D = 600, 6


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(FIXED_SEED + 41)
    X = rng.standard_normal((N, D)) + 0.3
    y = (rng.random(N) < 0.4).astype(np.float64)
    theta = rn.fit(X, y, l2=1.0).theta
    return X, y, theta


def zarr_store(path: Path, X: np.ndarray):
    z = zarr.create_array(str(path), shape=X.shape, chunks=(128, X.shape[1]), dtype="f8")
    z[:] = X
    return zarr.open_array(str(path), mode="r")


def shards(folder: Path, X: np.ndarray) -> list:
    folder.mkdir()
    paths = [folder / "part0.npy", folder / "part1.npy"]
    np.save(paths[0], X[:250])
    np.save(paths[1], X[250:])
    return paths


def refused(A, out, folder: Path, error, match: str) -> None:
    """A's RIF to out is refused with error(match), and nothing under folder changes."""
    before = tree_snapshot(folder)
    with pytest.raises(error, match=match):
        A.rescaled_influence(out=out)
    assert tree_snapshot(folder) == before


def test_x_own_zarr_store_is_refused(problem, tmp_path, monkeypatch):
    X, y, theta = problem
    monkeypatch.chdir(tmp_path)
    zarr_store(tmp_path / "x.zarr", X)
    A = rn.Attribution(zarr.open_array("x.zarr", mode="r"), y, theta, l2=1.0)
    for out in ("x.zarr", tmp_path / "x.zarr", "./sub/../x.zarr", "x.zarr/rif.npy"):
        refused(A, out, tmp_path, ValueError, "which X is read from")
    np.testing.assert_array_equal(zarr.open_array("x.zarr", mode="r")[:], X)


@pytest.mark.parametrize("opened", ["path", "memmap"])
def test_x_own_npy_file_is_refused(problem, tmp_path, monkeypatch, opened):
    X, y, theta = problem
    monkeypatch.chdir(tmp_path)
    np.save("x.npy", X)
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.npy")
    Xs = "x.npy" if opened == "path" else np.load("x.npy", mmap_mode="r")
    A = rn.Attribution(Xs, y, theta, l2=1.0)
    for out in ("x.npy", tmp_path / "x.npy", "link.npy"):
        refused(A, out, tmp_path, ValueError, r"out=.*is '.*x\.npy', which X is read from")
    np.testing.assert_array_equal(np.load("x.npy"), X)


@pytest.mark.parametrize("function", [rn.influence, rn.rescaled_influence])
def test_the_functions_refuse_before_reading_x(problem, tmp_path, function):
    """rn.influence / rn.rescaled_influence refuse out= before any pass over X, as the methods
    do (they built the whole attribution, two passes, and refused after)."""
    X, y, theta = problem
    np.save(tmp_path / "x.npy", X)
    src = rn.sources.open_source(tmp_path / "x.npy")
    for out in (tmp_path / "x.npy", tmp_path / "missing" / "rif.npy", tmp_path / "r.csv"):
        before = tree_snapshot(tmp_path)
        with pytest.raises((ValueError, FileNotFoundError)):
            function(src, y, theta, l2=1.0, out=out)
        assert tree_snapshot(tmp_path) == before
    assert src.passes == 0
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), X)


def test_a_folder_holding_x_or_a_path_inside_x_is_refused(problem, tmp_path):
    X, y, theta = problem
    h5py = pytest.importorskip("h5py")
    paths = shards(tmp_path / "parts.zarr", X)  # a folder named like a store, of X's shards
    with h5py.File(tmp_path / "parts.zarr" / "x.h5", "w") as f:
        f.create_dataset("X", data=X)
    # a Source over several shards, rows of them
    src = rn.sources.open_source(paths).subset(100, 500)
    A = rn.Attribution(src, y[100:500], theta, l2=1.0)
    refused(A, tmp_path / "parts.zarr", tmp_path, ValueError, "holds .*part0.npy")
    refused(A, tmp_path / "parts.zarr" / "part1.npy", tmp_path, ValueError, "is .*part1.npy")
    with h5py.File(tmp_path / "parts.zarr" / "x.h5", "r") as f:
        B = rn.Attribution(f["X"], y, theta, l2=1.0)
        refused(B, tmp_path / "parts.zarr", tmp_path, ValueError, r"holds .*x\.h5")
    zarr_store(tmp_path / "x.zarr", X)
    C = rn.Attribution(zarr.open_array(str(tmp_path / "x.zarr"), mode="r"), y, theta, l2=1.0)
    refused(C, tmp_path / "x.zarr" / "c" / "rif.zarr", tmp_path, ValueError,
            r"is inside .*x\.zarr")


def test_rows_of_a_source_made_from_a_store_keep_it_refused(problem, tmp_path):
    """sources.Source([z]).subset(a, b): the rows are read through a range of the store, and
    out= the store was written over (X's own data lost); so was a Source whose part is the
    store's chunk files decoded by the reader."""
    X, y, theta = problem
    z = zarr_store(tmp_path / "x.zarr", X)
    for src in (rn.sources.Source([z]).subset(0, 300),
                rn.sources.Source(rn.sources._in_place_parts(z))):
        A = rn.Attribution(src, y[:src.shape[0]], theta, l2=1.0)
        refused(A, tmp_path / "x.zarr", tmp_path, ValueError, "which X is read from")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "x.zarr"), mode="r")[:], X)


def test_what_is_not_an_earlier_output_is_refused(problem, tmp_path):
    X, y, theta = problem
    A = rn.Attribution(X, y, theta, l2=1.0)
    (tmp_path / "notes.zarr" / "sub").mkdir(parents=True)
    (tmp_path / "notes.zarr" / "sub" / "keep.txt").write_text("precious")
    refused(A, tmp_path / "notes.zarr", tmp_path, FileExistsError, "not a Zarr store")
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "dir.npy" / "keep.txt").write_text("precious")
    refused(A, tmp_path / "dir.npy", tmp_path, FileExistsError, "is a folder")
    (tmp_path / "file.zarr").write_bytes(b"precious")
    refused(A, str(tmp_path / "file.zarr"), tmp_path, FileExistsError,
            "is a file, not a Zarr store")
    (tmp_path / "empty.zarr").mkdir()
    refused(A, tmp_path / "empty.zarr", tmp_path, FileExistsError, "not a Zarr store")


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_an_earlier_output_beside_x_is_replaced(problem, tmp_path, suffix):
    X, y, theta = problem
    zarr_store(tmp_path / "x.zarr", X)
    A = rn.Attribution(zarr.open_array(str(tmp_path / "x.zarr"), mode="r"), y, theta, l2=1.0)
    full = rn.Attribution(X, y, theta, l2=1.0).rescaled_influence()
    out = tmp_path / f"rif{suffix}"
    A.rescaled_influence(np.arange(7), out=out)
    A.rescaled_influence(out=out)
    back = np.load(out) if suffix == ".npy" else zarr.open_array(str(out), mode="r")[:]
    np.testing.assert_allclose(back, full, rtol=0, atol=1e-10 * np.abs(full).max())
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "x.zarr"), mode="r")[:], X)
    assert sorted(os.listdir(tmp_path)) == sorted(["x.zarr", f"rif{suffix}"])


@pytest.mark.parametrize("kind", ["npy", "from_zarr", "from_array"])
def test_the_dask_engine_refuses_x_own_store(client, problem, tmp_path, kind):
    da = pytest.importorskip("dask.array")
    X, y, theta = problem
    if kind == "npy":  # opened by the workers
        np.save(tmp_path / "x.npy", X)
        Xs, own = str(tmp_path / "x.npy"), tmp_path / "x.npy"
        A = rn.Attribution(Xs, y, theta, l2=1.0, backend="dask")
    else:
        z = zarr_store(tmp_path / "x.zarr", X)
        Xs = da.from_zarr(z) if kind == "from_zarr" else da.from_array(z, chunks=(200, D))
        own = tmp_path / "x.zarr"
        A = rn.Attribution(Xs, y, theta, l2=1.0)
    assert type(A).__name__ == "DaskAttribution"
    refused(A, own, tmp_path, ValueError, "which X is read from")
