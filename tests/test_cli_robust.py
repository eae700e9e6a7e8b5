"""The ``rif`` command under hostile conditions: unknown commands, untrusted data files, outputs
that exist or cannot be written, failures while writing, Ctrl-C. Every failure is one line on
stderr with exit status 2 (130 for Ctrl-C), no traceback, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
import zipfile

import numpy as np
import pytest

import rif_native
from rif_native import _output, cli, datasets, experiment, plots
from rif_native.cli import main

from conftest import tree_snapshot

COMMANDS = ("attribute", "experiment", "poisoning", "sweep", "search", "benchmark")


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, out, err, *fragments):
    assert code == 2, (code, err)
    assert out == ""
    assert err.startswith("rif: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)


@pytest.fixture
def data(tmp_path):
    """A small logistic problem as .npz, .csv (with header) and .npy + labels."""
    rng = np.random.default_rng(7)
    n, d = 48, 3
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ np.array([1.5, -1.0, 0.5]))))).astype(float)
    folder = tmp_path / "data"
    folder.mkdir()
    np.savez(folder / "ok.npz", X=X, y=y)
    lines = ["a,b,c,label"] + [",".join(f"{v:.6g}" for v in (*x, t)) for x, t in zip(X, y)]
    (folder / "ok.csv").write_text("\n".join(lines) + "\n")
    np.save(folder / "X.npy", X)
    np.save(folder / "y.npy", y)
    return folder


# --------------------------------------------------------------------------------------------
# 1. commands and help
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["audti", "--help"], ["audti"], ["experimnet", "--quiet"],
                                  ["help"], ["-"], ["attribute.npz", "--data", "x.npz"]])
def test_unknown_command_is_a_usage_error(capsys, argv):
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, out, err, f"unknown command {argv[0]!r}")
    assert all(command in err for command in COMMANDS)
    assert "usage:" not in err


def test_unknown_command_suggests_the_nearest(capsys):
    code, out, err = _run(capsys, "experimnet")
    _assert_one_line_error(code, out, err, "did you mean 'experiment'?")


def test_bare_options_still_mean_attribute(capsys, data):
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--top", 2, "--quiet")
    assert code == 0, err
    assert "RIF (rescaled influence)" in out


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_has_no_doubled_percent(capsys, command):
    code, out, _ = _run(capsys, *([command] if command else []), "--help")
    assert code == 0
    assert "%%" not in out and "%(" not in out
    if command == "experiment":
        assert "0.1% to 5% of n" in out and "0.1% and 5% of n" in out
    if command not in (None, "attribute"):
        assert "--force" in out and "--out" in out


# --------------------------------------------------------------------------------------------
# 2 and 7. untrusted data files: one line, exit 2, nothing written
# --------------------------------------------------------------------------------------------


def _npy_bytes(array, allow_pickle=False):
    bio = io.BytesIO()
    np.lib.format.write_array(bio, array, allow_pickle=allow_pickle)
    return bio.getvalue()


def _huge_header_npy(shape):
    bio = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        bio, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return bio.getvalue() + b"\0" * 64


def _zip(members):
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return bio.getvalue()


def _bad_files(folder):
    """name -> (bytes, fragment of the expected message); labels for .npy come from y.npy."""
    rng = np.random.default_rng(3)
    ok = (folder / "ok.npz").read_bytes()
    flipped = bytearray(ok)
    flipped[len(ok) // 3] ^= 0xFF  # inside X's data: the member's CRC no longer matches
    y = np.load(folder / "y.npy")
    X = np.load(folder / "X.npy")
    csv_text = (folder / "ok.csv").read_text()
    garbage = bytes(rng.integers(1, 256, size=4000, dtype=np.uint8))  # no NUL: not UTF-8 either
    return {
        "truncated.npz": (ok[: len(ok) // 2], "not a readable .npz"),
        "tail_cut.npz": (ok[:-25], "not a readable .npz"),
        "crc.npz": (bytes(flipped), "archive is damaged"),
        "empty.npz": (b"", "the file is empty"),
        "text.npz": (b"X,y\n1,0\n", "not a readable .npz"),
        "object.npz": (_zip({"X.npy": _npy_bytes(np.array([[None]] * 48, dtype=object), True),
                             "y.npy": _npy_bytes(y)}), "object array"),
        "strings.npz": (_zip({"X.npy": _npy_bytes(np.array([["a"]] * 48)),
                              "y.npy": _npy_bytes(y)}), "X must be numeric"),
        "complex.npz": (_zip({"X.npy": _npy_bytes(X + 1j), "y.npy": _npy_bytes(y)}),
                        "X must be numeric"),
        "huge.npz": (_zip({"X.npy": _huge_header_npy((10**7, 10**7)), "y.npy": _npy_bytes(y)}),
                     "not enough memory"),
        "nolabels.npz": (_zip({"X.npy": _npy_bytes(X)}), "missing key(s) y"),
        "nan_label.npz": (_zip({"X.npy": _npy_bytes(X),
                                "y.npy": _npy_bytes(np.where(np.arange(48) == 5, np.nan, y))}),
                          "y contains NaN or infinity (first at row 5)"),
        "three_d.npz": (_zip({"X.npy": _npy_bytes(X[:, :, None]), "y.npy": _npy_bytes(y)}),
                        "X must be 2-D"),
        "two_col_y.npz": (_zip({"X.npy": _npy_bytes(X), "y.npy": _npy_bytes(np.c_[y, y])}),
                          "y must be 1-D"),
        "rows.npz": (_zip({"X.npy": _npy_bytes(X[:40]), "y.npy": _npy_bytes(y)}),
                     "X has 40 rows but y has 48"),
        "empty.csv": (b"", "no data rows"),
        "blank.csv": (b"  \n\t\n\n", "no data rows"),
        "header_only.csv": (b"a,b,label\n", "header but no data rows"),
        "utf16.csv": (csv_text.encode("utf-16"), "UTF-16"),
        "utf16_nobom.csv": (csv_text.encode("utf-16-le"), "NUL bytes"),
        "latin1.csv": (("caf\u00e9," + csv_text).encode("latin-1"), "line 1 has the byte 0xe9"),
        "garbage.csv": (garbage, "not a UTF-8 text file"),
        "binary.csv": (ok, "NUL bytes"),
        "huge_field.csv": (b"1," + b"9" * 200_000 + b",0\n1,2,1\n", "line 1: not a readable CSV"),
        "nan_label.csv": (b"1,2,0\n3,4,nan\n5,6,1\n", "labels (last column) contains NaN"),
        "inf.csv": (b"1,2,0\n1e999,4,1\n5,6,1\n", "features contains NaN or infinity"),
        "ragged.csv": (b"1,2,0\n3,4\n", "line 2 has 2 columns, expected 3"),
        "words.csv": (b"1,2,0\n3,x,1\n", "line 2, column 2: 'x' is not a number"),
        "one_column.csv": (b"0\n1\n0\n", "at least 2 columns"),
        "empty.npy": (b"", "the file is empty"),
        "garbage.npy": (b"\x93NUMPY" + garbage, "not a readable numeric .npy"),
        "zip.npy": (ok, "is a .npz archive, not a .npy file"),
        "pickle.npy": (_npy_bytes(np.array([{"a": 1}] * 48, dtype=object), True),
                       "Object arrays cannot be loaded"),
        "huge.npy": (_huge_header_npy((10**7, 10**7)), "not enough memory"),
    }


def test_bad_files_are_one_line_errors_and_write_nothing(capsys, tmp_path, data):
    before = tree_snapshot(tmp_path)
    for name, (payload, fragment) in _bad_files(data).items():
        path = tmp_path / "bad" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(payload)
        labels = ["--labels", data / "y.npy"] if name.endswith(".npy") else []
        out_json = tmp_path / "never.json"
        code, out, err = _run(capsys, "--data", path, *labels, "--json", out_json)
        _assert_one_line_error(code, out, err, fragment)
        assert str(path) in err, err
        assert not out_json.exists()
    # the same through a command with an output folder: no folder is left behind
    code, out, err = _run(capsys, "search", "--data", tmp_path / "bad" / "crc.npz",
                          "--out", tmp_path / "new" / "out")
    _assert_one_line_error(code, out, err, "archive is damaged")
    assert not (tmp_path / "new").exists()
    assert {k: v for k, v in tree_snapshot(tmp_path).items() if not k.startswith("bad")} == before


def test_bad_labels_file_for_npy(capsys, tmp_path, data):
    (tmp_path / "y_bad.npy").write_bytes(_huge_header_npy((10**7, 10**7)))
    code, out, err = _run(capsys, "--data", data / "X.npy", "--labels", tmp_path / "y_bad.npy")
    _assert_one_line_error(code, out, err, "not enough memory", "y_bad.npy")


def test_data_that_is_not_a_regular_file(capsys, tmp_path):
    code, out, err = _run(capsys, "--data", "/dev/null")
    _assert_one_line_error(code, out, err, "not a regular file")
    code, out, err = _run(capsys, "--data", tmp_path)
    _assert_one_line_error(code, out, err, "not a regular file")


def test_control_characters_in_messages_are_escaped(capsys, data, monkeypatch):
    def hostile(path, labels):
        raise ValueError(f"{path}: odd value '\x1b[2J\r\x07'")

    monkeypatch.setattr(cli, "load_dataset", hostile)
    code, out, err = _run(capsys, "--data", data / "ok.npz")
    _assert_one_line_error(code, out, err, "odd value '\\x1b[2J", "\\x07'")
    assert not any(c in err for c in "\x1b\r\x07")


def test_utf8_with_byte_order_mark_is_read(capsys, tmp_path, data):
    """A BOM must not turn the first (numeric) row into a header."""
    body = (data / "ok.csv").read_text().split("\n", 1)[1]
    path = tmp_path / "bom.csv"
    path.write_bytes(body.encode("utf-8-sig"))
    ds = datasets.load_dataset(path)
    assert ds.n_samples == 48 and ds.feature_names == ["x0", "x1", "x2"]


def test_csv_loader_reads_in_blocks(tmp_path, monkeypatch):
    """Rows are parsed into float64 blocks (tiny blocks here): same array as one block."""
    rng = np.random.default_rng(1)
    values = np.c_[rng.normal(size=(37, 4)), np.arange(37) % 2]
    path = tmp_path / "blocks.csv"
    path.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in values) + "\n")
    whole = datasets.load_dataset(path)
    monkeypatch.setattr(datasets, "_CSV_BLOCK_BYTES", 8 * 5 * 3)  # 3 rows per block
    blocked = datasets.load_dataset(path)
    np.testing.assert_array_equal(whole.X, values[:, :-1])
    np.testing.assert_array_equal(blocked.X, whole.X)
    np.testing.assert_array_equal(blocked.y, whole.y)


def test_memory_error_while_loading_is_one_line(capsys, tmp_path, data, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(datasets, "_csv_values", no_memory)
    code, out, err = _run(capsys, "--data", data / "ok.csv", "--json", tmp_path / "o.json")
    _assert_one_line_error(code, out, err, "not enough memory to read the data",
                           data / "ok.csv", "the table does not fit in memory")
    assert not (tmp_path / "o.json").exists()


def test_memory_error_in_the_fit_is_one_line(capsys, tmp_path, data, monkeypatch):
    """A data set too wide for the (d+1) x (d+1) Hessian (std::bad_alloc in the core)."""
    def bad_alloc(*args, **kwargs):
        raise MemoryError("std::bad_alloc")

    monkeypatch.setattr(rif_native, "fit", bad_alloc)
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--quiet")
    _assert_one_line_error(code, out, err, "not enough memory (std::bad_alloc) for 48 samples x 3 "
                           "features", "Hessian")
    monkeypatch.setattr(experiment, "fit", bad_alloc)
    code, out, err = _run(capsys, "experiment", "--data", data / "ok.npz", "--quiet",
                          "--out", tmp_path / "exp")
    _assert_one_line_error(code, out, err, "not enough memory")
    assert not (tmp_path / "exp").exists()


_CSV_TOKENS = [b"nan", b"", b"1e999", b"-0", b"abc", b"2", b"0", b"1", b"\"", b",", b"\n", b"\t",
               b"\xc3", b"\xff", b"\x00", b"9" * 40, b"1e308", b"-1e308", b"0x10", b"1_0"]


def _mutate(raw: bytes, rng: np.random.Generator, text: bool) -> bytes:
    """1 to 3 byte-level edits; for text, mostly CSV-meaningful tokens."""
    b = bytearray(raw)
    kinds = [0, 1, 2, 3, 4] + ([5] * 5 if text else [])
    for _ in range(int(rng.integers(1, 4))):
        kind = kinds[int(rng.integers(0, len(kinds)))]
        pos = int(rng.integers(0, len(b) + 1))
        if kind == 0 and b:  # flip bits of a few bytes
            for p in rng.integers(0, len(b), size=int(rng.integers(1, 9))):
                b[p] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # truncate
            del b[pos:]
        elif kind == 2:  # insert random bytes
            b[pos:pos] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 16)), dtype=np.uint8))
        elif kind == 3:  # delete a range
            del b[pos:pos + int(rng.integers(1, 64))]
        elif kind == 4:  # duplicate a range
            b[pos:pos] = b[pos:pos + int(rng.integers(1, 200))]
        elif kind == 5:  # a CSV-meaningful token in place of a few bytes
            token = _CSV_TOKENS[int(rng.integers(0, len(_CSV_TOKENS)))]
            b[pos:pos + int(rng.integers(0, 4))] = token
    return bytes(b)


def _mutate_arrays(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> dict:
    """A well-formed .npz with odd contents: extreme scales, NaN/inf, other dtypes and shapes,
    constant or duplicated columns, other labels, a test part that does not fit."""
    arrays = {"X": X.copy(), "y": y.copy()}
    for _ in range(int(rng.integers(1, 3))):
        kind = int(rng.integers(0, 10))
        i, j = int(rng.integers(0, X.shape[0])), int(rng.integers(0, X.shape[1]))
        # an edit that does not apply to what earlier edits made (a 2-D edit of a 1-D X, a cast
        # of NaN to int) is skipped
        with warnings.catch_warnings(), contextlib.suppress(Exception):
            warnings.simplefilter("ignore")
            _edit_arrays(arrays, kind, i, j, X, y, rng)
    return arrays


def _edit_arrays(arrays, kind, i, j, X, y, rng):
    if kind == 0:
        arrays["X"] = arrays["X"] * 10.0 ** int(rng.integers(-300, 300))
    elif kind == 1:
        arrays["X"] = np.array(arrays["X"], dtype=float)
        arrays["X"][i, j] = (np.nan, np.inf, -np.inf, 1e308)[int(rng.integers(0, 4))]
    elif kind == 2:
        dtype = ("int8", "uint64", "float16", "float32", "bool", "complex64", "U3",
                 "datetime64[s]")[int(rng.integers(0, 8))]
        key = ("X", "y")[int(rng.integers(0, 2))]
        arrays[key] = np.asarray(arrays[key]).astype(dtype)
    elif kind == 3:
        arrays["X"] = np.asarray(arrays["X"]).reshape(-1)[: int(rng.integers(0, 200))]
    elif kind == 4:
        arrays["y"] = np.asarray(arrays["y"])[: int(rng.integers(0, 60))]
    elif kind == 5:
        arrays["y"] = np.asarray(arrays["y"]) * int(rng.integers(-2, 4))
    elif kind == 6:
        arrays["X"] = np.array(arrays["X"], dtype=float)
        arrays["X"][:, j] = 1.0 if rng.random() < 0.5 else arrays["X"][:, 0]
    elif kind == 7:
        arrays["X_test"], arrays["y_test"] = X[:10, : int(rng.integers(1, 5))], y[:10]
    elif kind == 8:
        arrays["y"] = np.asarray(arrays["y"]).astype(float)
        arrays["y"][i] = (np.nan, 0.5, -1.0, 3.0)[int(rng.integers(0, 4))]
    else:
        arrays["X"] = np.zeros((X.shape[0], int(rng.integers(0, 3))))


def test_fuzzed_files_exit_0_or_2_and_write_nothing_on_failure(capsys, tmp_path, data):
    """200 seeded mutations of valid .npz (plain and compressed), .csv and .npy files: the
    command either works (exit 0, JSON written) or says why in one line (exit 2, nothing
    written); never a traceback (main re-raises bugs, which would fail this test)."""
    rng = np.random.default_rng(20261204)
    X, y = np.load(data / "X.npy"), np.load(data / "y.npy")
    np.savez_compressed(data / "okc.npz", X=X, y=y)
    seeds = [("npz", (data / "ok.npz").read_bytes()), ("npz", (data / "okc.npz").read_bytes()),
             ("csv", (data / "ok.csv").read_bytes()), ("npy", (data / "X.npy").read_bytes()),
             ("npz", None)]
    out_json = tmp_path / "fuzz.json"
    codes = {0: 0, 2: 0}
    for i in range(200):
        suffix, raw = seeds[i % len(seeds)]
        path = tmp_path / f"m{i}.{suffix}"
        if raw is None:
            np.savez(path, **_mutate_arrays(X, y, rng))
        else:
            path.write_bytes(_mutate(raw, rng, text=suffix == "csv"))
        labels = ["--labels", data / "y.npy"] if suffix == "npy" else []
        family = ("logistic", "squared")[(i // len(seeds)) % 2]
        code, out, err = _run(capsys, "--data", path, *labels, "--json", out_json, "--quiet",
                              "--top", 2, "--l2", 1.0, "--family", family)
        assert code in (0, 2), (i, code, err)
        assert "Traceback" not in err
        if code == 2:
            assert out == "" and err.startswith("rif: error: ") and err.count("\n") == 1, (i, err)
            assert not out_json.exists(), i
        else:
            assert out_json.is_file(), i
            out_json.unlink()
        codes[code] += 1
        path.unlink()
    # the mutations exercise both outcomes (with this seed: many failures, some successes)
    assert codes[2] > 50 and codes[0] > 5, codes


# --------------------------------------------------------------------------------------------
# 3. existing outputs: refuse without --force
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["experiment", "poisoning", "sweep", "search", "benchmark"])
def test_existing_output_files_are_refused_without_force(capsys, tmp_path, data, command,
                                                         monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    taken = cli._OUTPUT_FILES[command][-1]
    (out_dir / taken).write_text("an earlier run\n")
    (out_dir / "notes.txt").write_text("mine\n")
    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    data_args = [] if command == "benchmark" else ["--data", data / "ok.npz"]
    code, out, err = _run(capsys, command, *data_args, "--out", out_dir)
    _assert_one_line_error(code, out, err, f"already holds {taken}", "--force")
    assert sorted(os.listdir(out_dir)) == sorted([taken, "notes.txt"])
    assert (out_dir / taken).read_text() == "an earlier run\n"


def test_existing_json_is_refused_without_force(capsys, tmp_path, data):
    out_json = tmp_path / "r.json"
    out_json.write_text("keep\n")
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--json", out_json)
    _assert_one_line_error(code, out, err, "already exists", "--force")
    assert out_json.read_text() == "keep\n"
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--json", out_json, "--force",
                          "--quiet")
    assert code == 0, err
    assert out_json.read_text().startswith("{")


def test_an_output_is_never_the_data_the_run_reads_not_even_with_force(capsys, tmp_path, data):
    """--json on the --data or --labels file, or an --out folder whose scores.csv is the data
    file, is refused (--force replaces an earlier run's outputs, not the data), and named as
    the data, not as 'an earlier run'. It wrote its JSON over X.npy and its scores over the
    CSV being read."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.csv").write_text((data / "ok.csv").read_text())
    (tmp_path / "link.npy").symlink_to(data / "X.npy")
    cases = [(["--data", data / "X.npy", "--labels", data / "y.npy", "--json", data / "X.npy"],
              data / "X.npy"),
             (["--data", data / "X.npy", "--labels", data / "y.npy", "--json", data / "y.npy"],
              data / "y.npy"),
             (["--data", tmp_path / "link.npy", "--labels", data / "y.npy", "--json",
               data / "X.npy"], data / "X.npy"),
             (["--data", out / "scores.csv", "--out", out], out / "scores.csv")]
    for argv, victim in cases:
        before = tree_snapshot(tmp_path)
        for force in ([], ["--force"]):
            code, text, err = _run(capsys, "attribute", *argv, *force, "--quiet")
            _assert_one_line_error(code, text, err, victim.name, "the data this run reads")
            assert "earlier run" not in err and "already exists" not in err
            assert tree_snapshot(tmp_path) == before


