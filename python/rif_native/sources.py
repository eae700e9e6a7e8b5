"""Sources: X read by row ranges, so that it need not fit in memory.

Every function and object of rif_native that takes X accepts, besides an array in memory:

* a NumPy memmap, or the path of a ``.npy`` file (opened memory-mapped);
* a list of ``.npy`` paths or 2-D arrays ("shards") that stack, in order, into one X;
* a Zarr array, an h5py dataset, a Dask array (computed chunk by chunk on this machine with
  ``backend="cpu"``; by default ``Attribution`` runs it on its cluster), or any 2-D object with
  ``shape``, ``dtype`` and row slicing ``X[a:b]``; with ``backend="dask"``, ``.npy`` paths,
  shards, Zarr arrays and h5py datasets run on the Dask cluster, each worker opening its rows
  itself;
* a SciPy sparse matrix or array (CSR, CSC, COO, ...): converted to CSR once; when at most
  ``SPARSE_DENSITY`` of it is nonzero, the Hessian, leverage, gradient and score passes read only
  its nonzeros, and every other read gets rows made dense one block at a time (memory: X's
  nonzeros plus a block, never n x d).

The kernel's passes read such a source one row block at a time (a few MiB), converting to float64
block by block: float32 stays float32 on disk and in the reading, and every sum is accumulated
in float64, exactly as for a float32 array in memory. Memory-mapped files and shards are read in
place, and the operating system is asked to read the next blocks ahead while the current one is
computed; other sources are read in whole chunks of their own layout by a reader thread that
keeps one chunk ahead of the computation. An uncompressed Zarr array in a local folder is read in
place from its chunk files, like shards; a compressed one has its chunk files decoded by
numcodecs straight into the reader's blocks. Memory-mapped files larger than half of the machine's
memory (``DIRECT_READ_BYTES``) are read past the page cache instead, by a native reader thread
(O_DIRECT, ``DIRECT_CHUNK_BYTES`` at a time, two chunks ahead). ``Source.passes`` counts the
passes made over X.

>>> import rif_native as rn
>>> X = rn.sources.open_source(["part0.npy", "part1.npy"])  # doctest: +SKIP
>>> rn.Attribution(X, y, theta, l2=1.0).leverage            # doctest: +SKIP
"""

from __future__ import annotations

import collections
import functools
import mmap
import os
import sys
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from . import _core, _progress, _zarr_files

SourceReadError = _core.SourceReadError
SourceReadError.__doc__ = ("Reading rows of X from its source failed (a subclass of OSError); "
                           "the message names the rows and the source's own error.")

#: Bytes a reader aims to fetch per read of a source without chunks of its own.
READ_BYTES = 32 << 20

#: The largest fraction of nonzeros at which the passes over a sparse X read its nonzeros only
#: (the Hessian and leverages then cost nnz_i^2 / 2 per row instead of p^2); a denser X is read
#: as dense row blocks, which run at the matrix-product rate.
SPARSE_DENSITY = 0.1

#: The largest mean^2 / variance of a column at which the sparse passes are used: their
#: expanded centring loses about this factor times the rounding to cancellation.
MAX_OFFSET_RATIO = 1e3


#: Memory-mapped files (.npy, shards, uncompressed Zarr chunks) totalling more than this many
#: bytes are read with the page cache bypassed (O_DIRECT, by a native reader thread) instead of
#: through their memory maps: a mapped file larger than the page cache costs the machine far more
#: in page faults and reclaim than the reading itself. None: half of this machine's memory.
DIRECT_READ_BYTES: Optional[int] = None

#: Bytes of X per read of that reader (it holds four such chunks; two are read ahead).
DIRECT_CHUNK_BYTES = 32 << 20


def _module_of(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _is_sparse(X: Any) -> bool:
    return _module_of(X) == "scipy" and hasattr(X, "tocsr") and hasattr(X, "nnz")


def is_source_like(X: Any) -> bool:
    """Whether X is read through a Source (anything but an array, list of rows or device
    array in memory)."""
    if isinstance(X, Source) or _is_sparse(X):
        return True
    if isinstance(X, np.ndarray):
        return _file_backed(X)
    if isinstance(X, (str, os.PathLike)):
        return True
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(_is_shard(s) for s in X)
    return _module_of(X) in ("zarr", "h5py", "dask") or (
        hasattr(X, "shape") and hasattr(X, "dtype") and hasattr(X, "__getitem__")
        and not hasattr(X, "__array_interface__") and not hasattr(X, "__cuda_array_interface__")
        and not hasattr(X, "__dlpack__") and not hasattr(X, "tocsr"))


def _file_backed(a: np.ndarray) -> bool:
    """Whether the array's memory is a mapped file (np.memmap, np.load(mmap_mode=...))."""
    base: Any = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def _file_span(a: Any) -> Optional[tuple]:
    """(path, byte offset) of a C-contiguous array that lies in a read-only memory map of a
    file (np.load(mmap_mode="r"), np.memmap(mode="r") and their row slices), else None."""
    if not isinstance(a, np.ndarray) or not a.flags.c_contiguous:
        return None
    top = memmap_of(a)
    if top is None or getattr(top, "mode", None) != "r" or not getattr(top, "filename", None):
        return None
    return os.fspath(top.filename), int(top.offset) + a.ctypes.data - top.ctypes.data


def memmap_of(a: Any) -> Optional[np.memmap]:
    """The np.memmap that maps the file an array's memory lies in (np.memmap, np.load(
    mmap_mode=...) and views of them: the one whose base is the mmap itself), else None."""
    top: Any = a
    while top is not None and not isinstance(getattr(top, "base", None), mmap.mmap):
        top = getattr(top, "base", None)
    return top if isinstance(top, np.memmap) else None


def _mapping(a: Any) -> Optional[tuple]:
    """(the mmap.mmap an array's memory lies in, the bytes its file must hold for all of the
    map to be read) for an array mapped from a file, else None."""
    top = memmap_of(a)
    return None if top is None else (top.base, int(top.offset) + int(top.nbytes))


#: The most files read past the page cache (the reader holds two descriptors per file).
_DIRECT_MAX_FILES = 128


def _identity(path: str) -> tuple:
    """(st_dev, st_ino) of the file: the reader refuses a file replaced at the path since."""
    try:
        st = os.stat(path)
        return int(st.st_dev), int(st.st_ino)
    except OSError:
        return 0, 0


def _direct_limit() -> int:
    if DIRECT_READ_BYTES is not None:
        return int(DIRECT_READ_BYTES)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _is_shard(s: Any) -> bool:
    """Whether s, an item of a list given as X, is read as a shard (a Zarr or HDF5 group too:
    open_source then names its arrays)."""
    if isinstance(s, (str, os.PathLike)):
        return True
    if _module_of(s) in ("zarr", "h5py") and not hasattr(s, "shape"):
        return True
    return getattr(s, "ndim", None) == 2 or (
        _module_of(s) in ("zarr", "h5py", "dask") and len(getattr(s, "shape", ())) == 2)


def _open_npy(path: Any) -> np.ndarray:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"X: no such file: {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"X: {path!r} is a folder; give a .npy file, a list of .npy shards, or "
                         "open a Zarr store with zarr.open() and pass the array")
    kind = _not_npy(path)
    if kind:
        raise ValueError(f"X: {path!r} is {kind}")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"X: {path!r} is not a readable .npy file ({exc})") from None
    return arr


