"""Zarr arrays in a local folder, read from their chunk files rather than through zarr-python.

A Zarr array whose chunks span whole rows, in C order, of little-endian float32 or float64, is
a sequence of row blocks, one file each. Uncompressed, each file is a plain block, which the
kernel reads in place through a memory map (:func:`mapped_chunks`). Compressed with one of the
usual compressors (zstd, Blosc, gzip, ...; no filters), each file is decoded by numcodecs
straight into the reader's block (:class:`CompressedChunks`), with the GIL released while it
decodes: zarr-python's own read path costs about twice as much per byte here (its chunk
assembly and fresh buffers), and that cost is paid on the same cores as the arithmetic. Any
other layout (chunked across columns, filtered, sharded, transposed, remote) is left to
zarr-python (``None`` below), as is a chunk that was never written (all fill value).
"""

from __future__ import annotations

import json
import mmap
import os
import threading
from typing import Any, Optional

import numpy as np

#: Chunks a reader decodes ahead of the computation, each on a thread of its own.
READ_AHEAD = 2

#: Compressors of Zarr format 3 decoded here (their names in zarr.json are numcodecs ids).
_V3_COMPRESSORS = {"zstd", "blosc", "gzip"}

#: Compressors of Zarr format 2 decoded here (numcodecs ids).
_V2_COMPRESSORS = {"zstd", "blosc", "lz4", "gzip", "zlib", "bz2", "lzma"}


