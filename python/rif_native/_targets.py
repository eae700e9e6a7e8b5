"""Targets for outputs too large for memory (the n x p IF / RIF matrices): written block by block
to a ``.npy`` file or a Zarr store, which appears complete under its name or not at all (the
blocks go to a hidden file beside it, renamed into place at the end; a failure or Ctrl-C
removes it)."""

from __future__ import annotations

import os
import shutil
from typing import Any, Callable

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


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def write_rows(target: Target, rows: int, cols: int, block: int,
               fill: Callable[[int, int], np.ndarray]) -> Any:
    """Writes a (rows, cols) float64 matrix to `target`, fill(begin, end) giving rows
    [begin, end); returns the written matrix opened read-only (a memmap, or a Zarr array)."""
    kind = _kind(target)
    path = os.fspath(target)
    partial = _partial_path(path)
    try:
        if kind == "npy":
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float64,
                                            shape=(rows, cols))
        else:
            import zarr

            out = zarr.open_array(partial, mode="w", shape=(rows, cols), dtype="f8",
                                  chunks=(max(1, min(block, rows)), max(cols, 1)))
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
