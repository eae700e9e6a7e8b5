"""Zarr arrays read from their chunk files (rif_native._zarr_files) against zarr-python.

A compressed Zarr array whose chunks hold whole rows is decoded by numcodecs straight into the
reader's blocks. Decoding is lossless, so every row read that way must equal, bit for bit, the
rows zarr-python reads from the same store, for each compressor and both formats, chunk key
encodings included; layouts this module does not read (chunked across columns, filtered,
sharded) must still come back equal, through zarr-python. Then the failure modes: a chunk never
written (fill value), a corrupt chunk file and one that decodes to the wrong size (a clear
SourceReadError naming the rows), the sizes read from compressed headers, the reuse of the
reader's blocks (never while something holds them), pickling, and an attribution against the
same X in memory.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

import rif_native as rn
from rif_native import _zarr_files, sources

from conftest import _FRESH_SEED, FIXED_SEED

zarr = pytest.importorskip("zarr")
numcodecs = pytest.importorskip("numcodecs")


def _rows(seed, n=1000, d=24, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) + rng.uniform(-1, 1, d)).astype(dtype)


def _store(X, path, **kw):
    z = zarr.create_array(str(path), shape=X.shape, dtype=X.dtype, **kw)
    z[:] = X
    return zarr.open_array(str(path), mode="r")


def _v3(codec):
    return {"compressors": codec}


CASES = {
    "v3-zstd (default)": lambda: {},
    "v3-zstd-checksum": lambda: _v3(zarr.codecs.ZstdCodec(level=3, checksum=True)),
    "v3-blosc": lambda: _v3(zarr.codecs.BloscCodec(cname="lz4", shuffle="bitshuffle")),
    "v3-gzip": lambda: _v3(zarr.codecs.GzipCodec(level=1)),
    "v3-zstd-dot-keys": lambda: {"chunk_key_encoding": {"name": "default", "separator": "."}},
    "v2-blosc": lambda: {"zarr_format": 2, "compressors": numcodecs.Blosc()},
    "v2-zstd": lambda: {"zarr_format": 2, "compressors": numcodecs.Zstd(level=1)},
    "v2-zlib-slash-keys": lambda: {"zarr_format": 2, "compressors": numcodecs.Zlib(level=1),
                                   "chunk_key_encoding": {"name": "v2", "separator": "/"}},
    "v2-lz4": lambda: {"zarr_format": 2, "compressors": numcodecs.LZ4()},
}


def _decoded_part(src):
    parts = [p for p in src._parts if isinstance(p, _zarr_files.CompressedChunks)]
    return parts[0] if parts else None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(CASES))
def test_decoded_rows_equal_zarr_python(case, dtype, tmp_path):
    """Every read (whole chunks, pieces of chunks, the padded last chunk, gathers, subsets)
    equals zarr-python's rows exactly."""
    X = _rows(FIXED_SEED, dtype=dtype)
    z = _store(X, tmp_path / "X.zarr", chunks=(97, X.shape[1]), **CASES[case]())
    src = sources.open_source(z)
    part = _decoded_part(src)
    assert part is not None, repr(src)
    assert "read from its chunk files" in repr(src)
    ref = np.asarray(z[:])
    np.testing.assert_array_equal(ref, X)
    np.testing.assert_array_equal(part[:], ref)
    for lo, hi in [(0, 97), (97, 194), (5, 6), (90, 300), (970, 1000), (999, 1000), (0, 1000)]:
        np.testing.assert_array_equal(part[lo:hi], ref[lo:hi], err_msg=f"{lo}:{hi}")
    got = np.concatenate([b for _, b in src.blocks(rows=131)])
    np.testing.assert_array_equal(got, ref)
    idx = np.array([999, 0, 96, 97, 500, 500, 3])
    np.testing.assert_array_equal(src.take(idx), ref[idx])
    sub = src.subset(50, 777)
    np.testing.assert_array_equal(np.concatenate([b for _, b in sub.blocks(rows=64)]),
                                  ref[50:777])
    np.testing.assert_array_equal(sub.take(np.array([726, 0, 47])), ref[50:777][[726, 0, 47]])