def test_stores_and_folders_of_shards_are_protected_too(capsys, tmp_path, data):
    """An HDF5 dataset whose name holds ':' (the store is split as the loader splits it), a
    file directly in a folder of .npy shards and one inside a Zarr store are the data too:
    refused, forced or not (the review found --force writing JSON over d.h5 and over a
    shard). A subfolder of the shards' folder is not data and may take outputs."""
    h5py = pytest.importorskip("h5py")
    X, y = np.load(data / "X.npy"), np.load(data / "y.npy")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["a:b"] = X
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "part-0.npy", X[:20])
    np.save(shards / "part-1.npy", X[20:])
    cases = [(["--data", f"{tmp_path / 'd.h5'}:a:b", "--json", tmp_path / "d.h5"], "d.h5"),
             (["--data", shards, "--json", shards / "part-1.npy"], "part-1.npy"),
             (["--data", shards, "--json", shards / "new.npy"], "new.npy")]
    zarr = pytest.importorskip("zarr")
    zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, dtype="f8")[:] = X
    cases.append((["--data", tmp_path / "x.zarr", "--json", tmp_path / "x.zarr" / "r.json"],
                  "r.json"))
    for argv, name in cases:
        before = tree_snapshot(tmp_path)
        for force in ([], ["--force"]):
            code, text, err = _run(capsys, "attribute", *argv, "--labels", data / "y.npy",
                                   *force, "--quiet")
            _assert_one_line_error(code, text, err, name, "the data this run reads")
            assert tree_snapshot(tmp_path) == before
    (shards / "results").mkdir()
    code, text, err = _run(capsys, "attribute", "--data", shards, "--labels", data / "y.npy",
                           "--json", shards / "results" / "r.json", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("command, extra", [
    ("search", ["--k", "2,3"]),
    ("poisoning", ["--points", "2"]),
    ("experiment", ["--sizes", "2", "--strategies", "random", "--metrics", "test_loss"]),
    ("sweep", ["--sizes", "1", "--n-fractions", "1", "--l2-factors", "1"]),
])
def test_declared_outputs_are_what_is_written(capsys, tmp_path, data, command, extra):
    """_OUTPUT_FILES (what is checked and cleaned up) lists exactly the files each command
    writes; a second run needs --force; no temporary file is left."""
    out_dir = tmp_path / "out"
    argv = [command, "--data", data / "ok.npz", "--out", out_dir, "--quiet", *extra]
    code, _, err = _run(capsys, *argv)
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == sorted(cli._OUTPUT_FILES[command])
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, out, err, "--force")
    if command == "search":
        before = (out_dir / "search.csv").stat().st_mtime_ns
        code, _, err = _run(capsys, *argv, "--force")
        assert code == 0, err
        assert sorted(os.listdir(out_dir)) == sorted(cli._OUTPUT_FILES[command])
        assert (out_dir / "search.csv").stat().st_mtime_ns >= before