#: The first bytes of files that paths to X are mistaken for, and what to do instead.
_OTHER_FILES = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file: open it with h5py (h5py.File(path)[name]) and pass "
                           "the dataset"),
    (b"PK\x03\x04", "an .npz (or other zip) archive: pass its array, np.load(path)[name], or "
                  "save X alone with np.save"),
)


def _not_npy(path: str) -> str:
    """What the file at path is when it is not a .npy file ("" when it is one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        return f"not a readable .npy file ({exc.strerror or exc})"
    if head.startswith(b"\x93NUMPY"):
        return ""
    for magic, what in _OTHER_FILES:
        if head.startswith(magic):
            return what
    return ("not a .npy file (it does not start with NumPy's header): give a .npy file, a list "
            "of them, or an array-like object (NumPy, Zarr, h5py, Dask)")


def check_known_shape(X: Any, name: str = "X") -> None:
    """Raise for a Dask array whose chunk sizes are unknown (NaN in its shape)."""
    if any(s != s for s in getattr(X, "shape", ())):
        raise ValueError(f"{name} is a Dask array whose chunk sizes are unknown (NaN, e.g. after "
                         f"boolean indexing): call {name}.compute_chunk_sizes() first (it "
                         "counts each chunk's rows, one pass over it)")


def _check_dtype(dtype: Any, what: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers (float, int or bool), got dtype {dtype}")
    return dtype


class Source:
    """X as row ranges of one or more stored arrays (see the module's docstring).

    Attributes:
        shape: (n, d).
        dtype: float32 or float64, the type the kernel reads (other stored types are
            converted block by block to float64).
        passes: rows read by passes over X so far (the kernel's and blocks()), divided by n;
            reads of single samples (gathers) are not counted.
        files: [(path, byte offset, rows, st_dev, st_ino)] when the kernel reads X from its
            files with the page cache bypassed (memory-mapped files larger than
            DIRECT_READ_BYTES, or ``direct`` True), else None.
        origin: (shards, begin, end) when X was opened by :func:`open_source`: the shards as
            given (absolute paths, arrays, Zarr arrays, h5py datasets) and the rows of their
            concatenation this Source covers (``subset`` narrows them), else None. It is how
            ``backend="dask"`` describes X to workers that open it themselves.
    """

    def __init__(self, parts: Sequence[Any], *, name: str = "X",
                 progress: Optional[bool] = None, direct: Optional[bool] = None) -> None:
        if not parts:
            raise ValueError(f"{name}: an empty list of shards")
        for p in parts:
            check_known_shape(p, name)
        widths = {int(p.shape[1]) if len(p.shape) == 2 else -1 for p in parts}
        one = len(parts) == 1  # (one array is X itself, not a shard of it)
        for j, p in enumerate(parts):
            if len(p.shape) != 2:
                raise ValueError(f"{name} must be 2-D (n samples x d features), got shape "
                                 f"{tuple(p.shape)}" if one else
                                 f"{name}: shard {j} must be 2-D, got shape {tuple(p.shape)}")
        if len(widths) != 1:
            raise ValueError(f"{name}: shards must have the same number of columns, got "
                             f"{[int(p.shape[1]) for p in parts]}")
        stored = [_check_dtype(p.dtype, name if one else f"{name} (shard {j})")
                  for j, p in enumerate(parts)]
        self._parts = list(parts)
        self._starts = np.concatenate([[0], np.cumsum([int(p.shape[0]) for p in parts])])
        n, d = int(self._starts[-1]), widths.pop()
        self.shape = (n, d)
        self.float32 = all(s == np.float32 for s in stored)
        self.dtype = np.dtype(np.float32 if self.float32 else np.float64)
        self.name = name
        # Shards the kernel can read in place: C-contiguous, aligned, native, of its dtype.
        in_place = all(isinstance(p, np.ndarray) and p.flags.c_contiguous and p.flags.aligned
                       and p.dtype.isnative and p.dtype == self.dtype for p in parts)
        self.shards: Optional[list] = list(parts) if in_place else None
        self.files: Optional[list] = None
        spans = [_file_span(p) for p in parts] if in_place and direct is not False else []
        if (spans and all(spans) and len(parts) <= _DIRECT_MAX_FILES
                and (direct or sum(p.nbytes for p in parts) > _direct_limit())):
            self.files = [(path, offset, int(p.shape[0]), *_identity(path))
                          for (path, offset), p in zip(spans, parts)]
        self.chunk_bytes = int(DIRECT_CHUNK_BYTES)
        # One sparse matrix: the kernel reads its CSR arrays itself (csr), and reads only the
        # nonzeros in the passes that cost p^2 per dense row when X is sparse enough.
        self.csr: Optional[tuple] = None
        self.sparse_passes = False
        if len(parts) == 1 and isinstance(parts[0], _SparseRows):
            self.csr = parts[0].arrays()
            # (a column far from 0 relative to its spread, e.g. values near 1e4, would lose
            # more to the expanded centring than rounding: read densely then)
            self.sparse_passes = (parts[0].density <= SPARSE_DENSITY
                                  and parts[0].offset_ratio <= MAX_OFFSET_RATIO)
        self._readers = (None if in_place or self.csr is not None
                         else [_ChunkReader(p, self.dtype) for p in parts])
        # the shards whose readers hold chunks, least recently read first (_use, which each
        # reader calls before it serves a chunk; weakly, so that X is freed with its last use)
        self._live: "collections.OrderedDict[int, None]" = collections.OrderedDict()
        self._live_lock = threading.Lock()
        me = weakref.ref(self)
        for j, reader in enumerate(self._readers or ()):
            reader.on_use = functools.partial(_use_shard, me, j)
        # HDF5 datasets' names, for errors after their file was closed (_part_name)
        self._h5_names = {j: describe(_hdf5_dataset(p)) for j, p in enumerate(parts)
                          if _hdf5_dataset(p) is not None}
        # the memory maps of files that parts lie in (check_mapped_files, before each call)
        self._maps = [(j, *m) for j, m in enumerate(_mapping(p) if isinstance(p, np.ndarray)
                                                    else None for p in parts) if m]
        self._rows_read = 0
        self._lock = threading.Lock()
        self._show = progress
        self._bar: Any = None
        self.origin: Optional[tuple] = None

    # -- what the kernel calls (holding the GIL, from any of its threads)
    def chunk_at(self, begin: int) -> tuple:
        """(rows, first): a C-contiguous array of the kernel's dtype holding row `begin`, whose
        first row is row `first` of X (the kernel copies from it without the GIL)."""
        j = int(np.searchsorted(self._starts, begin, side="right")) - 1
        first = int(self._starts[j])
        try:
            if self._readers is None:
                return self._parts[j], first
            block, start = self._readers[j].chunk_at(begin - first)
            return block, first + start
        except SourceReadError:
            raise
        except Exception as exc:
            lo, hi = (self._readers[j].rows_around(begin - first) if self._readers
                      else (0, self._parts[j].shape[0]))
            raise SourceReadError(
                f"reading rows {first + lo}:{first + hi} of {self.name} "
                f"({self._part_name(j)}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    def read_into(self, begin: int, out: np.ndarray) -> None:
        """Fill `out` (count x d) with rows [begin, begin + count)."""
        end = begin + out.shape[0]
        j = int(np.searchsorted(self._starts, begin, side="right")) - 1
        row = begin
        while row < end:
            lo = row - int(self._starts[j])
            hi = min(end, int(self._starts[j + 1])) - int(self._starts[j])
            self._read_part(j, lo, hi, out[row - begin:row - begin + hi - lo])
            row += hi - lo
            j += 1

    def take_into(self, idx: np.ndarray, out: np.ndarray) -> None:
        """Fill `out` (k x d) with rows idx (in the given order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and np.all(np.diff(idx) == 1) and (  # a run: one read, unless it is
                self._readers is None or len(idx) >= RUN_ROWS  # short and would make a
                or self._held(int(idx[0]), int(idx[-1]) + 1)):  # reader read whole chunks
            self.read_into(int(idx[0]), out)
            return
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        for j in np.unique(shard):
            sel = np.flatnonzero(shard == j)
            local = idx[sel] - self._starts[j]
            try:
                if self._readers is None:
                    out[sel] = self._parts[j][local]
                else:
                    out[sel] = self._readers[j].take(local)
            except Exception as exc:
                rows = idx[sel]
                shown = (f"{int(rows[0])}:{int(rows[-1]) + 1}"  # a run, as passes name it
                         if len(rows) > 1 and np.all(np.diff(rows) == 1) else
                         ", ".join(str(int(i)) for i in rows[:5]) + (" ..." if len(rows) > 5
                                                                     else ""))
                raise SourceReadError(
                    f"reading rows {shown} of {self.name} ({self._part_name(j)}) "
                    f"failed: {type(exc).__name__}: {exc}") from exc

    def _part_name(self, j: int) -> str:
        """Part j as errors name it: an HDF5 dataset whose file was closed says so."""
        dataset = _hdf5_dataset(self._parts[j])
        if dataset is not None and not dataset.id.valid:
            return (f"{self._h5_names[j]}, whose file was closed: keep the file open while X "
                    "is used")
        return _describe_safely(self._parts[j])

    def _use(self, j: int) -> None:
        """Shard j's reader is about to serve a chunk: the readers of shards read less recently
        than the last LIVE_READERS let go of their chunks, so that a pass over many shards
        holds a few shards' chunks, not every shard's."""
        live = self._live
        with self._live_lock:
            if j in live:
                live.move_to_end(j)
                return
            live[j] = None
            while len(live) > LIVE_READERS:
                self._readers[live.popitem(last=False)[0]].release()

    def _held(self, begin: int, end: int) -> bool:
        """Whether rows [begin, end) lie in one shard whose reader holds them already."""
        j = int(np.searchsorted(self._starts, begin, side="right")) - 1
        first = int(self._starts[j])
        return end <= int(self._starts[j + 1]) and self._readers[j].holds(begin - first,
                                                                          end - first)

    def reader_bytes(self) -> int:
        """What the readers hold at once, for the memory checks: the LIVE_READERS largest
        readers' chunks, read-ahead and spare blocks, and one chunk more (one the kernel still
        copies from after its reader let go of it, or a read ahead that finishes after its
        reader let go). 0 where the kernel reads X in place."""
        if not self._readers:
            return 0
        held = sorted((r.held_bytes() for r in self._readers), reverse=True)
        return int(sum(held[:LIVE_READERS]) + max(r.chunk_bytes() for r in self._readers))

    def _read_part(self, j: int, lo: int, hi: int, out: np.ndarray) -> None:
        try:
            if self._readers is None:
                out[...] = self._parts[j][lo:hi]
            else:
                self._readers[j].read_into(lo, hi, out)
        except SourceReadError:
            raise
        except Exception as exc:
            first = int(self._starts[j])
            raise SourceReadError(
                f"reading rows {first + lo}:{first + hi} of {self.name} "
                f"({self._part_name(j)}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    @property
    def progress(self) -> Callable[[int], None]:
        """What the kernel calls with the rows of each block it has read (bound on each
        access: a bound method kept on the object would hold it in a reference cycle, and its
        files and buffers until the garbage collector ran)."""
        return self._count

    def _count(self, rows: int) -> None:
        with self._lock:
            self._rows_read += int(rows)
            if self._bar is not None:
                self._tick(int(rows))

    # -- progress
    @property
    def passes(self) -> float:
        """Passes over X made by the kernel so far (rows read / n)."""
        return self._rows_read / max(self.shape[0], 1)

    def check_mapped_files(self) -> None:
        """Raise SourceReadError when a file X is memory-mapped from was cut short since: reading
        its lost pages would end the process (SIGBUS). (The map's own file is checked, not the
        path: a file replaced at the path leaves the mapped one whole.)"""
        for j, mapped, end in self._maps:
            try:
                size = mapped.size()  # (fstat of the mapped file itself)
            except (OSError, ValueError):
                continue
            if size < end:
                raise SourceReadError(
                    f"{self.name}: {describe(self._parts[j])} was cut short since X was opened "
                    f"(it holds {size} bytes, the map {end}): reading it would crash the "
                    "process; do not write X while it is used, and open it again")

    def show_progress(self, enabled: Optional[bool]) -> "_ProgressScope":
        """A context in which the kernel's passes over this source draw a tqdm bar (None: when
        the source's own setting, else stderr being a terminal, says so); the mapped files
        are checked first (check_mapped_files) unless the kernel reads them past the page
        cache (files), whose reader refuses a file cut short itself."""
        if self.files is None:
            self.check_mapped_files()
        return _ProgressScope(self,
                              _progress.wanted(self._show if enabled is None else enabled))

    def _tick(self, rows: int) -> None:
        """Move the bar: it counts the rows of the current pass and names the pass."""
        bar, n = self._bar, max(self.shape[0], 1)
        done = self._rows_read - self._bar_start
        k = (done - 1) // n + 1 if done else 1
        if k != self._bar_pass:
            self._bar_pass = k
            bar.reset(total=n)
            bar.set_description(f"reading {self.name}, pass {k}")
        bar.update(done - (k - 1) * n - bar.n)

    # -- for Python code that needs X's rows (small checks, the Dask engine)
    def blocks(self, rows: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
        """(begin, rows as an array) for consecutive row blocks, read one ahead."""
        n, d = self.shape
        rows = rows or max(1, READ_BYTES // max(1, d * self.dtype.itemsize))
        self.check_mapped_files()
        for begin in range(0, n, rows):
            out = np.empty((min(rows, n - begin), d), dtype=self.dtype)
            self.read_into(begin, out)
            self._count(len(out))  # a pass like the kernel's: counted, and on the bar
            yield begin, out

    def take(self, idx: Any) -> np.ndarray:
        """Rows idx as an array in memory (k x d, the source's dtype)."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"{self.name}: row indices must lie in [0, {self.shape[0]})")
        out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
        if self.files is None:  # (files read past the page cache refuse a cut file themselves)
            self.check_mapped_files()
        self.take_into(idx, out)
        return out

    def subset(self, begin: int, end: int, *, name: Optional[str] = None) -> "Source":
        """Rows [begin, end) as a Source of their own (no copy: shards are sliced)."""
        n = self.shape[0]
        if not 0 <= begin < end <= n:
            raise ValueError(f"{self.name}: rows [{begin}, {end}) are not a non-empty range "
                             f"of [0, {n})")
        parts = []
        for j, part in enumerate(self._parts):
            lo = max(begin, int(self._starts[j])) - int(self._starts[j])
            hi = min(end, int(self._starts[j + 1])) - int(self._starts[j])
            if hi <= lo:
                continue
            whole = lo == 0 and hi == part.shape[0]
            parts.append(part if whole else part[lo:hi] if isinstance(part, np.ndarray)
                         else part.rows(lo, hi) if isinstance(part, (_SparseRows, _RowRange))
                         else _RowRange(part, lo, hi))
        out = Source(parts, name=name or self.name, progress=self._show,
                     direct=self.files is not None)
        if self.origin is not None:
            shards, first, _ = self.origin
            out.origin = (shards, first + begin, first + end)
        return out

    def edges(self, step: int) -> np.ndarray:
        """Rows at which X can be cut without splitting a stored chunk, in order, ending at n:
        every shard's end, the chunk boundaries of shards read by a reader, and every `step`
        rows within shards read in place."""
        out = set()
        for j in range(len(self._parts)):
            lo, hi = int(self._starts[j]), int(self._starts[j + 1])
            if self._readers is None:  # read in place: any row will do
                inner: Any = range(0, hi - lo, max(1, int(step)))
            else:  # the store's own chunks where it says (a size, or sizes), else the reader's
                rows = getattr(self._parts[j], "chunks", None)
                rows = rows[0] if rows else None
                inner = (range(0, hi - lo, int(rows)) if isinstance(rows, (int, np.integer))
                         else np.cumsum(rows) if isinstance(rows, tuple)
                         else self._readers[j].bounds)
            out.update(lo + int(b) for b in inner)
            out.add(hi)
        out.discard(0)
        return np.asarray(sorted(out), dtype=np.int64)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        kinds = sorted({describe(p) for p in self._parts})
        reading = ", read past the page cache" if self.files is not None else ""
        return (f"Source(shape={self.shape}, dtype={self.dtype.name}, shards={len(self._parts)}, "
                f"{', '.join(kinds[:3])}{reading})")


class _ProgressScope:
    def __init__(self, source: Source, enabled: bool) -> None:
        self.source, self.enabled = source, enabled
        self._scope: Any = None

    def __enter__(self) -> Source:
        if self.enabled:
            s = self.source
            self._scope = _progress.bar(total=s.shape[0], desc=f"reading {s.name}, pass 1",
                                        unit="rows", unit_scale=True)
            bar = self._scope.__enter__()
            with s._lock:
                s._bar = bar
                s._bar_start, s._bar_pass = s._rows_read, 1
        return self.source

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            s = self.source
            with s._lock:
                s._bar = None
            self._scope.__exit__(*exc)


def _hdf5_dataset(part: Any) -> Any:
    """The h5py dataset a part reads (itself, or the one a row range of it reads), else None."""
    array = part.array if isinstance(part, _RowRange) else part
    return array if _module_of(array) == "h5py" else None


def _describe_safely(part: Any) -> str:
    """describe(), for an error message about a part that may be broken (a closed file)."""
    try:
        return describe(part)
    except Exception:
        return type(part).__name__


def describe(part: Any) -> str:
    """A short description of a stored array: its kind and, for files, its path."""
    if isinstance(part, np.ndarray):
        filename = getattr(part, "filename", None)
        base: Any = part
        while filename is None and base is not None:
            filename = getattr(base, "filename", None)
            base = getattr(base, "base", None)
        return f"memory-mapped {filename}" if filename else "array in memory"
    if isinstance(part, _zarr_files.CompressedChunks):
        return f"{describe(part.array)} ({part.where.codec['id']}, read from its chunk files)"
    module = _module_of(part)
    if module == "zarr":
        name = getattr(part, "path", "") or getattr(part, "name", "") or ""
        root = _zarr_files.local_root(getattr(part, "store", None))
        where = (os.path.normpath(os.path.join(root, name.strip("/")))
                 if root is not None else name)
        return f"Zarr array {where}".strip()
    if module == "h5py":
        return f"HDF5 dataset {part.name} in {part.file.filename}"
    if module == "dask":
        return "Dask array"
    return type(part).__name__


class _SparseRows:
    """X as compressed sparse rows (from a SciPy sparse matrix, or from a dense array that is
    mostly zeros: as_sparse()), as a source part: row slices and gathers come back dense (made
    with NumPy alone); the kernel reads the CSR arrays themselves (arrays())."""

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 shape: tuple, original: Any) -> None:
        data = np.asarray(data)
        self.indptr = np.ascontiguousarray(indptr, dtype=np.int64)
        self.indices = np.ascontiguousarray(indices, dtype=np.int32)
        self.data = np.ascontiguousarray(
            data, dtype=data.dtype if data.dtype in (np.float32, np.float64) else np.float64)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(self.data.dtype)
        self.ndim = 2
        self.original = original  # what the caller passed (pickled in its place)
        n, d = self.shape
        if (len(self.indptr) != n + 1 or (n and self.indptr[0] != 0)
                or self.indptr[-1] != len(self.indices) or len(self.data) != len(self.indices)
                or np.any(np.diff(self.indptr) < 0)):
            raise ValueError("X: the sparse matrix's row pointers do not match its entries")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= d):
            raise ValueError(f"X: the sparse matrix has column indices outside [0, {d}) "
                             "(scipy does not check them): repair the matrix")
        self.density = len(self.data) / max(1, n * d)
        self.offset_ratio = self._offset_ratio()

    def _offset_ratio(self) -> float:
        """max over columns of mean^2 / variance: how much the sparse passes' expanded
        centring (S - c s^T - s c^T + A c c^T) loses to cancellation, relative to the dense
        passes, which centre each row (inf for a constant nonzero column)."""
        n, d = self.shape
        if not len(self.data) or n < 2:
            return 0.0
        v = self.data.astype(np.float64)
        # (NaN or inf in X, named by the passes, make NaN here without NumPy's warnings)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mean = np.bincount(self.indices, weights=v, minlength=d) / n
            var = np.bincount(self.indices, weights=v * v, minlength=d) / n - mean ** 2
            ratio = np.where(mean != 0, mean ** 2 / np.maximum(var, 0.0), 0.0)
        return float(np.nanmax(np.where(np.isnan(ratio), np.inf, ratio)))

    @classmethod
    def of_scipy(cls, matrix: Any) -> "_SparseRows":
        csr = matrix.tocsr()
        if csr.dtype not in (np.float64, np.float32):
            csr = csr.astype(np.float64)
        if not csr.has_canonical_format:  # sorted columns without repeats; the caller's is kept
            csr = csr.copy()
            csr.sum_duplicates()
        return cls(csr.indptr, csr.indices, csr.data, csr.shape, matrix)

    @classmethod
    def of_dense(cls, X: np.ndarray) -> "_SparseRows":
        rows, cols = np.nonzero(X)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=X.shape[0]))])
        return cls(indptr, cols, X[rows, cols], X.shape, X)

    def arrays(self) -> tuple:
        """(row starts int64, columns int32, values), as the kernel reads them."""
        return self.indptr, self.indices, self.data

    def rows(self, lo: int, hi: int) -> "_SparseRows":
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return _SparseRows(self.indptr[lo:hi + 1] - a, self.indices[a:b], self.data[a:b],
                           (hi - lo, self.shape[1]), None)

    def _dense(self, idx: np.ndarray) -> np.ndarray:
        starts, ends = self.indptr[idx], self.indptr[idx + 1]
        counts = ends - starts
        out = np.zeros((len(idx), self.shape[1]), dtype=self.dtype)
        if counts.sum():
            row = np.repeat(np.arange(len(idx)), counts)
            at = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            out[row, self.indices[at]] = self.data[at]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return self._dense(np.arange(self.shape[0])[key])
        return self._dense(np.asarray(key, dtype=np.int64).reshape(-1))

    def __repr__(self) -> str:
        return (f"sparse matrix {self.shape[0]} x {self.shape[1]}, {len(self.data)} nonzeros "
                f"({self.dtype})")


def as_sparse(X: np.ndarray, *, name: str = "X") -> "Source":
    """A dense array that is mostly zeros (a bag of words) as a sparse Source, so that the
    passes read only its nonzeros (NumPy only, no SciPy needed); X itself is kept unchanged."""
    return Source([_SparseRows.of_dense(np.asarray(X))], name=name)


def sparse_enough(X: Any) -> bool:
    """Whether X is a dense array in memory with at most SPARSE_DENSITY nonzeros, for which
    the sparse passes (as_sparse) cost less than the dense ones."""
    return (isinstance(X, np.ndarray) and X.ndim == 2 and X.size > 0
            and X.dtype in (np.float64, np.float32)
            and np.count_nonzero(X) <= SPARSE_DENSITY * X.size)


class _RowRange:
    """Rows [lo, hi) of a stored array, sliceable like one (Source.subset of a Zarr, HDF5 or
    Dask source)."""

    def __init__(self, array: Any, lo: int, hi: int) -> None:
        self.array, self.lo, self.hi = array, lo, hi
        self.shape = (hi - lo, int(array.shape[1]))
        self.dtype = np.dtype(array.dtype)
        self.ndim = 2
        # the store's chunks met by the range, as sizes, so that its reader keeps to them
        rows = getattr(array, "chunks", None)
        rows = rows[0] if rows else None
        self.chunks: Optional[tuple] = None
        if isinstance(rows, (int, np.integer)) and rows > 0:
            cuts = [lo] + list(range((lo // rows + 1) * rows, hi, rows)) + [hi]
            self.chunks = (tuple(b - a for a, b in zip(cuts[:-1], cuts[1:])),)

    def rows(self, lo: int, hi: int) -> "_RowRange":
        """Its rows [lo, hi), as a range of the stored array itself (its chunks kept)."""
        return _RowRange(self.array, self.lo + lo, self.lo + hi)

    def take_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (sorted) of the range, gathered as the stored array gathers them."""
        return _gather(self.array, np.asarray(rows, dtype=np.int64) + self.lo)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("rows of a range are read by slices")
        a, b, _ = key.indices(self.shape[0])
        block = self.array[self.lo + a:self.lo + b]
        return np.asarray(block.compute() if _module_of(block) == "dask" else block)


def _local_refs() -> int:
    """sys.getrefcount of an object that one local alone holds (2 in CPython: the local and
    the call's argument; an interpreter that counts fewer gives fewer)."""
    alone = object()
    return sys.getrefcount(alone)


_LOCAL_REFS = _local_refs()


class _ChunkReader:
    """Reads one stored array in whole chunks of its own layout (Zarr / HDF5 chunks, Dask
    blocks, or about READ_BYTES otherwise), one chunk ahead of the caller on a thread of its
    own (or `read_ahead` chunks ahead on as many threads, where the array says so); serves any
    row range from the chunks it holds (at most read_ahead + 2: those being read, those read
    ahead, and the last one used)."""

    def __init__(self, array: Any, dtype: np.dtype) -> None:
        self.array, self.dtype = array, dtype
        n, d = int(array.shape[0]), int(array.shape[1])
        self.bounds = _chunk_bounds(array, n, d)
        self.kind = _module_of(array)
        self._chunks: "collections.OrderedDict[int, Future]" = collections.OrderedDict()
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        # chunks read ahead, each on a thread of its own: more than one where reading costs
        # computation that releases the GIL (decoding compressed chunk files)
        self._ahead = max(1, int(getattr(array, "read_ahead", 1)))
        self._keep = self._ahead + 2
        # blocks to read into again, where the array fills them itself in the kernel's dtype
        self._fill = (getattr(array, "read_rows", None)
                      if np.dtype(array.dtype) == dtype else None)
        self._spare: list = []
        self.on_use: Optional[Callable[[], None]] = None  # called before a chunk is served

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._ahead,
                                            thread_name_prefix="rif-read")
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def _load(self, c: int) -> np.ndarray:
        lo, hi = int(self.bounds[c]), int(self.bounds[c + 1])
        if self._fill is not None:
            block = self._spare_block(hi - lo)
            self._fill(lo, hi, block)
            return block
        block = self.array[lo:hi]
        if self.kind == "dask":
            block = block.compute()
        block = np.ascontiguousarray(block, dtype=self.dtype)  # the kernel's dtype, native
        if block.shape != (hi - lo, self.array.shape[1]):
            raise ValueError(f"rows {lo}:{hi} came back with shape {block.shape}")
        return block

    def _chunk(self, c: int) -> Future:
        """The chunk's future (started now if it was not held), with the next one requested."""
        if self.on_use is not None:  # (before this reader's lock: Source._use takes others')
            self.on_use()
        with self._lock:
            fut = self._chunks.get(c)
            if fut is None:
                fut = self._executor().submit(self._load, c)
                self._chunks[c] = fut
            self._chunks.move_to_end(c)
            for nxt in range(c + 1, min(c + 1 + self._ahead, len(self.bounds) - 1)):
                if nxt not in self._chunks:
                    self._chunks[nxt] = self._executor().submit(self._load, nxt)
            while len(self._chunks) > self._keep:
                self._recycle(self._chunks.popitem(last=False)[1])
        return fut

    def _spare_block(self, rows: int) -> np.ndarray:
        """A block of `rows` rows to read into: one the reader let go of, else a new one (a
        block reused costs no page faults: about 0.4 ms per MiB on this project's machine)."""
        with self._lock:
            for k, block in enumerate(self._spare):
                if block.shape[0] == rows:
                    return self._spare.pop(k)
        return np.empty((rows, int(self.array.shape[1])), dtype=self.dtype)

    def _recycle(self, fut: Future) -> None:
        """Keep the block of a chunk let go of for the next read, if nothing else holds it or
        its future (a caller between _chunk() and result(), the kernel copying from it):
        with the GIL, a reference count at its floor cannot grow again. The floor is what a
        local alone gives (_LOCAL_REFS), plus the future's own reference for the block."""
        if (self._fill is None or not fut.done() or fut.cancelled()
                or fut.exception() is not None or len(self._spare) >= self._ahead):
            return
        block = fut.result()
        if (sys.getrefcount(fut) == _LOCAL_REFS
                and sys.getrefcount(block) == _LOCAL_REFS + 1):
            self._spare.append(block)

    def release(self) -> None:
        """Let go of the chunks held and the spare blocks; a read after this reads again. (A
        chunk a caller has asked for stays with that caller; reads ahead already started are
        not cancelled, since a caller may be waiting for one: they finish and are dropped.)"""
        with self._lock:
            self._chunks.clear()
            self._spare.clear()

    def holds(self, lo: int, hi: int) -> bool:
        """Whether rows [lo, hi) lie in chunks this reader holds, read."""
        first = int(np.searchsorted(self.bounds, lo, side="right")) - 1
        last = int(np.searchsorted(self.bounds, hi - 1, side="right")) - 1
        with self._lock:
            return all(c in self._chunks and self._chunks[c].done()
                       for c in range(first, last + 1))

    def held_bytes(self) -> int:
        """The most this reader holds at once: the chunks it keeps (read_ahead + 2, at most
        as many as it has) and, where it has more chunks than that and the array fills blocks
        itself (chunk files decoded by _zarr_files), as many spare blocks as it reads ahead."""
        count = len(self.bounds) - 1
        spares = self._ahead if self._fill is not None and count > self._keep else 0
        return (min(self._keep, count) + spares) * self.chunk_bytes()

    def chunk_bytes(self) -> int:
        """The largest chunk's bytes in the kernel's dtype."""
        rows = int(np.max(np.diff(self.bounds))) if len(self.bounds) > 1 else 0
        return rows * int(self.array.shape[1]) * int(self.dtype.itemsize)

    def rows_around(self, row: int) -> tuple:
        """[first, end) of the chunk holding `row`."""
        c = int(np.searchsorted(self.bounds, row, side="right")) - 1
        return int(self.bounds[c]), int(self.bounds[c + 1])

    def chunk_at(self, row: int) -> tuple:
        """(the chunk holding `row`, its first row)."""
        c = int(np.searchsorted(self.bounds, row, side="right")) - 1
        return self._chunk(c).result(), int(self.bounds[c])

    def read_into(self, lo: int, hi: int, out: np.ndarray) -> None:
        c = int(np.searchsorted(self.bounds, lo, side="right")) - 1
        row = lo
        while row < hi:
            start, stop = int(self.bounds[c]), int(self.bounds[c + 1])
            block = self._chunk(c).result()
            end = min(hi, stop)
            out[row - lo:end - lo] = block[row - start:end - start]
            row = end
            c += 1

    def take(self, local: np.ndarray) -> np.ndarray:
        order = np.argsort(local, kind="stable")
        got = _gather(self.array, local[order])
        out = np.empty_like(got)
        out[order] = got
        return out


def _gather(array: Any, rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (sorted, repeats allowed) of a stored array, gathered as its library gathers
    them (or as the array says, take_rows), else one row slice at a time."""
    taker = getattr(array, "take_rows", None)
    if taker is not None:
        return taker(rows)
    kind = _module_of(array)
    if kind == "zarr":
        return np.asarray(array.oindex[rows, :])
    if kind == "h5py":
        uniq, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(array[uniq])[inverse]
    if kind == "dask":
        return np.asarray(array[rows].compute())
    return np.stack([np.asarray(array[int(i):int(i) + 1])[0] for i in rows])


def _chunk_bounds(array: Any, n: int, d: int) -> np.ndarray:
    """Row boundaries of the reads: the store's own chunks, merged up to about READ_BYTES."""
    itemsize = np.dtype(array.dtype).itemsize
    target = max(1, READ_BYTES // max(1, d * itemsize))
    chunks = getattr(array, "chunks", None)
    if chunks and isinstance(chunks[0], tuple):  # chunk sizes (Dask blocks, a _RowRange's):
        bounds = [0]  # whole ones, small ones merged up to the target
        for size in (int(c) for c in chunks[0]):
            if len(bounds) > 1 and bounds[-1] - bounds[-2] + size <= target:
                bounds[-1] += size
            else:
                bounds.append(bounds[-1] + size)
        return np.asarray(bounds, dtype=np.int64)
    step = int(chunks[0]) if chunks and isinstance(chunks[0], (int, np.integer)) else target
    step = step * max(1, target // step)  # whole store chunks, about READ_BYTES a read
    return np.asarray(list(range(0, n, step)) + [n], dtype=np.int64)


#: Shards whose readers hold chunks at once (Source._use): two beyond the most threads the
#: kernel runs (its cores), as its threads may each read a shard of their own (a pass whose
#: threads take fixed ranges of X) and a block may span two shards.
LIVE_READERS = max(4, int(_core.build_info()["max_threads"]) + 2)

#: Runs of rows gathered (Source.take_into) shorter than this are read alone, through the
#: store's library, unless a reader holds their chunk: one row must not cost a whole chunk.
RUN_ROWS = 4096


def _use_shard(source: "weakref.ref[Source]", j: int) -> None:
    live = source()
    if live is not None:
        live._use(j)


#: The most chunk files an uncompressed Zarr array may have to be mapped in place (and at most
#: half of the open files the process may hold: each map holds a file descriptor).
MAX_MAPPED_CHUNKS = 10000


def _descriptors() -> int:
    """The files this process may hold open (each mapped chunk file holds one)."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 2 * MAX_MAPPED_CHUNKS
    return 2 * MAX_MAPPED_CHUNKS if soft == resource.RLIM_INFINITY else int(soft)


def _in_place_parts(part: Any) -> list:
    """A part as parts the kernel reads from their files where it can (Zarr chunk files)."""
    if _module_of(part) == "zarr":
        parts = _zarr_files.in_place_parts(part, min(MAX_MAPPED_CHUNKS, _descriptors() // 2))
        if parts:
            return parts
    return [part]


def _two_d_members(group: Any) -> list:
    """The names of a Zarr or HDF5 group's 2-D arrays, at any depth."""
    if _module_of(group) == "zarr":
        return [k for k, v in group.members(max_depth=None) if len(getattr(v, "shape", ())) == 2]
    found: list = []
    group.visititems(lambda k, v: found.append(k) if len(getattr(v, "shape", ())) == 2 else None)
    return found


def _not_an_array(obj: Any, name: str) -> str:
    """Why obj (without a shape) cannot be X: a group names its 2-D arrays."""
    kind = {"zarr": "a Zarr", "h5py": "an HDF5"}.get(_module_of(obj))
    if kind is None or not hasattr(obj, "keys"):
        return (f"{name} must be an array (NumPy, Zarr, h5py, Dask), a .npy path or a list of "
                f"them, got {type(obj).__name__}")
    arrays = _two_d_members(obj)
    shown = ", ".join(repr(k) for k in arrays[:5]) + (", ..." if len(arrays) > 5 else "")
    return (f"{name} is {kind} group, not an array: pass the array that is {name}, "
            f"group[NAME] (its 2-D arrays: {shown or 'none'})")


def open_source(X: Any, *, name: str = "X", progress: Optional[bool] = None) -> Source:
    """X (see the module's docstring) as a Source; a Source is returned as it is. An
    uncompressed Zarr array in a local folder is read in place from its chunk files, and a
    compressed one from its chunk files by the reader (``_zarr_files``)."""
    if isinstance(X, Source):
        return X
    items = list(X) if isinstance(X, (list, tuple)) else [X]
    parts = []
    for s in items:
        if not isinstance(s, (str, os.PathLike)) and not hasattr(s, "shape"):
            raise TypeError(_not_an_array(s, name))
        if _is_sparse(s):
            s = _SparseRows.of_scipy(s)
        parts.extend(_in_place_parts(_open_npy(s) if isinstance(s, (str, os.PathLike)) else s))
    out = Source(parts, name=name, progress=progress)
    out.origin = ([os.path.abspath(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else s
                   for s in items], 0, out.shape[0])  # paths absolute: read elsewhere later
    return out


def as_kernel_input(X: Any, *, progress: Optional[bool] = None) -> Any:
    """X as the kernel takes it: a Source for sources, X itself otherwise."""
    return open_source(X, progress=progress) if is_source_like(X) else X


def matvec(source: Source, theta: np.ndarray, fit_intercept: bool) -> np.ndarray:
    """z = X theta (theta (p,) or (p, m)), block by block."""
    d = source.shape[1]
    theta = np.asarray(theta, dtype=np.float64)
    out = np.empty((source.shape[0],) + theta.shape[1:])
    for begin, rows in source.blocks():
        z = rows @ theta[:d]
        if fit_intercept:
            z += theta[d]
        out[begin:begin + len(rows)] = z
    return out
