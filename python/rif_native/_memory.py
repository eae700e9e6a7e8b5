"""Memory checked before it is asked for.

Each call estimates what the native kernel will allocate (the Hessian and its factor, panels,
per-set buffers, outputs) and compares it with what the process can still get: the machine's
available memory, a cgroup limit, an address-space limit (``ulimit -v``), or a cap that the user
sets with ``max_memory=`` or the ``RIF_MAX_MEMORY`` environment variable. Over budget is a
``MemoryError`` that says how much is needed and what to do, raised before any work starts.
"""

from __future__ import annotations

import functools
import os
import re
import resource
from typing import Optional, Union

MemorySize = Union[int, float, str, None]

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}
_DOUBLE = 8
_UNCHECKED_BYTES = 64 * 2**20  # needs not checked against the system (see require)


#: glibc's mallopt parameters (malloc.h) and the values retain_freed_memory sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 1 << 30, 512 << 20


def retain_freed_memory() -> bool:
    """Make the C library's malloc keep freed memory for reuse in this process (glibc only).

    By default glibc gives large blocks their own memory maps and returns them to the system
    when they are freed, so the next attribution of the same size faults every page in again:
    at DogFish's shape (1800 x 2048, the dual path) about 19,500 page faults and 35 ms of a
    170 ms call, each time. After this call, blocks under 512 MiB (32 MiB on glibc before
    2.35; in threads other than the main one, under their 64 MiB heaps) come from the heap, and
    up to 1 GiB free at its top stays mapped, so repeated calls reuse their pages. It is process-wide
    (NumPy's arrays included) and cannot be undone; the ``rif`` command does it at start, and
    ``rif benchmark`` in its timing processes, for every contender alike. Returns whether it
    applied (False where the C library is not glibc).
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Older glibc caps the mmap threshold at 32 MiB (half its heap size) and refuses more. The
    # trim threshold is set only once an mmap threshold took: setting it alone would freeze
    # the mmap threshold at its 128 KiB start, worse than glibc's default.
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES) or mallopt(_M_MMAP_THRESHOLD, 32 << 20)):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def parse_size(value: MemorySize, name: str = "max_memory") -> Optional[int]:
    """Bytes from an int / float or a string such as '4G', '512MiB', '2.5e9'; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number of bytes or a size such as '4G', got bool")
    if isinstance(value, (int, float)):
        size = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{name} must be a size such as '4G', '512M' or a number of bytes, "
                             f"got {value!r}")
        size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise TypeError(f"{name} must be a number of bytes or a size such as '4G', got "
                        f"{type(value).__name__}")
    if not size > 0 or size != size or size == float("inf"):
        raise ValueError(f"{name} must be a positive size, got {value!r}")
    return int(size)


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _meminfo_available() -> Optional[int]:
    text = _read("/proc/meminfo")
    m = re.search(r"^MemAvailable:\s+(\d+) kB", text or "", re.M)
    return int(m.group(1)) * 1024 if m else None


def _cgroup_available() -> Optional[int]:
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit is None:  # cgroup v1
        limit = _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        used = _read("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    try:
        lim = int(limit.strip())  # "max" (no limit) fails here
        return max(0, lim - int((used or "0").strip())) if lim < 2**60 else None
    except (AttributeError, ValueError):
        return None


def _address_space_available() -> Optional[int]:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    m = re.search(r"^VmSize:\s+(\d+) kB", _read("/proc/self/status") or "", re.M)
    used = int(m.group(1)) * 1024 if m else 0
    return max(0, soft - used)


def available() -> tuple[Optional[int], str]:
    """(bytes this process can still allocate, where that figure comes from); None if unknown."""
    found = [(v, what) for v, what in ((_meminfo_available(), "available memory"),
                                       (_cgroup_available(), "the cgroup's memory limit"),
                                       (_address_space_available(), "the address-space limit "
                                                                    "(ulimit -v)"))
             if v is not None]
    return min(found) if found else (None, "unknown")


def budget(max_memory: MemorySize = None) -> tuple[Optional[int], str]:
    """The bytes a call may use: max_memory, else RIF_MAX_MEMORY, else what is available."""
    if max_memory is not None:
        return parse_size(max_memory), "max_memory"
    env = os.environ.get("RIF_MAX_MEMORY")
    if env:
        return parse_size(env, "the RIF_MAX_MEMORY environment variable"), "RIF_MAX_MEMORY"
    return available()


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.3g} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.3g} MiB"