# --------------------------------------------------------------------------------------------
# 5. outputs that cannot be written: refused before the work
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where, fragment", [
    ("{file}/sub", "is a file, not a folder"),
    ("{file}", "is a file, not a folder"),
    ("/proc/rif-no-such-dir/out", "cannot create --out folder"),
    ("/proc/self/rif-out", "cannot create --out folder"),
])
def test_unwritable_out_is_refused_before_the_work(capsys, tmp_path, data, monkeypatch, where,
                                                   fragment):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x\n")
    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    before = tree_snapshot(tmp_path)
    code, out, err = _run(capsys, "experiment", "--data", data / "ok.npz",
                          "--out", where.format(file=blocker))
    _assert_one_line_error(code, out, err, fragment)
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize("where, fragment", [
    ("{file}/r.json", "folder {file} does not exist"),
    ("{tmp}", "is a folder"),
    ("/proc/version", "already exists"),
])
def test_unwritable_json_is_refused_before_the_work(capsys, tmp_path, data, monkeypatch, where,
                                                    fragment):
    blocker = tmp_path / "plain.txt"
    blocker.write_text("x\n")
    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    target = where.format(file=blocker, tmp=tmp_path)
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--json", target)
    _assert_one_line_error(code, out, err, "--json", fragment.format(file=blocker))