@pytest.mark.parametrize("case", ["across columns", "filtered", "sharded"])
def test_layouts_left_to_zarr_python(case, tmp_path):
    """Layouts this module does not decode are read through zarr-python, equal all the same."""
    X = _rows(FIXED_SEED + 1)
    kw = {"across columns": {"chunks": (97, 10)},
          "filtered": {"chunks": (97, X.shape[1]), "zarr_format": 2,
                       "filters": [numcodecs.Delta(dtype="f4")]},
          "sharded": {"chunks": (97, X.shape[1]), "shards": (194, X.shape[1])}}[case]
    z = _store(X, tmp_path / "X.zarr", **kw)
    assert _zarr_files.layout(z) is None
    src = sources.open_source(z)
    assert _decoded_part(src) is None and src.shards is None
    np.testing.assert_array_equal(np.concatenate([b for _, b in src.blocks(rows=131)]),
                                  np.asarray(z[:]))  # (Delta on float32 rounds: zarr's rows)


def test_a_chunk_never_written_reads_its_fill_value(tmp_path):
    """Zarr writes no file for a chunk that is all fill value: that chunk is read through
    zarr-python (its fill value), the others decoded."""
    X = _rows(FIXED_SEED + 2)
    X[100:200] = 0.0
    z = zarr.create_array(str(tmp_path / "X.zarr"), shape=X.shape, chunks=(100, X.shape[1]),
                          dtype=X.dtype, fill_value=0.0)
    z[:] = X
    assert not os.path.exists(tmp_path / "X.zarr" / "c" / "1" / "0")
    src = sources.open_source(zarr.open_array(str(tmp_path / "X.zarr"), mode="r"))
    assert _decoded_part(src) is not None
    np.testing.assert_array_equal(np.concatenate([b for _, b in src.blocks(rows=77)]), X)