class Layout:
    """Where a Zarr array's chunk files are and what they hold: `rows` rows of width `d` per
    file, of `dtype`, compressed by `codec` ({"id": ...} for numcodecs) or plain (None)."""

    def __init__(self, folder: str, n: int, d: int, rows: int, dtype: np.dtype,
                 prefix: str, sep: str, codec: Optional[dict]) -> None:
        self.folder, self.n, self.d, self.rows = folder, n, d, rows
        self.dtype, self.prefix, self.sep, self.codec = dtype, prefix, sep, codec

    @property
    def count(self) -> int:
        """Number of chunks (the last may be padded past n)."""
        return -(-self.n // self.rows)

    @property
    def chunk_bytes(self) -> int:
        """Bytes of one decoded chunk (the last is stored whole too, padded)."""
        return self.rows * self.d * self.dtype.itemsize

    def path(self, i: int) -> str:
        return os.path.join(self.folder, *f"{self.prefix}{i}{self.sep}0".split("/"))


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _v3_layout(meta: dict) -> Optional[tuple]:
    """(rows, width, dtype, prefix, sep, codec) of a format-3 array, or None."""
    grid = meta.get("chunk_grid", {})
    codecs = meta.get("codecs", [])
    if (grid.get("name") != "regular" or not codecs or meta.get("storage_transformers")
            or meta.get("data_type") not in ("float32", "float64")
            or codecs[0].get("name") != "bytes"
            or codecs[0].get("configuration", {}).get("endian", "little") != "little"):
        return None
    if len(codecs) == 1:
        codec = None
    elif len(codecs) == 2 and codecs[1].get("name") in _V3_COMPRESSORS:
        codec = {"id": codecs[1]["name"]}
    else:  # filters, transpose, sharding, checksums: zarr-python's
        return None
    rows, width = grid["configuration"]["chunk_shape"]
    encoding = meta.get("chunk_key_encoding", {})
    default = encoding.get("name", "default") == "default"
    sep = encoding.get("configuration", {}).get("separator", "/" if default else ".")
    prefix = f"c{sep}" if default else ""
    dtype = np.dtype("<f4" if meta["data_type"] == "float32" else "<f8")
    return rows, width, dtype, prefix, sep, codec


def _v2_layout(meta: dict) -> Optional[tuple]:
    """(rows, width, dtype, prefix, sep, codec) of a format-2 array, or None."""
    codec = meta.get("compressor")
    if (meta.get("filters") or meta.get("order") != "C"
            or meta.get("dtype") not in ("<f4", "<f8")
            or (codec is not None and codec.get("id") not in _V2_COMPRESSORS)):
        return None
    rows, width = meta["chunks"]
    return rows, width, np.dtype(meta["dtype"]), "", meta.get("dimension_separator") or ".", codec


def local_root(store: Any) -> Optional[str]:
    """The folder of a store on this machine's file system: a LocalStore's root, or the path
    of an fsspec store on the local file system (what ``dask.array.from_zarr(path)`` and
    ``zarr.open_array("file://...")`` open); None for any other store."""
    root = getattr(store, "root", None)
    if root is not None:
        return os.fspath(root)
    if type(store).__name__ != "FsspecStore":
        return None
    protocol = getattr(getattr(store, "fs", None), "protocol", ())
    protocol = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    path = getattr(store, "path", None)
    return path if isinstance(path, str) and ("file" in protocol or "local" in protocol) else None


def layout(z: Any) -> Optional[Layout]:
    """The chunk files of a 2-D Zarr array in a local folder, when each holds whole rows in
    C order that this module can read (see the module's docstring); else None."""
    try:
        root = local_root(z.store)
        if root is None or len(z.shape) != 2:
            return None
        folder = os.path.join(root, z.path or "")
        n, d = int(z.shape[0]), int(z.shape[1])
        v3 = os.path.join(folder, "zarr.json")
        found = (_v3_layout(_read_json(v3)) if os.path.isfile(v3)
                 else _v2_layout(_read_json(os.path.join(folder, ".zarray"))))
        if found is None:
            return None
        rows, width, dtype, prefix, sep, codec = found
        if width != d or rows < 1:
            return None
        return Layout(folder, n, d, int(rows), dtype, prefix, sep, codec)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def mapped_chunks(z: Any, max_files: int, where: Optional[Layout] = None) -> Optional[list]:
    """An uncompressed Zarr array as memory maps of its chunk files (rows of whole chunks),
    which the kernel reads in place like .npy shards; None when it is anything else, has more
    than max_files chunks, or a chunk was never written."""
    where = where or layout(z)
    if where is None or where.codec is not None or where.count > max_files:
        return None
    maps = []
    try:
        for i in range(where.count):
            path = where.path(i)
            if not os.path.isfile(path) or os.path.getsize(path) != where.chunk_bytes:
                return None
            block = np.memmap(path, dtype=where.dtype, mode="r", shape=(where.rows, where.d))
            maps.append(block[:min(where.rows, where.n - i * where.rows)])
    except (OSError, ValueError):
        return None
    return maps


def _declared_bytes(codec_id: str, buf: memoryview) -> Optional[int]:
    """The decoded size a compressed chunk declares in its header (zstd's frame content size,
    Blosc's nbytes), or None where it declares none: a chunk whose size is not the one
    expected is then decoded apart and checked, never decoded short into the block."""
    if codec_id == "blosc" and len(buf) >= 16:
        return int.from_bytes(buf[4:8], "little")
    if codec_id == "zstd" and len(buf) >= 6 and bytes(buf[:4]) == b"\x28\xb5\x2f\xfd":
        fhd = buf[4]
        fcs_flag, single, did_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
        at = 5 + (0 if single else 1) + (0, 1, 2, 4)[did_flag]
        size = (1 if single else 0, 2, 4, 8)[fcs_flag]
        if not size or len(buf) < at + size:
            return None
        value = int.from_bytes(buf[at:at + size], "little")
        return value + 256 if size == 2 else value
    return None


class _WrongSize(ValueError):
    """A chunk file that decodes to another size than a chunk's."""


def _quietly(close: Any) -> None:
    try:
        close()
    except BufferError:
        pass


class CompressedChunks:
    """A compressed Zarr array in a local folder (see :func:`layout`), sliceable by rows like
    the array itself: a slice decodes the chunk files it meets, each by numcodecs straight
    into the result where a whole chunk is wanted (the files are memory-mapped, so numcodecs
    decodes from the page cache itself). A chunk never written (no file: all fill value) is
    read through the Zarr array; so are gathers of single rows (take_rows)."""

    def __init__(self, z: Any, where: Layout) -> None:
        self.array, self.where = z, where
        self.shape = (where.n, where.d)
        self.dtype = where.dtype  # as stored, little-endian (the reader converts otherwise)
        self.ndim = 2
        self.chunks = (where.rows, where.d)
        self.read_ahead = READ_AHEAD
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {"array": self.array, "where": self.where}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["array"], state["where"])

    def _codec(self) -> Any:
        codec = getattr(self._local, "codec", None)
        if codec is None:
            import numcodecs

            codec = numcodecs.get_codec(dict(self.where.codec))  # decoding needs no settings
            self._local.codec = codec
        return codec

    def _decode(self, i: int, out: np.ndarray) -> bool:
        """Decode chunk i whole into `out` (rows x d, C order); False when it has no file.
        The file is mapped, not read: numcodecs decodes from the page cache itself."""
        path = self.where.path(i)
        try:
            f = open(path, "rb", buffering=0)
        except FileNotFoundError:
            return False
        failure = None
        with f:
            if not os.fstat(f.fileno()).st_size:
                raise ValueError(f"{path}: an empty chunk file")
            m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                if hasattr(m, "madvise"):
                    m.madvise(mmap.MADV_SEQUENTIAL)
                data = memoryview(m)
                try:
                    self._decode_bytes(data, out)
                except Exception as exc:  # (its traceback's frames hold views of the map)
                    failure = str(exc) if isinstance(exc, _WrongSize) else (
                        f"{type(exc).__name__}: {exc}")
                    exc.__traceback__ = None
                finally:
                    _quietly(data.release)
            finally:
                _quietly(m.close)  # (a view still alive: the map goes with it)
        if failure is not None:
            raise ValueError(f"{path}: {failure}")
        return True

    def _decode_bytes(self, data: memoryview, out: np.ndarray) -> None:
        where = self.where
        codec = self._codec()
        expected = where.chunk_bytes
        if _declared_bytes(where.codec["id"], data) == expected:
            codec.decode(data, out=out.reshape(-1).view(np.uint8))
            return
        raw = np.frombuffer(codec.decode(data), dtype=np.uint8)
        if raw.nbytes != expected:
            raise _WrongSize(f"decodes to {raw.nbytes} bytes, expected {expected} "
                             f"({where.rows} rows x {where.d} of {where.dtype.name})")
        out.reshape(-1).view(np.uint8)[:] = raw

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("rows of a compressed Zarr source are read by slices")
        lo, hi, _ = key.indices(self.shape[0])
        out = np.empty((max(0, hi - lo), self.where.d), dtype=self.dtype)
        self.read_rows(lo, max(lo, hi), out)
        return out

    def read_rows(self, lo: int, hi: int, out: np.ndarray) -> None:
        """Fill `out` ((hi - lo) x d, C order, of self.dtype) with rows [lo, hi)."""
        where = self.where
        row = lo
        while row < hi:
            i = row // where.rows
            first = i * where.rows
            end = min(hi, first + where.rows)
            dest = out[row - lo:end - lo]
            if row == first and end == first + where.rows:  # a whole chunk: decoded in place
                if not self._decode(i, dest):
                    dest[...] = self.array[row:end]
            else:
                whole = np.empty((where.rows, where.d), dtype=self.dtype)
                dest[...] = (whole[row - first:end - first] if self._decode(i, whole)
                             else self.array[row:end])
            row = end

    def take_rows(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (sorted), through the Zarr array."""
        return np.asarray(self.array.oindex[np.asarray(rows, dtype=np.int64), :])

    def __repr__(self) -> str:
        return (f"compressed Zarr array {self.where.folder} ({self.where.codec['id']}, "
                f"{self.where.rows} rows a chunk)")


def in_place_parts(z: Any, max_mapped: int) -> Optional[list]:
    """A Zarr array as parts read from its chunk files (memory maps when uncompressed, at most
    max_mapped of them; one CompressedChunks when compressed), or None when zarr-python must
    read it."""
    where = layout(z)
    if where is None:
        return None
    if where.codec is None:
        return mapped_chunks(z, max_mapped, where)
    try:
        import numcodecs  # noqa: F401  (zarr's own dependency; absent: zarr-python reads)
    except ImportError:
        return None
    return [CompressedChunks(z, where)]