def test_json_in_a_folder_that_cannot_be_written(capsys, data, monkeypatch):
    """/proc refuses new files even to root (where a chmod-based test would not)."""
    monkeypatch.setattr(cli, "_prepare", lambda args: pytest.fail("work started"))
    code, out, err = _run(capsys, "--data", data / "ok.npz", "--json", "/proc/version",
                          "--force")
    _assert_one_line_error(code, out, err, "cannot write --json file /proc/version")


# --------------------------------------------------------------------------------------------
# 4 and 6. failures and Ctrl-C while writing: atomic files, created files removed
# --------------------------------------------------------------------------------------------


def _fail_in_figure1(exc):
    """plots.figure1 that writes its PNG, then fails (as a full disk would) before the PDF."""
    real = plots.figure1

    def figure1(rows, stem, **kwargs):
        real(rows, stem, **kwargs)
        os.unlink(str(stem) + ".pdf")
        raise exc

    return figure1


_EXPERIMENT = ["--sizes", "2", "--strategies", "random", "--metrics", "test_loss", "--quiet"]


@pytest.mark.parametrize("exc, code_expected, message", [
    (OSError(errno.ENOSPC, "No space left on device", "figure1.pdf"), 2,
     "rif: error: figure1.pdf: No space left on device\n"),
    (KeyboardInterrupt(), 130, "rif: interrupted\n"),
])
def test_failure_while_writing_removes_what_the_run_created(capsys, tmp_path, data, monkeypatch,
                                                            exc, code_expected, message):
    monkeypatch.setattr(plots, "figure1", _fail_in_figure1(exc))
    # a new folder: removed entirely, with its new parent
    new = tmp_path / "new" / "out"
    code, out, err = _run(capsys, "experiment", "--data", data / "ok.npz", "--out", new,
                          *_EXPERIMENT)
    assert (code, out, err) == (code_expected, "", message)
    assert not (tmp_path / "new").exists()
    # an existing folder (--force): the files it held stay as they were, the new ones go
    old = tmp_path / "old"
    old.mkdir()
    (old / "notes.txt").write_text("mine\n")
    (old / "report.md").write_text("earlier report\n")
    code, out, err = _run(capsys, "experiment", "--data", data / "ok.npz", "--out", old,
                          "--force", *_EXPERIMENT)
    assert (code, out, err) == (code_expected, "", message)
    assert sorted(os.listdir(old)) == ["notes.txt", "report.md"]
    assert (old / "report.md").read_text() == "earlier report\n"


