"""Sources the Dask engine's workers open themselves (``backend="dask"`` with X stored).

A Dask array's chunks reach a task through Dask: read by the worker from their store, kept in
its memory, or sent from another worker. X given as a ``.npy`` path, a read-only memory map of
a file (``np.load(path, mmap_mode="r")``), a Zarr array, an h5py dataset, a list of these, or a
:class:`rif_native.sources.Source` opened from them (rows ``subset`` of it included) instead
travels as its description: each task carries the rows
it covers (:class:`StoredRows`, a few hundred bytes) and opens them where it runs, through the
same :mod:`rif_native.sources` reading as in this process. Memory-mapped files and uncompressed
Zarr chunk files are then read in place from the worker's page cache, with read-ahead, and no
rows of X travel between processes. The files must be reachable under the same name from every
worker (a local cluster, or a shared file system; a Zarr store may also be remote, opened by
each worker through its own store object).

Each task covers whole chunks of the store, about ``rif_native.task-bytes`` of X (Dask config,
default 128 MiB).
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import socket
import threading
import uuid
from typing import Any, Iterator, Optional

import numpy as np

from . import sources

TASK_BYTES = 128 << 20  # of X per task (the Dask config key rif_native.task-bytes)
_KEEP_OPEN = 4  # sources a worker keeps open (the most recent ones)
_MAX_PART_BYTES = 64 << 10  # the most a Zarr array's description may pickle to (every task
# carries it; a folder or remote store's is 1 to 3 kB)

_opened: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()  # token: _held()
_opened_lock = threading.Lock()


def _is_h5py_dataset(X: Any) -> bool:
    return sources._module_of(X) == "h5py" and hasattr(X, "file") and hasattr(X, "name")


def _part(item: Any) -> tuple:
    """One shard as something a worker can open: ("npy", path), ("zarr", array) or
    ("h5py", file name, dataset name)."""
    span = sources._file_span(item) if isinstance(item, np.ndarray) else None
    if span is not None and item.ndim == 2:  # a read-only memory map: its file region
        return ("map", os.path.abspath(span[0]), span[1], tuple(item.shape), item.dtype.str)
    if isinstance(item, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(item))
        if os.path.isdir(path):
            raise ValueError(f"X: {path} is a folder; for a Zarr store pass the array, "
                             f"zarr.open_array({os.fspath(item)!r}, mode='r')")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"X: no file {path}")
        return ("npy", path)
    if sources._module_of(item) == "zarr":
        return ("zarr", _portable_zarr(item))
    if _is_h5py_dataset(item):
        return ("h5py", os.path.abspath(item.file.filename), item.name)
    if isinstance(item, np.ndarray) and sources._file_backed(item):
        raise TypeError(_unopenable_map(item))
    raise TypeError(
        "backend='dask' runs on the workers, which read X themselves: give X as a Dask array, or "
        "as a source they can open (a .npy path, a read-only memory map of a file, a Zarr array, "
        f"an h5py dataset, or a list of these); got {type(item).__name__}. An array in memory "
        "runs here (backend='cpu').")


def _unopenable_map(a: np.ndarray) -> str:
    """Why the workers cannot open this memory map of a file as it is, and what to pass."""
    top = sources.memmap_of(a)
    why = ("not C-contiguous (a column slice, a strided view or a Fortran-ordered file)"
           if not a.flags.c_contiguous else "writable (opened with mode 'r+', 'w+' or 'c')"
           if getattr(top, "mode", "r") != "r" else f"{a.ndim}-D, not 2-D" if a.ndim != 2
           else "not a map of a named file")
    what = sources.describe(a).replace("memory-mapped", "memory map of")
    return (f"backend='dask': X is a {what} that the workers cannot open as it is: it is {why}. "
            "They open read-only memory maps of files, or row ranges of them: pass the file's "
            "path (for all of it), save the columns wanted as a .npy file of their own, or use "
            "backend='cpu'")


def _portable_zarr(z: Any) -> Any:
    """The Zarr array as the workers open it: a folder store by its absolute path (a worker may
    run in another directory); refused when its description would carry the data itself."""
    root = getattr(z.store, "root", None)
    if type(z.store).__name__ == "LocalStore" and root is not None and not root.is_absolute():
        import zarr

        z = zarr.open_array(store=os.path.abspath(root), path=z.path, mode="r")
    in_memory = ValueError(
        "backend='dask' opens X on the workers, and this Zarr array lives in this process's "
        "memory: store it in a folder (or remote store) the workers reach, or pass "
        "dask.array.from_zarr(X)")
    if type(z.store).__name__ == "MemoryStore":
        raise in_memory
    try:
        size = len(pickle.dumps(z))
    except Exception as e:  # noqa: BLE001 (any failure means the workers cannot be sent it)
        raise ValueError(f"backend='dask': this Zarr array cannot be sent to the workers "
                         f"({type(e).__name__}: {e}); pass dask.array.from_zarr(X)") from e
    if size > _MAX_PART_BYTES:  # e.g. a dict-backed store: every task would carry the data
        raise ValueError(
            f"backend='dask': this Zarr array's description pickles to {size:,} bytes, and "
            f"every task would carry it (does its store hold the data in memory?): store it "
            f"in a folder (or remote store) the workers reach, or pass dask.array.from_zarr(X)")
    return z


def _stamp(part: tuple) -> Optional[tuple]:
    """What identifies a stored file's contents: (size, mtime, device, inode) of the .npy or
    HDF5 file (of the whole HDF5 file, whichever dataset X is); None for Zarr (its store may be
    remote, and its chunks are files of their own)."""
    if part[0] == "zarr":
        return None
    st = os.stat(part[1])
    return (st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino)


def _same_file(now: tuple, then: tuple, same_host: bool) -> bool:
    """Whether a file's stamp now is the one it had: size and modification time everywhere,
    device and inode only on the host that took the first (a shared file system's device
    number, and on some its inodes, differ from host to host)."""
    return now[:2] == then[:2] and (not same_host or now[2:] == then[2:])


def _open_part(part: tuple) -> Any:
    """The shard as open_source takes it (a path, a memory map, the Zarr array, the opened
    h5py dataset)."""
    if part[0] in ("npy", "zarr"):
        return part[1]
    if part[0] == "map":
        _, path, offset, shape, dtype = part
        return np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
    import h5py

    return h5py.File(part[1], "r")[part[2]]


def _described(X: Any) -> tuple:
    """(X's shards as the workers open them (_part), the rows of their concatenation X covers
    or None for all); raises for what they cannot open."""
    if isinstance(X, sources.Source):
        if X.origin is None:
            raise TypeError("backend='dask': this Source was not opened from stored shards "
                            "(rif_native.sources.open_source), so the workers cannot open it")
        items, begin, end = X.origin
        return [_part(item) for item in items], (int(begin), int(end))
    if isinstance(X, (list, tuple)) and not X:
        raise ValueError("X: an empty list of shards")
    return [_part(item) for item in (list(X) if isinstance(X, (list, tuple)) else [X])], None


def check_stored(X: Any) -> None:
    """Raise unless X is a source the workers can open themselves (module docstring)."""
    _described(X)


def zarr_behind(X: Any) -> Optional[Any]:
    """The Zarr array a Dask array reads unchanged (``dask.array.from_zarr`` with nothing
    applied after it, the array kept out of the tasks as by default), or None."""
    name = getattr(X, "name", "")
    layers = getattr(getattr(X, "dask", None), "layers", None)
    if not (isinstance(name, str) and name.startswith("from-zarr-")) or layers is None \
            or len(layers) != 2 or f"original-{name}" not in layers:
        return None
    held = list(dict(layers[f"original-{name}"]).values())
    if len(held) != 1 or sources._module_of(held[0]) != "zarr":
        return None
    z = held[0]
    return z if tuple(z.shape) == tuple(X.shape) and z.dtype == X.dtype else None


def stored_instead(X: Any) -> Any:
    """A Dask array made by ``dask.array.from_zarr`` from a folder on this machine as the
    store the workers open themselves (StoredSource: uncompressed chunk files read in place,
    compressed ones decoded straight into the blocks, where Dask's tasks read them through
    zarr-python and hand the chunks on, even persisted: 2M x 512 float32 took 1.72x the
    in-process time that way against 1.19x). Any other Dask array as is: a remote store's
    (persisted, it is read from the network once, where the workers would read it on every
    pass), and one whose row chunks are finer than the store's (its tasks follow them, where
    the store's tasks never split one of its chunks: a store of one chunk would be one task)."""
    from . import _zarr_files

    z = zarr_behind(X)
    if (z is None or _zarr_files.local_root(z.store) is None
            or int(z.chunks[0]) > max(int(c) for c in X.chunks[0])):
        return X
    try:
        return StoredSource(z)
    except (ValueError, TypeError):
        return X


