"""Targets for outputs too large for memory (the n x p IF / RIF matrices): written block by block
to a ``.npy`` file or a Zarr store, which appears complete under its name or not at all (the
blocks go to a hidden file beside it, renamed into place at the end; a failure or Ctrl-C
removes it).

An earlier output at the path is replaced; anything else is refused before any work starts: a
path that is, holds or lies inside a file or store X is read from, a folder that is not a Zarr
store, a folder at a ``.npy`` path and a file at a ``.zarr`` path."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable, Optional, Union

import numpy as np

Target = Any  # str or os.PathLike ending in .npy or .zarr


def _kind(target: Target) -> str:
    if not isinstance(target, (str, os.PathLike)):
        raise TypeError(f"out must be a path ending in .npy or .zarr, got {type(target).__name__}")
    path = os.fspath(target)
    for suffix in (".npy", ".zarr"):
        if path.endswith(suffix):
            return suffix[1:]
    raise ValueError(f"out must be a path ending in .npy or .zarr, got {path!r}")


def _partial_path(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"out: the folder {folder!r} does not exist")
    return os.path.join(folder, f".{name}.partial-{os.getpid()}")


def _mapped_file(a: np.ndarray) -> Optional[str]:
    """The file an array's memory maps (np.memmap, np.load(mmap_mode=...)), else None."""
    from .sources import memmap_of

    top = memmap_of(a)
    return os.fspath(top.filename) if top is not None and top.filename else None


def _dask_inputs(X: Any) -> list:
    """What a Dask array reads: the arrays of its from_array / from_zarr layers."""
    layers = getattr(getattr(X, "dask", None), "layers", {})
    return [v for name, layer in layers.items() if str(name).startswith("original-")
            for v in dict(layer).values()]


def input_paths(X: Any) -> list:
    """The files and stores (resolved paths) X is read from: paths, memory-mapped arrays,
    Zarr arrays in local folders, h5py datasets, Sources and their parts (row ranges of a
    store, a Zarr store's chunk files), Dask arrays, lists of these."""
    from . import _zarr_files, sources

    if X is None:
        return []
    if isinstance(X, (str, os.PathLike)):
        return [os.path.realpath(os.fspath(X))]
    if isinstance(X, (list, tuple)):
        return [p for item in X for p in input_paths(item)]
    if isinstance(X, sources.Source):
        return input_paths(X.origin[0] if X.origin is not None else X._parts)
    if isinstance(getattr(X, "parts", None), list) and hasattr(X, "task_bounds"):
        # a StoredSource (Dask's X opened by the workers): ("npy" | "map" | "h5py", path, ...)
        # or ("zarr", array)
        return input_paths([part[1] for part in X.parts])
    if isinstance(X, np.ndarray):
        return input_paths(_mapped_file(X))
    if isinstance(X, (sources._RowRange, _zarr_files.CompressedChunks)):
        return input_paths(X.array)  # (rows of a store, a store's chunk files: the store)
    module = sources._module_of(X)
    if module == "zarr":
        return input_paths(_zarr_files.local_root(X.store))
    if module == "h5py" and hasattr(X, "file"):
        return input_paths(X.file.filename)
    if module == "dask":
        return input_paths(_dask_inputs(X))
    return []


def _overlaps(a: str, b: str) -> bool:
    """Whether resolved paths a and b are the same, or one lies inside the other."""
    return os.path.commonpath([a, b]) in (a, b)


def _is_zarr_store(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in (".zarray", ".zgroup", "zarr.json"))


def check_target(target: Target, reads: Any = None) -> None:
    """Refuse (before any work) an out= path in a folder that does not exist, or whose
    replacement would lose data that is not an earlier output: X's own files or stores
    (``reads``: X as read), or what holds them or lies inside them; a folder that is not a
    Zarr store; a folder at a .npy path; a file at a .zarr path."""
    kind = _kind(target)
    path = os.fspath(target)
    full = os.path.realpath(path)
    _partial_path(path)  # (raises when the folder it would go in is missing)
    for source in input_paths(reads):
        if _overlaps(full, source):
            what = ("is" if full == source else "holds" if source.startswith(full + os.sep)
                    else "is inside")
            raise ValueError(f"out={path!r} {what} {source!r}, which X is read from: writing "
                             "there would destroy X; choose another path (nothing was written)")
    if kind == "npy" and os.path.isdir(full):
        raise FileExistsError(f"out={path!r} is a folder, and a .npy output is a file: "
                              "choose another path (nothing was written)")
    if kind == "zarr" and os.path.exists(full) and not os.path.isdir(full):
        raise FileExistsError(f"out={path!r} is a file, not a Zarr store: choose another path "
                              "or remove it (nothing was written)")
    if kind == "zarr" and os.path.isdir(full) and not _is_zarr_store(full):
        raise FileExistsError(f"out={path!r} is a folder that is not a Zarr store (no "
                              ".zarray, .zgroup or zarr.json in it): only an earlier output is "
                              "replaced; choose another path (nothing was written)")


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def write_rows(target: Target, rows: int, cols: Union[int, tuple], block: int,
               fill: Callable[[int, int], np.ndarray], reads: Any = None) -> Any:
    """Writes a (rows, cols) float64 matrix to `target` (cols a tuple: a (rows, *cols) array,
    such as a multinomial model's (rows, K, p) rows), fill(begin, end) giving rows
    [begin, end); returns the written array opened read-only (a memmap, or a Zarr array).
    ``reads``: X as the rows are computed from it, whose files the target may not touch
    (check_target)."""
    check_target(target, reads)
    kind = _kind(target)
    path = os.fspath(target)
    partial = _partial_path(path)
    tail = (cols,) if isinstance(cols, (int, np.integer)) else tuple(cols)
    try:
        if kind == "npy":
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float64,
                                            shape=(rows, *tail))
        else:
            import zarr

            out = zarr.open_array(partial, mode="w", shape=(rows, *tail), dtype="f8",
                                  chunks=(max(1, min(block, rows)), *(max(c, 1) for c in tail)))
        for begin in range(0, rows, block):
            end = min(rows, begin + block)
            out[begin:end] = fill(begin, end)
        if kind == "npy":
            out.flush()
            del out
        _replace(partial, path)
    except BaseException:
        _remove(partial)
        raise
    if kind == "npy":
        return np.load(path, mmap_mode="r")
    import zarr

    return zarr.open_array(path, mode="r")


def _replace(partial: str, path: str) -> None:
    """Renames the finished partial output to `path` (a folder for Zarr: the old one, if any,
    is set aside first and removed once the new one is in place)."""
    if os.path.isdir(path):
        old = partial + ".old"
        os.replace(path, old)
        os.replace(partial, path)
        _remove(old)
    else:
        os.replace(partial, path)