def require(nbytes: float, what: str, advice: str, max_memory: MemorySize = None) -> None:
    """Raise MemoryError when `what` needs more than the budget (see budget()).

    Without a cap from the caller, needs up to 64 MiB are not checked against the system:
    reading it costs about 0.18 ms (/proc and the cgroup's files), 1% of an attribution at
    ESC-50's shape, and a process that cannot get 64 MiB fails at its next allocation anyway.
    """
    if nbytes <= _UNCHECKED_BYTES and max_memory is None and not os.environ.get("RIF_MAX_MEMORY"):
        return
    limit, source = budget(max_memory)
    if limit is not None and nbytes > limit:
        raise MemoryError(
            f"{what} needs about {_gib(nbytes)} but {source} allows {_gib(limit)}: {advice} "
            "(max_memory= or RIF_MAX_MEMORY sets the cap)")


# ------------------------------------------------------------------------- per-call estimates


_PARTIAL_DOUBLES = 2**25  # kPartialDoubles in cpp/include/rif/blas.hpp
_FILE_SLOTS = 4  # FileSource's chunk buffers (cpp/include/rif/file_source.hpp)


def partial_sums(n: int, p: int, threads: int, sums: int = 1) -> int:
    """Doubles of the per-thread partial sums a pass keeps: `sums` p x p sums per thread beyond
    the first when each thread calls the BLAS on its own blocks (kernel_plan in
    cpp/src/blas.cpp: always without OpenBLAS, below p = 1024, or from n = 32 p within 2**25
    doubles). `threads` is the most the call may use: with fewer (the idle cores, by default)
    the sums may fit under the cap where these do not, so from p = 1024 this counts the most
    that fit."""
    each = sums * p * p
    if p < 1024 or not _openblas():
        return (threads - 1) * each
    return min(threads - 1, _PARTIAL_DOUBLES // max(each, 1)) * each if n >= 32 * p else 0


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def _row_blocks(n: int, p: int, threads: int, per_row: Optional[int] = None) -> float:
    """A pass's row blocks, `per_row` doubles for each row (default p: one copy of the rows)
    in every block slot, as kernel_plan in cpp/src/blas.cpp sizes them. With OpenBLAS below
    p = 1024, one slot per thread of 2**20 / p rows (64 to 8192, at most n / threads); from
    p = 1024 the plan depends on the threads the call gets, so this takes the larger of that
    and one slot of 2**21 / p rows (256 to 8192) that OpenBLAS's threads share. Without
    OpenBLAS, one slot per thread of 2**18 / p rows (32 to 4096)."""
    n, p, threads = max(n, 1), max(p, 1), max(threads, 1)

    def rows(each: int, count: int) -> int:
        if count > 1:
            each = min(each, max(32, -(-n // count)))
        return count * min(each, n)

    if not _openblas():
        held = rows(_clamp(2**18 // p, 32, 4096), threads)
    else:
        held = rows(_clamp(2**20 // p, 64, 8192), threads)
        if p >= 1024:
            held = max(held, rows(_clamp(2**21 // p, 256, 8192), 1))
    return float(_DOUBLE * held * (p if per_row is None else per_row))


def softmax_pass_bytes(n: int, p: int, m: int, threads: int) -> float:
    """The peak of one multinomial Hessian pass (cpp/src/softmax.cpp): every slot's
    m (m + 1) / 2 p x p pair blocks while the rows are read, then their sum with the q x q
    result being assembled, then that result with its NumPy copy. Each block slot holds its
    rows twice (as read and scaled) and per row the logits and residuals (K each), the pair
    weights and two m-column products."""
    pairs, q = m * (m + 1) // 2, m * p
    slots = pairs * p * p + partial_sums(n, p, threads, pairs)
    return (_DOUBLE * max(slots + 2 * p * p, pairs * p * p + q * q, 2 * q * q)
            + _row_blocks(n, p, threads, 2 * p + 2 * (m + 1) + pairs + 2 * m))


def softmax_quadforms_bytes(n: int, p: int, m: int, threads: int) -> float:
    """The multinomial leverage pass beyond the H and H^{-1} the caller holds (the kernel
    reads H^{-1} in place): the m (m + 1) / 2 pair factors, the block being factored and its
    reversal, and two row blocks per thread."""
    pairs = m * (m + 1) // 2
    return _DOUBLE * (pairs + 2) * p * p + _row_blocks(n, p, threads, 2 * p)


@functools.lru_cache(maxsize=1)
def _openblas() -> bool:
    from . import _core

    return str(_core.build_info()["blas"]).startswith("OpenBLAS")


def _hessian_sums(precision: str) -> int:
    """The p x p sums a binary Hessian pass keeps per thread (hessian_sums in
    cpp/src/linalg.cpp): one, and with float32 products also their float32 sum."""
    return 2 if precision == "mixed" else 1


def source_bytes(X: object) -> float:
    """What a source's readers hold during a pass besides the kernel's row blocks: for files
    read past the page cache (Source.files), the four chunk buffers of cpp/src/file_source.cpp,
    each holding one chunk at a time (so together at most the files' size); for stores read
    in chunks (HDF5, compressed Zarr, Dask, ...), Source.reader_bytes. Arrays and files read
    in place: nothing beyond the row blocks."""
    files = getattr(X, "files", None)
    if not files:
        readers = getattr(X, "reader_bytes", None)
        return float(readers()) if readers is not None else 0.0
    row = int(X.shape[1]) * int(X.dtype.itemsize)
    total = sum(int(f[2]) for f in files) * row
    chunk = max(row, int(X.chunk_bytes) // row * row)
    return float(min(_FILE_SLOTS * chunk, total) + _FILE_SLOTS * 2 * 4096)


def attribution_bytes(n: int, p: int, threads: int, precision: str = "double") -> float:
    """H, its factor and (when n >= 3p) the inverse factor, partial sums, row blocks (each
    slot's float64 rows and, with float32 products or from a source, their float32 copy or the
    rows as read: two copies counted), per-sample vectors."""
    factors = ((3 if n >= 3 * p and p <= 6144 else 2) * p * p
               + partial_sums(n, p, threads, _hessian_sums(precision)))
    return _DOUBLE * (factors + 8 * n) + _row_blocks(n, p, threads, 2 * p)


def fit_bytes(n: int, p: int, threads: int, precision: str = "double") -> float:
    """One Hessian factored in place, partial sums, row blocks (as for attribution_bytes),
    per-sample vectors."""
    return (_DOUBLE * (p * p + partial_sums(n, p, threads, _hessian_sums(precision)) + 8 * n)
            + _row_blocks(n, p, threads, 2 * p))


def sets_bytes(p: int, sizes: list, woodbury_limit: int, retrain: bool, threads: int) -> float:
    """Newton steps or retraining for sets of the given sizes: the Woodbury panel of the small
    sets and their k x k systems, a fresh p x p factor per large set (retraining holds them all,
    Newton steps one per thread), and the per-set vectors (retraining: iterates, gradients and
    the Anderson history, about 16 per set)."""
    small = [k for k in sizes if k <= woodbury_limit]
    large = len(sizes) - len(small)
    panel = p * (sum(small) + len(small)) + sum(k * k for k in small)
    per_set = (16 if retrain else 2) * p * len(sizes)
    factors = (large if retrain else min(large, threads)) * 2 * p * p
    return _DOUBLE * (panel + per_set + factors)


ADVICE_FACTOR = ("use fewer features (e.g. a PCA of the embeddings), float32 X does not help "
                 "here: the p x p factors dominate; or a machine with more memory")
ADVICE_SAMPLES = ("most of it is per-sample vectors (64 bytes a sample), which fewer features "
                  "or float32 X do not shrink: a machine with more memory")
ADVICE_BLOCKS = ("most of it is the passes' row blocks, one set per thread: fewer threads "
                 "(num_threads=), or a machine with more memory")


def advice_for_shape(n: int, p: int, threads: int, precision: str = "double") -> str:
    """The advice for the largest part of an attribution's or fit's need (attribution_bytes):
    the p x p matrices (ADVICE_FACTOR), the per-sample vectors or, on several threads, the
    row blocks (one thread's are the least a pass holds)."""
    parts = {ADVICE_FACTOR: 3 * p * p + partial_sums(n, p, threads, _hessian_sums(precision)),
             ADVICE_SAMPLES: 8 * n,
             ADVICE_BLOCKS: _row_blocks(n, p, threads, 2 * p) / _DOUBLE if threads > 1 else 0}
    return max(parts, key=parts.__getitem__)


ADVICE_READERS = ("X's store is read in whole chunks of its own layout, merged up to "
                  "rif_native.sources.READ_BYTES (32 MiB by default) a read, and those held by its "
                  "readers are most of the need: set sources.READ_BYTES lower before opening X (a "
                  "store chunk larger than that is still read whole: zarr / h5py chunks of a "
                  "few MiB), or store X as .npy files, which are read in place")


def advice_for(X: object, nbytes: float, advice: str) -> str:
    """`advice`, or ADVICE_READERS where X's readers hold more than half of `nbytes`."""
    return ADVICE_READERS if source_bytes(X) > 0.5 * nbytes else advice


ADVICE_SETS = "pass fewer or smaller sets per call (loop over batches)"
ADVICE_ROWS = ("ask for fewer samples at a time (indices=...), or write the rows to a file "
               "block by block (out='rows.npy')")