class StoredSource:
    """X as shards the workers open themselves, and the rows of them it covers (``span``;
    None for all); pickles to their descriptions."""

    def __init__(self, X: Any) -> None:
        self.parts, self.span = _described(X)
        self.stamps = [_stamp(p) for p in self.parts]
        self.host = socket.gethostname()  # where the stamps were taken
        self.token = uuid.uuid4().hex  # one opening per worker for this object's lifetime
        self._opening: Optional[tuple] = self._open_checked()  # this process's own
        self.shape, self.dtype = self.open().shape, self.open().dtype
        if self.span == (0, self._opening[0].shape[0]):
            self.span = None  # all of the shards' rows

    def __getstate__(self) -> dict:  # what travels: the descriptions, never the opened source
        return {"parts": self.parts, "span": self.span, "stamps": self.stamps,
                "host": self.host, "token": self.token, "shape": self.shape, "dtype": self.dtype,
                "_opening": None}

    def __dask_tokenize__(self) -> tuple:
        return ("rif_native.StoredSource", self.token)

    @property
    def per_task(self) -> bool:
        """Whether a worker opens X for each task and closes it after: HDF5 locks a file while
        any process holds it open, so that nobody could write it while the worker lives."""
        return any(p[0] == "h5py" for p in self.parts)

    def _open_checked(self) -> tuple:
        """(all the shards, the rows X covers, the HDF5 files opened) opened here, after
        checking that the files are the ones first opened."""
        same_host = socket.gethostname() == self.host
        for part, stamp in zip(self.parts, self.stamps):
            if stamp is not None and not _same_file(_stamp(part), stamp, same_host):
                raise sources.SourceReadError(
                    f"X: {part[1]} has changed since X was opened (another file, size or "
                    f"modification time): results would mix old and new rows; open X again")
        opened = [_open_part(p) for p in self.parts]
        files = [o.file for p, o in zip(self.parts, opened) if p[0] == "h5py"]
        whole = sources.open_source(opened)
        if min(whole.shape) == 0:
            raise ValueError(f"X must have at least one row and one column, got shape "
                             f"{whole.shape}")
        return whole, (whole if self.span is None else whole.subset(*self.span)), files

    def _held(self) -> tuple:
        """The client's own opening, or on a worker one opening per token, kept among the
        last few (reopened, after the same check, when evicted); HDF5 files are opened for
        each task and closed after it."""
        if self._opening is not None:
            return self._opening
        if self.per_task:
            return self._open_checked()
        with _opened_lock:
            got = _opened.get(self.token)
            if got is not None:
                _opened.move_to_end(self.token)
                return got
        got = self._open_checked()
        with _opened_lock:
            got = _opened.setdefault(self.token, got)  # a thread that opened it first wins
            _opened.move_to_end(self.token)
            while len(_opened) > _KEEP_OPEN:
                _opened.popitem(last=False)
        return got

    def open(self) -> sources.Source:
        """X as a Source in this process."""
        return self._held()[1]

    def rows(self, lo: int, hi: int, held: Optional[tuple] = None) -> sources.Source:
        """X's rows [lo, hi) as a Source, cut from the whole shards (so that a reader keeps to
        their stored chunks); of the opening `held` if given."""
        first = 0 if self.span is None else self.span[0]
        return (held or self._held())[0].subset(first + lo, first + hi)

    def task_bounds(self, task_bytes: int) -> np.ndarray:
        """Row boundaries of the tasks, about task_bytes of X each, none splitting a stored
        chunk."""
        src = self.open()
        n, d = src.shape
        target = max(1, task_bytes // max(1, d * src.dtype.itemsize))
        bounds = [0]
        for e in src.edges(target):
            if e - bounds[-1] >= target or e == n:
                bounds.append(int(e))
        return np.asarray(bounds, dtype=np.int64)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return self.open().take(idx)

    def describe(self) -> str:
        names = [p[1] if p[0] in ("npy", "map") else sources.describe(p[1]) if p[0] == "zarr"
                 else f"HDF5 dataset {p[2]} in {p[1]}" for p in self.parts]
        what = names[0] if len(names) == 1 else f"{len(names)} shards"
        if self.span is not None:
            what += f", rows {self.span[0]}:{self.span[1]}"
        return what


class StoredRows:
    """Rows [lo, hi) of a StoredSource, sent to a task in place of the rows themselves."""

    def __init__(self, stored: StoredSource, lo: int, hi: int) -> None:
        self.stored, self.lo, self.hi = stored, int(lo), int(hi)

    def __dask_tokenize__(self) -> tuple:  # without it Dask may pickle the rows' source to hash
        return ("rif_native.StoredRows", self.stored.token, self.lo, self.hi)

    @property
    def shape(self) -> tuple:
        return (self.hi - self.lo, int(self.stored.shape[1]))

    def source(self) -> sources.Source:
        """The rows as a Source (the native kernel reads it block by block, in place)."""
        return self.stored.rows(self.lo, self.hi)


@contextlib.contextmanager
def opened(X: Any) -> Iterator[Any]:
    """A chunk task's X for the length of the task: StoredRows as a Source of the rows, opened
    where it runs (files opened for this task only, HDF5's, closed at its end), else X."""
    if not isinstance(X, StoredRows):
        yield X
        return
    stored = X.stored
    held = stored._held()
    try:
        yield stored.rows(X.lo, X.hi, held)
    finally:
        if held is not stored._opening and stored.per_task:  # opened for this task alone
            for f in held[2]:
                f.close()


def row_arrays(X: Any) -> Iterator[np.ndarray]:
    """A chunk's rows as consecutive arrays: a Source's shards where they are read in place
    (views of the files), its blocks read into memory otherwise; an array itself."""
    if not isinstance(X, sources.Source):
        yield X
    elif X.shards is not None:
        yield from X.shards
    else:
        for _, rows in X.blocks():
            yield rows