def test_atomic_target_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with _output.atomic_target(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name != target.name
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["t.txt"]
    _output.write_text(target, "new\n")
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["t.txt"]
    # the usual permissions (umask), not mkstemp's 0600
    (tmp_path / "plain.txt").write_text("x")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(
        (tmp_path / "plain.txt").stat().st_mode)


def test_atomic_target_names_the_target_in_errors(tmp_path):
    with pytest.raises(OSError) as info:
        with _output.atomic_target(tmp_path / "t.txt"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.filename == str(tmp_path / "t.txt") and info.value.errno == errno.ENOSPC
    with pytest.raises(FileNotFoundError) as info:
        _output.write_text(tmp_path / "missing" / "t.txt", "x")
    assert info.value.filename == str(tmp_path / "missing" / "t.txt")
    assert os.listdir(tmp_path) == []


def _first_line_or_kill(proc, seconds, prefix="data "):
    """The child's first stdout line starting with `prefix` (an editable install's rebuild
    notice may come first), or "" at the end; kill it if none comes within `seconds`."""
    timer = threading.Timer(seconds, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
        while line and not line.startswith(prefix):
            line = proc.stdout.readline()
        return line
    finally:
        timer.cancel()


def test_ctrl_c_is_one_line_exit_130_and_removes_the_output(tmp_path):
    """SIGINT to `rif experiment` on the built-in data once it said what it loaded (the fit,
    a long native call, is then running): it stops at once, not after the call."""
    out_dir = tmp_path / "a" / "b"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rif_native.cli", "experiment", "--out", str(out_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    first = _first_line_or_kill(proc, 120)
    assert first.startswith("data "), first
    assert out_dir.is_dir()  # made before the work
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    # the native calls check for Ctrl-C every 50 ms; the bound leaves room for a loaded machine
    assert time.perf_counter() - sent < 5.0
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[-1] == "rif: interrupted"
    assert not any(line.startswith("rif:") for line in lines[:-1]), err
    assert not (tmp_path / "a").exists()
    assert "wrote" not in out


# --------------------------------------------------------------------------------------------
# a reader of stdout that goes away early (rif ... | head -1)
# --------------------------------------------------------------------------------------------


def _piped_to_head(argv, cwd):
    """Run `python -m rif_native.cli argv` with stdout a pipe whose reader closes after the
    first line (as `| head -1`): (that line, exit status, stderr)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # each line reaches the pipe when printed
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.Popen([sys.executable, "-m", "rif_native.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env)
    first = _first_line_or_kill(proc, 120)
    proc.stdout.close()  # the reader is gone: later writes meet a closed pipe
    try:
        err = proc.stderr.read()
        proc.wait(timeout=300)
    finally:
        proc.kill()
        proc.stderr.close()
    return first, proc.returncode, err


def _no_complaint(err):
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "rif: error" not in err and "Broken pipe" not in err, err


def test_closed_stdout_finishes_the_attribution_and_keeps_its_files(tmp_path):
    """`rif attribute --out pp --json pp.json | head -1` on the built-in data: the fit runs
    after the first line, so everything after it meets the closed pipe."""
    first, code, err = _piped_to_head(["attribute", "--out", "pp", "--json", "pp.json"],
                                      tmp_path)
    assert first.startswith("data ")
    _no_complaint(err)
    assert code == 141  # 128 + SIGPIPE, as a shell reports a command its pipe stopped
    payload = json.loads((tmp_path / "pp.json").read_text())
    n = payload["split"]["n_train"]
    assert len(payload["scores_rif"]) == n and len(payload["attribution"]["top_rif"]) == 10
    assert (tmp_path / "pp" / "attribute.json").read_text() == \
        (tmp_path / "pp.json").read_text()
    assert len((tmp_path / "pp" / "scores.csv").read_text().splitlines()) == n + 1
    assert (tmp_path / "pp" / "top.png").read_bytes().startswith(b"\x89PNG")


def test_closed_stdout_finishes_the_experiment_and_keeps_its_files(tmp_path, data):
    first, code, err = _piped_to_head(["experiment", "--data", data / "ok.npz", "--sizes", 2,
                                       "--out", "e"], tmp_path)
    assert first.startswith("data ")
    _no_complaint(err)
    assert code == 141
    for name in cli._OUTPUT_FILES["experiment"]:
        assert (tmp_path / "e" / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert {s["metric"] for s in summary} == {"test_prediction", "test_loss", "self_loss"}
    assert "(seed 0)" in json.loads((tmp_path / "e" / "config.json").read_text())["split"]


def test_pipe_guard_drops_output_once_the_reader_is_gone():
    from rif_native import _stdout

    class Closed(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    guard = _stdout.PipeGuard(Closed())
    assert guard.write("x\n") == 2 and guard.broken
    guard.flush()  # no error: the output goes nowhere now
    assert _stdout.EXIT_BROKEN_PIPE == 141