def _problem(seed, n=1500, d=40):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) / np.sqrt(d) + 0.2).astype(np.float32)
    z = X.astype(np.float64) @ rng.standard_normal(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(float)
    theta = rn.fit(X, y, l2=1.0).theta
    return X, y, theta


@pytest.mark.parametrize("seed", [FIXED_SEED, _FRESH_SEED])
def test_attribution_from_a_compressed_store_equals_in_memory(seed, tmp_path):
    """Leverages and RIF scores from the decoded store against the same X in memory, to 1e-10
    of their scale (the same rows in the same blocks; only the threads' shares may differ)."""
    print(f"seed={seed}")
    X, y, theta = _problem(seed)
    z = _store(X, tmp_path / "X.zarr", chunks=(113, X.shape[1]))
    src = sources.open_source(z)
    assert _decoded_part(src) is not None
    v = np.random.default_rng(seed + 1).standard_normal(X.shape[1])
    A = rn.Attribution(src, y, theta, l2=1.0)
    B = rn.Attribution(X, y, theta, l2=1.0)
    for got, ref, what in [(A.leverage, B.leverage, "leverage"),
                           (A.scores(v), B.scores(v), "RIF scores")]:
        assert np.max(np.abs(got - ref)) <= 1e-10 * np.max(np.abs(ref)), what
    assert src.passes >= 2


def _corrupt(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(sources, "READ_BYTES", 1)  # one read per store chunk
    X, y, theta = _problem(FIXED_SEED + 3, n=600, d=16)
    z = _store(X, tmp_path / "X.zarr", chunks=(100, X.shape[1]))
    chunk = tmp_path / "X.zarr" / "c" / "3" / "0"
    damage(chunk)
    return sources.open_source(z), y, theta


def test_a_corrupt_chunk_file_is_a_clear_read_error(tmp_path, monkeypatch):
    def garble(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2:] = b"\x00" * (len(data) - len(data) // 2)
        path.write_bytes(bytes(data[:len(data) * 3 // 4]))

    src, y, theta = _corrupt(tmp_path, monkeypatch, garble)
    with pytest.raises(rn.SourceReadError, match=r"rows 300:400 of X .*zstd"):
        rn.Attribution(src, y, theta, l2=1.0, progress=False)


def test_a_chunk_that_decodes_short_is_refused_not_padded(tmp_path, monkeypatch):
    """A chunk file holding fewer rows than a chunk (a valid frame of another size) would
    leave the rest of the block as it was: it is refused, naming the sizes."""
    def shorten(path):
        path.write_bytes(numcodecs.Zstd().encode(np.ones((60, 16), np.float32).tobytes()))

    src, y, theta = _corrupt(tmp_path, monkeypatch, shorten)
    with pytest.raises(rn.SourceReadError, match=r"rows 300:400 .*decodes to 3840 bytes, "
                                                 r"expected 6400"):
        rn.Attribution(src, y, theta, l2=1.0, progress=False)


@pytest.mark.parametrize("nbytes", [1, 255, 256, 300, 65535, 65536 + 256, 1 << 20, 5 << 20])
def test_declared_sizes_match_what_decodes(nbytes):
    """The decoded size read from a zstd frame header or a Blosc header equals the size the
    frame decodes to, over the header's size classes (1, 2, 4 bytes)."""
    data = np.random.default_rng(nbytes).integers(0, 4, nbytes, dtype=np.uint8).tobytes()
    for name, codec in [("zstd", numcodecs.Zstd(level=1)), ("blosc", numcodecs.Blosc())]:
        frame = codec.encode(data)
        assert len(codec.decode(frame)) == nbytes
        assert _zarr_files._declared_bytes(name, memoryview(frame)) == nbytes, name
    assert _zarr_files._declared_bytes("zstd", memoryview(b"not a zstd frame")) is None
    assert _zarr_files._declared_bytes("gzip", memoryview(numcodecs.GZip().encode(data))) is None


def test_a_block_is_reused_only_when_nothing_holds_it(tmp_path, monkeypatch):
    """The reader reads into blocks it let go of, but never into one a caller still holds:
    a chunk taken with chunk_at keeps its rows while the reader moves on well past it."""
    monkeypatch.setattr(sources, "READ_BYTES", 1)  # one read per store chunk: 20 reads
    X = _rows(FIXED_SEED + 4, n=2000, d=8)
    z = _store(X, tmp_path / "X.zarr", chunks=(100, X.shape[1]))
    src = sources.open_source(z)
    reader = src._readers[0]
    held, first = reader.chunk_at(0)
    held_copy = held.copy()
    np.testing.assert_array_equal(held, X[first:first + len(held)])
    fresh = []
    spare = reader._spare_block
    reader._spare_block = lambda rows: fresh.append(len(reader._spare)) or spare(rows)
    for begin in range(0, 2000, 50):  # every chunk, twice over each, in order
        block, at = reader.chunk_at(begin)
        np.testing.assert_array_equal(block, X[at:at + len(block)])
        del block
    np.testing.assert_array_equal(held, held_copy)
    assert any(fresh), "no block was reused"


def test_a_source_pickles_and_reads_the_same(tmp_path):
    X = _rows(FIXED_SEED + 5, n=400, d=12)
    z = _store(X, tmp_path / "X.zarr", chunks=(64, X.shape[1]))
    part = _decoded_part(sources.open_source(z))
    again = pickle.loads(pickle.dumps(part))
    np.testing.assert_array_equal(again[10:300], X[10:300])
    assert Path(again.where.folder) == Path(part.where.folder)


@pytest.mark.parametrize("codec", ["zlib", "bz2"])
def test_a_corrupt_chunk_names_the_codecs_error(codec, tmp_path, monkeypatch):
    """Codecs that numcodecs runs in Python keep views of the mapped file in their traceback:
    the error says what the codec said, not that the map could not be closed."""
    monkeypatch.setattr(sources, "READ_BYTES", 1)
    X = _rows(FIXED_SEED + 6, n=500, d=16)
    z = _store(X, tmp_path / "X.zarr", chunks=(100, 16), zarr_format=2,
               compressors=numcodecs.get_codec({"id": codec}))
    chunk = tmp_path / "X.zarr" / "2.0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2:] = bytes(len(data) - len(data) // 2)
    chunk.write_bytes(bytes(data))
    src = sources.open_source(z)
    assert _decoded_part(src) is not None
    with pytest.raises(rn.SourceReadError) as err:
        list(src.blocks(rows=100))
    text = str(err.value)
    assert "rows 200:300" in text and "2.0" in text and "BufferError" not in text, text


def test_a_float32_store_beside_float64_shards_keeps_no_blocks(tmp_path):
    """A compressed float32 store in a float64 Source is converted, not read in place: the
    reader keeps no blocks for reuse it could never use."""
    X = _rows(FIXED_SEED + 7, n=600, d=8)
    z = _store(X, tmp_path / "X.zarr", chunks=(100, 8))
    src = sources.open_source([z, np.zeros((10, 8))])
    assert src.dtype == np.float64
    got = np.concatenate([b for _, b in src.blocks(rows=50)])
    np.testing.assert_array_equal(got[:600], X.astype(np.float64))
    assert src._readers[0]._spare == []


@pytest.mark.parametrize("fmt", [2, 3])
def test_chunk_keys_with_the_separator_left_to_its_default(fmt, tmp_path):
    """Zarr 3's "v2" chunk key encoding without a configuration, and format 2 without a
    dimension_separator, both mean ".": the chunk files are found and decoded."""
    import json

    X = _rows(FIXED_SEED + 8, n=300, d=8)
    kw = ({"zarr_format": 2} if fmt == 2 else
          {"chunk_key_encoding": {"name": "v2", "separator": "."}})
    _store(X, tmp_path / "X.zarr", chunks=(64, 8), **kw)
    meta_path = tmp_path / "X.zarr" / ("zarr.json" if fmt == 3 else ".zarray")
    meta = json.loads(meta_path.read_text())
    if fmt == 3:
        meta["chunk_key_encoding"].pop("configuration", None)
    else:
        meta.pop("dimension_separator", None)
    meta_path.write_text(json.dumps(meta))
    z = zarr.open_array(str(tmp_path / "X.zarr"), mode="r")
    src = sources.open_source(z)
    part = _decoded_part(src)
    assert part is not None and part.where.sep == "."
    assert os.path.exists(part.where.path(0))
    np.testing.assert_array_equal(np.concatenate([b for _, b in src.blocks(rows=50)]), X)


@pytest.mark.parametrize("compressed", [True, False])
def test_a_store_opened_through_fsspec_on_this_machine(compressed, tmp_path):
    """A local folder opened as a file:// URL (an fsspec store, as dask.array.from_zarr opens a
    path) is read from its chunk files like a LocalStore; the same rows as zarr-python."""
    X = _rows(FIXED_SEED + 9, n=500, d=16)
    _store(X, tmp_path / "X.zarr", chunks=(64, 16), **({} if compressed else {"compressors": None}))
    z = zarr.open_array((tmp_path / "X.zarr").as_uri(), mode="r")
    assert type(z.store).__name__ == "FsspecStore"
    src = sources.open_source(z)
    assert (_decoded_part(src) is not None) == compressed
    folder = str(tmp_path / "X.zarr")
    assert (f"Zarr array {folder} (zstd, read from its chunk files)" if compressed
            else f"memory-mapped {folder}{os.sep}c{os.sep}0{os.sep}0") in repr(src)
    np.testing.assert_array_equal(np.concatenate([b for _, b in src.blocks(rows=50)]), z[:])


def test_the_memory_advice_for_a_store_of_small_chunks_is_one_that_works(tmp_path, monkeypatch):
    """The reader merges a store's small chunks into reads of READ_BYTES, so for chunks already
    small, 'store X with fewer rows per chunk' frees nothing: the refusal must name
    READ_BYTES, and lowering it as told must let the same call through under the same cap."""
    monkeypatch.setattr(sources, "READ_BYTES", 4 << 20)  # (the default's role, at this size)
    n, d = 40000, 64
    X = _rows(FIXED_SEED + 7, n, d)
    z = _store(X, tmp_path / "x.zarr", chunks=(250, d))  # zstd, 64 KiB chunks
    y = (np.arange(n) % 3 == 0).astype(float)
    kw = dict(l2=1.0, num_threads=1, max_memory="20M")
    with pytest.raises(MemoryError, match=r"sources\.READ_BYTES") as info:
        rn.Attribution(z, y, np.zeros(d), **kw)
    assert "fewer rows per chunk" not in str(info.value)
    monkeypatch.setattr(sources, "READ_BYTES", 512 << 10)
    A = rn.Attribution(z, y, np.zeros(d), **kw)
    B = rn.Attribution(X, y, np.zeros(d), l2=1.0, num_threads=1)
    np.testing.assert_allclose(A.leverage, B.leverage, rtol=1e-10, atol=0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd (Linux)")
def test_chunk_files_mapped_leave_most_open_file_descriptors_free(tmp_path):
    """Each mapped chunk file holds a file descriptor: under a limit of 256 open files a store
    of 200 chunks was mapped whole, leaving the process about 50 (a second store, or any
    other file, then failed or fell back). At most half of the limit is mapped now; the rows
    read through zarr-python instead are the same."""
    code = """if True:
        import os, resource, sys, numpy as np, zarr, rif_native as rn
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        X = np.random.default_rng(0).standard_normal((400, 5))
        z = zarr.create_array(sys.argv[1] + "/x.zarr", shape=X.shape, dtype="f8",
                              chunks=(2, 5), compressors=None)
        z[:] = X
        src = rn.sources.open_source(zarr.open_array(sys.argv[1] + "/x.zarr", mode="r"))
        rows = np.empty_like(X)
        src.read_into(0, rows)
        print(len(src._parts), len(os.listdir("/proc/self/fd")), np.array_equal(rows, X))
    """
    import subprocess
    import sys

    got = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-2000:]
    parts, descriptors, same = got.stdout.split()
    assert parts == "1" and int(descriptors) < 128 and same == "True", got.stdout
